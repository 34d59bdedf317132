"""The docker compose deployment without Docker: its services as local processes, each with the
environment and command compose gives it (`docker-compose config`), run by
tests/integration/test_compose_parity.py as

    unshare --net --mount --pid --fork --mount-proc --kill-child \
        python -m tests.integration.compose_parity <workdir>

In those namespaces the loopback is our own (compose's ports are free), the service host names
resolve to 127.0.0.1 (a private /etc/hosts), and every process ends with this one. Container paths
are mapped to local ones; a path this mapping does not know fails the run. The result is written to
<workdir>/result.json for the test to assert on."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

import local_stack as stack
from crypto_assets.aggregation.ohlcv_sinks import REPLAY_RUN_TAG
from crypto_cli.dagster_services import DagsterApi
from crypto_pipeline.clients import mongo_client
from crypto_pipeline.console import say
from crypto_pipeline.settings import REPO_ROOT, Settings

SERVICE_HOSTS = ("kafka", "mongo", "influxdb", "postgres", "dagster-code", "grafana")
DAGSTER_SERVICES = ("dagster-code", "dagster-webserver", "dagster-daemon")
# What the image's environment adds to every command (Dockerfile ENV), besides compose's.
IMAGE_ENV = {"PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"}
IMAGE_PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"


def env_file(workdir: Path) -> Path:
    """.env.example with every empty secret filled in (hex, as its comment asks)."""
    lines = []
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#") and not value:
            value = secrets.token_hex(16)
        lines.append(f"{name}{sep}{value}")
    path = workdir / "compose.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_services(workdir: Path) -> dict[str, Any]:
    """The services as compose resolves them: every variable interpolated."""
    resolved = subprocess.run(
        [
            *["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml")],
            *["--env-file", str(env_file(workdir)), "config"],
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    services: dict[str, Any] = yaml.safe_load(resolved.stdout)["services"]
    return services


class Paths:
    """Container paths -> local paths, longest prefix first."""

    def __init__(self, workdir: Path, cache_dir: Path) -> None:
        self.mapping = {
            "/opt/crypto-pipeline/cache": cache_dir,
            "/opt/crypto-pipeline/data/incoming": workdir / "incoming",
            "/opt/crypto-pipeline": REPO_ROOT,
            "/var/lib/crypto-pipeline": workdir / "state",
            "/opt/dagster/home": workdir / "dagster_home",
            "/run/secrets/influxdb": workdir / "influxdb-app-token",
        }

    def local(self, value: str) -> str:
        for container, local in self.mapping.items():
            if value == container or value.startswith(container + "/"):
                return str(local) + value[len(container) :]
        if value.startswith("/"):
            raise SystemExit(f"no local path for the container path {value}")
        return value


def start_network(workdir: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hosts = workdir / "hosts"
    # As in a container: the services by name, and this host's own name (Java looks it up).
    names = ["localhost", socket.gethostname(), *SERVICE_HOSTS]
    hosts.write_text(f"127.0.0.1 {' '.join(names)}\n")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)


@contextmanager
def postgres(environment: dict[str, str]) -> Iterator[None]:
    """Debian's PostgreSQL server as the postgres image would run it: POSTGRES_USER owns
    POSTGRES_DB, password authentication on 127.0.0.1:5432."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not binaries:
        raise SystemExit("PostgreSQL server binaries are missing: `make test` installs them")
    bin_dir = binaries[-1]
    owner = pwd.getpwnam("postgres")
    data = Path(tempfile.mkdtemp(prefix="crypto-parity-pg-"))
    os.chown(data, owner.pw_uid, owner.pw_gid)

    def as_postgres() -> None:
        os.setgid(owner.pw_gid)
        os.setuid(owner.pw_uid)

    password_file = data / "password"
    password_file.write_text(environment["POSTGRES_PASSWORD"])
    os.chown(password_file, owner.pw_uid, owner.pw_gid)
    user = environment["POSTGRES_USER"]
    subprocess.run(
        [
            *[str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", user],
            *["--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", str(password_file)],
        ],
        preexec_fn=as_postgres,
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [
            *[str(bin_dir / "postgres"), "-D", str(data / "db"), "-k", str(data)],
            *["-c", "listen_addresses=127.0.0.1", "-p", "5432"],
        ],
        preexec_fn=as_postgres,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", "5432"], capture_output=True
        ).returncode:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("PostgreSQL did not start")
            time.sleep(0.5)
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", str(data), "-U", user, environment["POSTGRES_DB"]],
            preexec_fn=as_postgres,
            check=True,
            capture_output=True,
        )
        yield
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def datastores(services: dict[str, Any], workdir: Path, cache_dir: Path) -> Iterator[None]:
    """Kafka on compose's internal listener, FerretDB with the mongo image's root user and the
    init script's application user, InfluxDB, PostgreSQL."""
    mongo = services["mongo"]["environment"]
    root = f"{mongo['MONGO_INITDB_ROOT_USERNAME']}:{mongo['MONGO_INITDB_ROOT_PASSWORD']}"
    settings = Settings.from_env(
        {
            "STACK_DIR": str(workdir / "stack"),
            "STACK_CACHE_DIR": str(cache_dir),
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
            "MONGO_URI": f"mongodb://{root}@127.0.0.1:27017/?authSource=admin",
            "INFLUXDB_URL": "http://127.0.0.1:8086",
            "INFLUXDB_BUCKET": services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"],
        }
    )
    stack.up(settings)
    try:
        # What docker/mongo/init/create-app-user.js does (FerretDB does not implement roles).
        with mongo_client(settings.mongo.uri) as client:
            client[mongo["MONGO_DATABASE"]].command(
                "createUser", mongo["MONGO_APP_USERNAME"], pwd=mongo["MONGO_APP_PASSWORD"], roles=[]
            )
        with postgres(services["postgres"]["environment"]):
            yield
    finally:
        stack.down(settings)


