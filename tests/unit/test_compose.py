"""The docker compose deployment, checked without a Docker engine: the file validates (Debian's
docker-compose 1.29 `config`), follows the deployment rules (least privilege included), and uses
exactly the settings' variable names; the Grafana provisioning matches the dashboards. The
services themselves run as local processes in tests/integration/test_compose_parity.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from crypto_cli import dashboards
from crypto_pipeline.settings import DEFAULTS, LOCAL_STACK_ONLY, REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CLUSTER_FILE = REPO_ROOT / "docker-compose.cluster.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
STATEFUL = {"kafka", "mongo", "influxdb", "grafana", "postgres"}
PROJECT_SERVICES = {"dagster-code", "dagster-webserver", "dagster-daemon", "producer", "api"}
# Read by `crypto-pipeline serve` only (the api service).
API_ONLY = {"API_HOST", "API_PORT", "API_TOKEN"}
ONE_SHOT = {"influxdb-tokens"}
# Read by Dagster itself (instance home, docker/dagster.yaml), not by the project's settings.
DAGSTER_ONLY = {"DAGSTER_HOME", "DAGSTER_POSTGRES_URL"}
# The token arrives as a file; docker/entrypoint.sh turns it into INFLUXDB_TOKEN.
TOKEN_FILE = "INFLUXDB_TOKEN_FILE"
# Secrets of the images (their admin users and the application's MongoDB user), given in .env and
# never defaulted.
IMAGE_SECRETS = {
    "MONGO_ROOT_USERNAME",
    "MONGO_ROOT_PASSWORD",
    "MONGO_APP_USERNAME",
    "MONGO_APP_PASSWORD",
    "INFLUXDB_ADMIN_USER",
    "INFLUXDB_ADMIN_PASSWORD",
    "INFLUXDB_ADMIN_TOKEN",
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
}
SECRET_KEY = re.compile(r"PASSWORD|TOKEN|SECRET")
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?P<rule>:?[-?][^}]*)?\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()]
    return {p[0]: p[1] for p in pairs if len(p) == 2 and not p[0].startswith("#")}


def filled_env_file(tmp_path: Path) -> Path:
    values = {key: value or f"secret-{key.lower()}-123" for key, value in env_example().items()}
    path = tmp_path / "filled.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def docker_compose_config(
    env_file: Path, *files: Path, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make test` installs Debian's package"
    chosen = [arg for path in files or (COMPOSE_FILE,) for arg in ("-f", str(path))]
    return subprocess.run(
        [binary, *chosen, "--env-file", str(env_file), "config", *(["--quiet"] if quiet else [])],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


def test_compose_file_validates_with_every_secret_given(tmp_path: Path) -> None:
    result = docker_compose_config(filled_env_file(tmp_path))
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_while_a_secret_is_missing() -> None:
    result = docker_compose_config(ENV_EXAMPLE)  # shipped with empty secrets
    assert result.returncode != 0
    assert "set MONGO_ROOT_PASSWORD in .env" in result.stderr


def test_every_image_is_pinned_and_every_service_restarts() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        restart = "on-failure" if name in ONE_SHOT else "unless-stopped"
        assert service.get("restart") == restart, name
        if name in PROJECT_SERVICES:
            assert image == "crypto-pipeline:local" and service["build"] == ".", name
        else:
            assert re.fullmatch(r"[a-z0-9/._-]+:\d+(\.\d+){1,2}", image), f"{name}: {image}"


def test_every_stateful_service_has_a_healthcheck_and_a_named_volume() -> None:
    spec = compose()
    named = set(spec["volumes"])
    for name in STATEFUL:
        service = spec["services"][name]
        assert service["healthcheck"]["test"], name
        mounted = {volume.split(":")[0] for volume in service["volumes"]}
        assert mounted & named, f"{name} keeps its data in no named volume"
    project_volumes = {v.split(":")[0] for v in spec["services"]["dagster-code"]["volumes"]}
    assert "spark-state" in project_volumes & named  # the Spark checkpoints


def test_dependencies_wait_for_healthy_services() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if dependency in ONE_SHOT:
                assert rule == {"condition": "service_completed_successfully"}, name
            elif dependency in STATEFUL or "healthcheck" in services[dependency]:
                assert rule == {"condition": "service_healthy"}, f"{name} -> {dependency}"


def test_only_loopback_ports_are_published() -> None:
    published = {}
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
            published[port.split(":")[1]] = name
    assert published == {
        "3000": "grafana",
        "3001": "dagster-webserver",
        "3002": "api",
        "9092": "kafka",
    }


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if SECRET_KEY.search(key) and not key.endswith("_FILE"):  # a path, not a secret
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", text), f"{name}.{key}={text}"
            credentials = re.search(r"//([^@/]+)@", text)
            if credentials:  # user:password@ in a URI: the password must be interpolated
                literal = INTERPOLATION.sub("", credentials.group(1))
                assert literal.partition(":")[2] == "", f"{name}.{key} has a literal password"
                assert ":?" in credentials.group(1), f"{name}.{key}"


def environment(name: str) -> dict[str, str]:
    return dict(compose()["services"][name].get("environment") or {})


def test_project_services_read_exactly_the_settings_they_need() -> None:
    # The code server runs the pipeline: every setting (the token as a file).
    settings_names = set(DEFAULTS) - LOCAL_STACK_ONLY - API_ONLY - {"INFLUXDB_TOKEN"} | {TOKEN_FILE}
    assert set(environment("dagster-code")) - DAGSTER_ONLY == settings_names
    # The API reads the aggregates, the topics and the heartbeats; InfluxDB only to ping it.
    api = {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "MONGO_URI", "MONGO_DATABASE"}
    api |= {"MONGO_COLLECTION", "INFLUXDB_URL", "STACK_DIR", *API_ONLY}
    assert set(environment("api")) == api
    assert "spark-state:/var/lib/crypto-pipeline:ro" in compose()["services"]["api"]["volumes"]
    # The webserver and the daemon talk to the code server over gRPC: Dagster's instance only.
    for name in ("dagster-webserver", "dagster-daemon"):
        assert set(environment(name)) == DAGSTER_ONLY, name
    # The producer replays and runs live feeds: brokers, topic, the candle rules' clock
    # tolerance and the exchanges' endpoints, nothing else.
    producer = {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "FUTURE_EVENT_TOLERANCE_S"}
    producer |= {"LIVE_WS_URL", "LIVE_REST_URL"}
    assert set(environment("producer")) == producer


def mounts(name: str) -> set[str]:
    return {v.split(":")[0] for v in compose()["services"][name].get("volumes", [])}


def test_the_pipeline_connects_to_mongodb_as_its_own_user_limited_to_its_database() -> None:
    uri = environment("dagster-code")["MONGO_URI"]
    assert uri.startswith("mongodb://${MONGO_APP_USERNAME:?")
    assert uri.endswith(
        "@mongo:27017/${MONGO_DATABASE:-crypto}?authSource=${MONGO_DATABASE:-crypto}"
    )
    assert "MONGO_ROOT" not in str(compose()["services"]["dagster-code"])
    mongo = compose()["services"]["mongo"]
    assert "./docker/mongo/init:/docker-entrypoint-initdb.d:ro" in mongo["volumes"]
    script = (REPO_ROOT / "docker" / "mongo" / "init" / "create-app-user.js").read_text()
    for name in ("MONGO_DATABASE", "MONGO_APP_USERNAME", "MONGO_APP_PASSWORD"):
        assert f"process.env.{name}" in script
        assert name in mongo["environment"]
    assert 'roles: [{ role: "readWrite", db: database }]' in script


def test_influxdb_tokens_are_scoped_and_each_reaches_only_its_user() -> None:
    services = compose()["services"]
    admin_token = "INFLUXDB_ADMIN_TOKEN"
    holders = {name for name, service in services.items() if admin_token in str(service)}
    assert holders == {"influxdb", "influxdb-tokens"}
    app_token, grafana_token = "influxdb-app-token", "influxdb-grafana-token"
    assert {n for n in services if app_token in mounts(n)} == {"dagster-code", "influxdb-tokens"}
    assert {n for n in services if grafana_token in mounts(n)} == {"grafana", "influxdb-tokens"}
    assert f"{app_token}:/run/secrets/influxdb:ro" in services["dagster-code"]["volumes"]
    assert environment("dagster-code")[TOKEN_FILE] == "/run/secrets/influxdb/app.token"
    script = (REPO_ROOT / "docker" / "influxdb" / "create-tokens.sh").read_text()
    assert '--read-bucket "$bucket_id" --write-bucket "$bucket_id"' in script
    assert 'grafana-read-only /tokens/grafana/grafana.token 472 --read-bucket "$bucket_id"\n' in (
        script
    )
    entrypoint = (REPO_ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tini", "--", "/opt/crypto-pipeline/docker/entrypoint.sh"]' in entrypoint


def test_every_variable_compose_reads_is_a_setting_or_an_image_secret_and_in_env_example() -> None:
    referenced = {m["name"] for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text())}
    assert referenced - set(DEFAULTS) == IMAGE_SECRETS
    assert set(env_example()) == referenced
    required = {m["name"] for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text()) if m["rule"]}
    for secret in IMAGE_SECRETS:
        assert secret in required
        if secret.endswith(("PASSWORD", "TOKEN")):
            assert env_example()[secret] == "", f".env.example must not ship a value for {secret}"


def test_grafana_datasource_is_the_dashboards_and_reads_the_settings() -> None:
    provisioning = REPO_ROOT / "docker" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "influxdb.yaml").read_text())
    (source,) = datasource["datasources"]
    assert source["uid"] == dashboards.DATASOURCE.uid
    assert source["type"] == dashboards.DATASOURCE.type_val
    assert source["jsonData"]["version"] == "Flux"
    text = (provisioning / "datasources" / "influxdb.yaml").read_text()
    assert set(re.findall(r"\$\{([A-Z_]+)\}", text)) <= set(DEFAULTS)
    grafana_env = compose()["services"]["grafana"]["environment"]
    assert {"INFLUXDB_URL", "INFLUXDB_ORG", "INFLUXDB_BUCKET"} <= set(grafana_env)
    assert source["secureJsonData"]["token"] == "$__file{/run/secrets/influxdb/grafana.token}"
    provider = yaml.safe_load((provisioning / "dashboards" / "crypto-pipeline.yaml").read_text())[
        "providers"
    ][0]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./docker/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_dashboard_constants_match_the_compose_defaults() -> None:
    assert env_example()["INFLUXDB_BUCKET"] == dashboards.DEFAULT_BUCKET
    assert env_example()["INFLUXDB_MEASUREMENT"] == dashboards.DEFAULT_MEASUREMENT


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_committed_dashboards_are_what_the_code_builds(name: str) -> None:
    committed = (dashboards.DASHBOARD_DIR / name).read_text()
    assert committed == dashboards.render(dashboards.DASHBOARDS[name]()), (
        f"{name} is stale: run `crypto-pipeline dashboards`"
    )


# The cluster deployment: docker-compose.cluster.yml on top of the main file.
KAFKA_NODES = ("kafka", "kafka-2", "kafka-3")
SPARK_WORKERS = ("spark-worker-1", "spark-worker-2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The services of both files as compose merges and resolves them."""
    env_file = filled_env_file(tmp_path_factory.mktemp("cluster"))
    result = docker_compose_config(env_file, COMPOSE_FILE, CLUSTER_FILE, quiet=False)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


