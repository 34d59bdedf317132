"""Processes that hang, linger as zombies or whose PID was recycled, with real processes: `stack
down` returns within its deadline and kills only its own; a stale heartbeat wedges nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import local_stack as stack
from crypto_assets.aggregation.launcher import refuse_if_streaming
from crypto_assets.aggregation.streaming import streaming_job, streaming_restart_sensor
from crypto_assets.ingestion.live_feed import EXCHANGE_TAG, live_feed_job, live_feed_restart_sensor
from crypto_assets.resources import KafkaResource, LiveFeedResource, SparkResource
from crypto_assets.supervision import RESTARTS
from crypto_pipeline.processes import ProcessRecord, identity_of
from crypto_pipeline.settings import Settings
from spark_jobs.interface.heartbeat import running_stream_pid, stream_state

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
)
# Forks a child that exits after 1 s and is never reaped: a zombie that is not our child.
LEAVES_A_ZOMBIE = (
    "import os, sys, time\n"
    "child = os.fork()\n"
    "if child == 0: time.sleep(1); os._exit(0)\n"
    "print(child, flush=True); time.sleep(600)"
)

# Listens on a port, then ends its main thread while another thread runs: the main thread is a
# zombie, and the process (and its socket) lives on, as a killed JVM's does while its threads exit.
MAIN_THREAD_EXITS = (
    "import ctypes, socket, threading, time\n"
    "server = socket.create_server(('127.0.0.1', 0))\n"
    "print(server.getsockname()[1], flush=True)\n"
    "threading.Thread(target=time.sleep, args=(600,)).start()\n"
    "ctypes.CDLL(None).pthread_exit(None)"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"STACK_DIR": str(tmp_path / "stack")})


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def spawn(processes: list[subprocess.Popen[str]], code: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    processes.append(process)
    time.sleep(0.5)  # the interpreter has installed its signal handler
    return process


def write_pid_file(settings: Settings, service: str, record: ProcessRecord) -> Path:
    path = settings.stack_dir / "run" / f"{service}.pid"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{record.pid} {record.identity}\n")
    return path


def test_stack_down_kills_a_hung_service_within_its_deadline(
    settings: Settings, spawned: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "STOP_TIMEOUT_S", 2.0)
    hung = spawn(spawned, IGNORES_SIGTERM)
    record = ProcessRecord.of(hung.pid)
    assert record is not None
    pid_file = write_pid_file(settings, "kafka", record)

    started = time.monotonic()
    stack.down(settings, only={"kafka"})

    took_s = time.monotonic() - started
    assert 2.0 <= took_s < 2.0 + stack.KILL_TIMEOUT_S  # SIGTERM ignored, SIGKILL ended it
    assert identity_of(hung.pid) is None
    assert not pid_file.exists()


def test_stack_down_takes_a_zombie_for_gone_and_spares_a_recycled_pid(
    settings: Settings, spawned: list[subprocess.Popen[str]]
) -> None:
    parent = spawn(spawned, LEAVES_A_ZOMBIE)
    assert parent.stdout is not None
    zombie = int(parent.stdout.readline())
    record = ProcessRecord.of(zombie)  # the service's PID file, written while it ran
    assert record is not None
    deadline = time.monotonic() + 5
    while Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.05)
    assert identity_of(zombie) is None
    write_pid_file(settings, "kafka", record)
    # A live process now holds the pid a stopped service had: same pid, another identity.
    stranger = spawn(spawned, "import time; time.sleep(600)")
    write_pid_file(settings, "influxdb", ProcessRecord(stranger.pid, "another-boot:1"))

    started = time.monotonic()
    stack.down(settings, only={"kafka", "influxdb"})

    assert time.monotonic() - started < 2
    assert stranger.poll() is None, "a process that is not ours was killed"
    assert parent.poll() is None


def test_a_killed_service_is_gone_only_once_its_last_thread_has_closed_its_sockets(
    settings: Settings, spawned: list[subprocess.Popen[str]]
) -> None:
    process = spawn(spawned, MAIN_THREAD_EXITS)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    time.sleep(0.5)  # the main thread has exited
    assert Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    record = ProcessRecord.of(process.pid)
    assert record is not None and record.is_alive()
    write_pid_file(settings, "kafka", record)

    stack.kill(settings, "kafka")

    assert not record.is_alive()
    with socket.socket() as probe:  # `stack up` may start the service on its port again
        probe.bind(("127.0.0.1", port))


def test_a_stale_heartbeat_with_a_recycled_pid_wedges_nothing(tmp_path: Path) -> None:
    """After a reboot or container restart the heartbeat's pid may belong to a live process that
    is not the job: no Spark job is refused, the replay sensor does not skip, the stream counts
    as crashed."""
    spark = SparkResource(
        master="local[1]", driver_host="127.0.0.1", connectors_dir="/jars", state_dir=str(tmp_path)
    )
    status_file = spark.status_file("t")
    status_file.parent.mkdir(parents=True)
    status = {"pid": os.getpid(), "pid_identity": "an-earlier-boot:12345", "watermark_ms": 0}
    status_file.write_text(json.dumps(status))

    assert running_stream_pid(status_file) is None
    assert stream_state(status) == "crashed"
    refuse_if_streaming(spark, "t")  # does not raise
    # The replay sensor skips only for a running stream (running_stream_pid): it replays.
    with dg.DagsterInstance.ephemeral() as instance:
        failed = instance.create_run_for_job(streaming_job, status=dg.DagsterRunStatus.FAILURE)
        request = restart_tick(instance, tmp_path)
    assert isinstance(request, dg.RunRequest) and request.run_key == f"restart:{failed.run_id}"


def restart_tick(instance: dg.DagsterInstance, tmp_path: Path) -> dg.RunRequest | dg.SkipReason:
    spark = SparkResource(
        master="local[1]", driver_host="127.0.0.1", connectors_dir="/jars", state_dir=str(tmp_path)
    )
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:1", topic="t")
    context = dg.build_sensor_context(instance=instance, resources={"kafka": kafka, "spark": spark})
    result = streaming_restart_sensor(context)
    assert isinstance(result, dg.RunRequest | dg.SkipReason)
    return result


def test_the_restart_sensor_restarts_a_failed_stream_a_few_times_then_gives_up(
    tmp_path: Path,
) -> None:
    config = {"ops": {"run_streaming_ohlcv": {"config": {"trigger": "2 seconds"}}}}
    failure = dg.DagsterRunStatus.FAILURE
    with dg.DagsterInstance.ephemeral() as instance:
        assert isinstance(restart_tick(instance, tmp_path), dg.SkipReason)  # never ran
        for attempt in range(1, RESTARTS + 1):
            failed = instance.create_run_for_job(
                streaming_job, run_config=config, status=failure, tags={"team": "quant"}
            )
            request = restart_tick(instance, tmp_path)
            if attempt < RESTARTS:
                assert isinstance(request, dg.RunRequest)
                assert (request.run_key, request.run_config) == (f"restart:{failed.run_id}", config)
                assert request.tags["team"] == "quant"
            else:
                assert isinstance(request, dg.SkipReason)  # failed every time: an alert, no loop
        instance.create_run_for_job(
            streaming_job, run_config=config, status=dg.DagsterRunStatus.CANCELED
        )
        assert isinstance(restart_tick(instance, tmp_path), dg.SkipReason)  # stopped on purpose


def test_a_failed_live_feed_is_restarted_per_exchange_and_a_stopped_one_is_not(
    tmp_path: Path,
) -> None:
    """Each exchange's runs (by their tag) under the streaming job's rule: the failed OKX feed is
    restarted with its config, the Binance feed stopped from the UI is not."""
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:1", topic="t")
    live = LiveFeedResource(state_dir=str(tmp_path))

    def config(exchange: str) -> dict[str, Any]:
        return {"ops": {"run_live_feed": {"config": {"exchange": exchange}}}}

    with dg.DagsterInstance.ephemeral() as instance:
        failed = instance.create_run_for_job(
            live_feed_job,
            run_config=config("okx"),
            status=dg.DagsterRunStatus.FAILURE,
            tags={EXCHANGE_TAG: "okx"},
        )
        instance.create_run_for_job(
            live_feed_job,
            run_config=config("binance"),
            status=dg.DagsterRunStatus.CANCELED,
            tags={EXCHANGE_TAG: "binance"},
        )
        context = dg.build_sensor_context(
            instance=instance, resources={"kafka": kafka, "live_feed": live}
        )
        result = live_feed_restart_sensor(context)
    assert isinstance(result, dg.SensorResult) and result.run_requests is not None
    assert [(r.run_key, r.run_config) for r in result.run_requests] == [
        (f"restart:{failed.run_id}", config("okx"))
    ]
