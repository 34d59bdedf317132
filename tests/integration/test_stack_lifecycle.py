"""`crypto-pipeline stack` as a user runs it: a second, private stack on free ports, its
MongoDB-compatible server requiring the user and password of MONGO_URI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from influxdb_client import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from kafka import KafkaProducer
from pymongo.errors import OperationFailure

from crypto_pipeline.clients import influx_client, mongo_client
from crypto_pipeline.settings import Settings
from tests.integration.conftest import free_port
from tests.integration.kafka_helpers import consume_all
from tests.integration.test_stack_clients import create_topic


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crypto_cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


PASSWORD = "s3cret-Pa55"


def mongo_uri(port: int, password: str = PASSWORD) -> str:
    return f"mongodb://pipeline:{password}@127.0.0.1:{port}/?authSource=admin"


@pytest.fixture
def private_env(tmp_path: Path, local_stack: Settings) -> Iterator[dict[str, str]]:
    """Settings for a second stack in its own state directory; it shares only the build cache."""
    env = {
        "STACK_DIR": str(tmp_path / "stack"),
        "STACK_CACHE_DIR": str(local_stack.cache_dir),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "STACK_KAFKA_CONTROLLER_PORT": str(free_port()),
        "MONGO_URI": mongo_uri(free_port()),
        "INFLUXDB_URL": f"http://127.0.0.1:{free_port()}",
        "STACK_INFLUXDB_RPC_PORT": str(free_port()),
    }
    yield env
    run_cli(env, "stack", "down")


def private_settings(env: dict[str, str]) -> Settings:
    return Settings.from_env({**os.environ, **env})


def command_lines(marker: str) -> list[str]:
    """The command lines of live processes that mention `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command:
            found.append(command)
    return found


def test_up_twice_then_down_up_keeps_data(private_env: dict[str, str], unique_name: str) -> None:
    settings = private_settings(private_env)
    first = run_cli(private_env, "stack", "up")
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_cli(private_env, "stack", "up")
    assert second.returncode == 0, second.stderr
    for name in ("kafka", "ferretdb", "influxdb"):
        assert f"{name} already running" in second.stdout
    status = run_cli(private_env, "stack", "status")
    assert status.returncode == 0
    assert status.stdout.count("healthy  pid") == 3
    for output in (first, second, status):
        assert PASSWORD not in output.stdout + output.stderr
    # The password reaches FerretDB through its environment, never its command line.
    ferretdb = command_lines(private_env["STACK_DIR"] + "/data/ferretdb")
    assert len(ferretdb) == 1
    assert "-username pipeline" in ferretdb[0]
    assert PASSWORD not in ferretdb[0]

    # Authentication is required: no user, or a wrong password, is refused.
    for uri in (f"mongodb://127.0.0.1:{settings.mongo.port}/", mongo_uri(settings.mongo.port, "x")):
        with mongo_client(uri) as client, pytest.raises(OperationFailure):
            client["kept"]["docs"].insert_one({"_id": "refused"})

    create_topic(settings, unique_name, partitions=1)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    producer.send(unique_name, key=b"k", value=b"kept").get(timeout=10)
    producer.close()
    with mongo_client(settings.mongo.uri) as client:
        client["kept"]["docs"].insert_one({"_id": unique_name})
    when = datetime(2025, 2, 1, tzinfo=UTC)
    with influx_client(settings.influx) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=settings.influx.bucket, record=Point("kept").field("v", 7.5).time(when)
        )

    down = run_cli(private_env, "stack", "down")
    assert down.returncode == 0
    assert run_cli(private_env, "stack", "status").returncode == 1
    for port in (settings.kafka_port, settings.mongo.port, settings.influxdb_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"

    again = run_cli(private_env, "stack", "up")
    assert again.returncode == 0, again.stdout + again.stderr

    records = consume_all(settings, unique_name, expected=1)
    assert [(r.key, r.value) for r in records] == [(b"k", b"kept")]
    with mongo_client(settings.mongo.uri) as client:
        assert client["kept"]["docs"].find_one({"_id": unique_name}) == {"_id": unique_name}
    with influx_client(settings.influx) as client:
        tables = client.query_api().query(
            f'from(bucket: "{settings.influx.bucket}") |> range(start: 2025-01-01T00:00:00Z)'
            ' |> filter(fn: (r) => r._measurement == "kept")'
        )
    assert [(r.get_time(), r.get_value()) for t in tables for r in t] == [(when, 7.5)]


def test_port_taken_by_a_foreign_process_is_a_clear_error(private_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**private_env, "MONGO_URI": mongo_uri(port)}
        result = run_cli(env, "stack", "up")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"crypto-pipeline: error: ferretdb: port {port} on 127.0.0.1 is already in use by another"
        " process (not started by this stack); stop it or change MONGO_URI"
    ]
    assert not (Path(private_env["STACK_DIR"]) / "run").exists()


def test_missing_java_names_what_to_install(private_env: dict[str, str]) -> None:
    result = run_cli({**private_env, "PATH": "/nonexistent"}, "stack", "up")

    assert result.returncode == 1
    assert "'java' not found on PATH: install a JDK 17 or newer" in result.stderr
    assert "Traceback" not in result.stderr