def pinned_version(package: str) -> str:
    text = (REPO_ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{package}==([^"]+)"', text)
    assert match, package
    return match.group(1)


def test_cluster_services_are_pinned_healthy_and_restart(cluster: dict[str, Any]) -> None:
    added = set(cluster) - set(compose()["services"])
    assert added == {"kafka-2", "kafka-3", "spark-master", *SPARK_WORKERS}
    for name in added:
        service = cluster[name]
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
    # Spark's own image at the pinned pyspark's version: the driver's jars and the cluster's.
    for name in ("spark-master", *SPARK_WORKERS):
        assert cluster[name]["image"] == f"apache/spark:{pinned_version('pyspark')}", name
    for name in KAFKA_NODES:
        assert cluster[name]["image"] == compose()["services"]["kafka"]["image"], name
    for name, service in cluster.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if dependency not in ONE_SHOT:
                assert rule == {"condition": "service_healthy"}, f"{name} -> {dependency}"


def test_cluster_kafka_is_one_replicated_quorum(cluster: dict[str, Any]) -> None:
    nodes = {name: cluster[name]["environment"] for name in KAFKA_NODES}
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in nodes.values()) == [1, 2, 3]
    voters = {f"{env['KAFKA_NODE_ID']}@{name}:9093" for name, env in nodes.items()}
    published: dict[str, str] = {}
    for name, env in nodes.items():
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["CLUSTER_ID"] == nodes["kafka"]["CLUSTER_ID"], name
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3, name
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2, name
        advertised = dict(
            listener.split("://") for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        )
        assert advertised["INTERNAL"] == f"{name}:19092", name
        # The host reaches each node on the port it advertises, published on loopback only.
        external_port = advertised["EXTERNAL"].removeprefix("127.0.0.1:")
        assert f"127.0.0.1:{external_port}:{external_port}/tcp" in cluster[name]["ports"], name
        published[name] = external_port
        # Volumes of its own: a single node's data cannot join a 3-node quorum.
        (volume,) = cluster[name]["volumes"]
        assert volume.startswith(f"kafka-{env['KAFKA_NODE_ID']}-data:"), volume
    assert len(set(published.values())) == 3
    every_node = {f"{name}:19092" for name in KAFKA_NODES}
    for client in ("dagster-code", "producer"):
        servers = cluster[client]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
        assert set(servers.split(",")) == every_node, client


def test_cluster_runs_submit_to_the_spark_master_and_executors_reach_the_driver(
    cluster: dict[str, Any],
) -> None:
    code = cluster["dagster-code"]
    master_command = cluster["spark-master"]["command"]
    master = f"spark://spark-master:{master_command[master_command.index('--port') + 1]}"
    assert code["environment"]["SPARK_MASTER"] == master
    # The driver runs in dagster-code (client mode): the executors reach it by that name.
    assert code["environment"]["SPARK_DRIVER_HOST"] == "dagster-code"
    assert environment("dagster-code")["SPARK_DRIVER_HOST"] == "dagster-code"
    for name in SPARK_WORKERS:
        command = cluster[name]["command"]
        assert command[1] == "org.apache.spark.deploy.worker.Worker", name
        assert command[-1] == master, name
        assert command[command.index("--host") + 1] == name, name
        assert cluster[name]["healthcheck"]["test"][-1] == name  # registered under its name
        assert set(code["depends_on"]) >= {name, "kafka-2", "kafka-3"}


def test_cluster_publishes_only_loopback_ports(cluster: dict[str, Any]) -> None:
    published = {
        port.split(":")[1]: name
        for name, service in cluster.items()
        for port in service.get("ports", [])
        if port.startswith("127.0.0.1:")
    }
    every = [port for service in cluster.values() for port in service.get("ports", [])]
    assert len(published) == len(every), every
    assert published == {
        "3000": "grafana",
        "3001": "dagster-webserver",
        "3002": "api",
        "8080": "spark-master",
        "9092": "kafka",
        "9094": "kafka-2",
        "9096": "kafka-3",
    }


def test_cluster_file_reads_no_variable_and_holds_no_secret() -> None:
    text = CLUSTER_FILE.read_text()
    assert INTERPOLATION.search(text) is None
    assert SECRET_KEY.search(text) is None