def prepare_image_files(paths: Paths) -> None:
    """What the image build and the influxdb-tokens service leave on disk."""
    home = Path(paths.local("/opt/dagster/home"))
    home.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "docker" / "dagster.yaml", home / "dagster.yaml")
    for container in ("/var/lib/crypto-pipeline", "/opt/crypto-pipeline/data/incoming"):
        Path(paths.local(container)).mkdir(parents=True)
    token = Path(paths.local("/run/secrets/influxdb/app.token"))
    token.parent.mkdir(parents=True)
    token.write_text(secrets.token_hex(16))  # InfluxDB 1.8 without auth accepts any token


def start_dagster(
    services: dict[str, Any], paths: Paths, workdir: Path, processes: ExitStack
) -> None:
    """Each Dagster service through the image's entrypoint, in compose's dependency order: the
    webserver and the daemon once the code server passes compose's health check."""
    for name in DAGSTER_SERVICES:
        service = services[name]
        environment = {key: paths.local(str(v)) for key, v in service["environment"].items()}
        environment |= IMAGE_ENV | {"PATH": IMAGE_PATH}
        command = [paths.local(part) for part in service["command"]]
        log = (workdir / f"{name}.log").open("wb")
        processes.callback(log.close)
        process = subprocess.Popen(
            ["sh", str(REPO_ROOT / "docker" / "entrypoint.sh"), *command],
            env=environment,
            cwd=REPO_ROOT,  # the image's WORKDIR
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.callback(stop, process)
        if "healthcheck" in service:
            wait_healthy(name, service["healthcheck"]["test"], process)


def wait_healthy(name: str, test: list[str], process: subprocess.Popen[bytes]) -> None:
    """Compose's health check command (["CMD", ...]) until it passes."""
    deadline = time.monotonic() + 180
    command = [part for part in test if part != "CMD"]
    while subprocess.run(command, env={"PATH": IMAGE_PATH}, capture_output=True).returncode:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{name} never became healthy")
        time.sleep(1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_pipeline(api: DagsterApi) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while True:
        try:
            if api.location_loaded():
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the webserver never loaded the code location over gRPC")
        time.sleep(2)
    say("[parity] replay_job through GraphQL")
    replay_id = api.launch("replay_job")
    replay_status = api.wait_for_run(replay_id, 600)
    say(f"[parity] replay_job {replay_status}; waiting for the sensor's ohlcv_job")
    triggered: list[dict[str, str]] = []
    deadline = time.monotonic() + 240
    while not triggered and time.monotonic() < deadline:
        triggered = api.runs_tagged(REPLAY_RUN_TAG, replay_id)
        time.sleep(2)
    ohlcv_status = api.wait_for_run(triggered[0]["runId"], 900) if triggered else "NOT STARTED"
    failures = [run_id for run_id, status in ((replay_id, replay_status),) if status != "SUCCESS"]
    if triggered and ohlcv_status != "SUCCESS":
        failures.append(triggered[0]["runId"])
    return {
        "errors": [message for run_id in failures for message in error_messages(api, run_id)],
        "replay_job": replay_status,
        "ohlcv_job": ohlcv_status,
        "triggered_jobs": [run["jobName"] for run in triggered],
        "checks": {f"{a}/{c}": status for (a, c), status in api.check_statuses().items()},
    }


def error_messages(api: DagsterApi, run_id: str) -> list[str]:
    """What a failed run's step and run failure events say (for the test's message)."""
    data = api.query(
        """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection {
             events { __typename ... on ExecutionStepFailureEvent {
                        error { message cause { message } } }
                      ... on RunFailureEvent { message } } } } } }""",
        id=run_id,
    )
    events = data["runOrError"]["eventConnection"]["events"]
    messages = []
    for event in events:
        error = event.get("error") or {}
        cause = (error.get("cause") or {}).get("message", "")
        if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent"):
            messages.append(" caused by ".join(filter(None, [error.get("message"), cause])))
    return messages


def main(workdir: Path) -> None:
    cache_dir = Settings.from_env().cache_dir
    services = compose_services(workdir)
    paths = Paths(workdir, cache_dir)
    start_network(workdir)
    prepare_image_files(paths)
    with datastores(services, workdir, cache_dir), ExitStack() as processes:
        start_dagster(services, paths, workdir, processes)
        result = run_pipeline(DagsterApi("http://127.0.0.1:3001"))
        app = services["dagster-code"]["environment"]
        with mongo_client(app["MONGO_URI"]) as client:  # as the pipeline connects: mongo:27017
            collection = client[app["MONGO_DATABASE"]][app["MONGO_COLLECTION"]]
            result["mongo_documents"] = collection.count_documents({})
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
    say(f"[parity] {json.dumps(result)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
