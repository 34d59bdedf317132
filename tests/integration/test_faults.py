"""The fault suite (`pytest -m fault`): a server or the job dies or goes away while real data
streams through, and both sinks still end equal to the independent reference
(tests/expected_ohlcv.py): no window lost, none counted twice. Each scenario prints its row of
docs/reliability.md (rows in, rows lost, rows duplicated, recovery time)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from kafka import KafkaProducer

import local_stack as stack
from crypto_assets.aggregation.streaming import streaming_job, streaming_restart_sensor
from crypto_assets.quality.stream_health import streaming_health_sensor
from crypto_assets.resources import KafkaResource, SparkResource
from crypto_cli.dagster_services import DagsterApi
from crypto_cli.live_command import start_feed_process
from crypto_pipeline.clients import end_offsets, ensure_topic
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.reconcile import committed_offsets
from crypto_pipeline.settings import (
    REPO_ROOT,
    Settings,
    checkpoint_dir,
    live_status_file,
    stream_status_file,
)
from spark_jobs.interface.config import JobConfig
from spark_jobs.interface.heartbeat import read_status, running_stream_pid, stream_state
from tests.conftest import SHARED_DATA, record_fault
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.integration.dagster_helpers import dagster_services, wait_until
from tests.integration.job_helpers import influx_of, job_for, mongo_of, run_job, start_job
from tests.integration.kafka_helpers import consume_all, decoded
from tests.integration.live_helpers import simulator
from tests.integration.test_poison_and_late import stop, wait_until_committed
from tests.poison_cases import BROKEN_MESSAGES_ONLY, BROKEN_VALUES, VALID

pytestmark = pytest.mark.fault

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
SHARED_Q1 = SHARED_DATA / "binance_spot_15m_10sym_2025Q1.csv.gz"
SAMPLE_SPAN_S = 2 * 86_400  # the sample: two days of 1-minute candles, three symbols
WINDOWS = ("5m", "1h")


def rows_lost_and_duplicated(expected: dict, actual: dict) -> tuple[int, int]:
    """Candles missing from the sink's windows, and candles counted more than once."""
    lost = sum(
        max(0, want["rows"] - actual.get(key, {}).get("rows", 0)) for key, want in expected.items()
    )
    duplicated = sum(
        max(0, got["rows"] - expected.get(key, {}).get("rows", 0)) for key, got in actual.items()
    )
    return lost, duplicated


def assert_exact(settings: Settings, name: str, expected: dict) -> tuple[int, int]:
    """Both sinks equal the reference; returns (rows lost, rows duplicated) of the worse sink."""
    mongo, bad_ids = read_mongo(mongo_of(settings, name))
    influx = read_influx(influx_of(settings, name))
    accounting = [rows_lost_and_duplicated(expected, sink) for sink in (mongo, influx)]
    assert bad_ids == []
    assert mismatches(expected, mongo)[:10] == []
    assert mismatches(expected, influx)[:10] == []
    return max(a[0] for a in accounting), max(a[1] for a in accounting)


def sample_ends_exact(
    settings: Settings, name: str, scenario: str, recovery_s: float, test: str
) -> None:
    """Both sinks hold the sample's exact windows; the scenario's row recorded."""
    rows = read_csv_rows(SAMPLE)
    lost, duplicated = assert_exact(settings, name, expected_aggregates(rows, WINDOWS))
    record_fault(scenario, len(rows), lost, duplicated, recovery_s, test)


def start_replay(
    settings: Settings, path: Path, topic: str, speed: str, log: Path
) -> subprocess.Popen[bytes]:
    """The replay CLI as a user runs it, on the settings' brokers (its own process, so a fault
    cannot reach the test)."""
    command = [sys.executable, "-m", "crypto_cli", "replay", str(path), "--quiet"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*command, "--topic", topic, "--speed", speed],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers},
        )


def wait_until_replay_under_way(settings: Settings, topic: str, rows: int) -> None:
    """Until a tenth of the file's rows are in the topic."""
    wait_until(
        lambda: message_count(settings, topic) >= rows // 10, 60, "the replay to be under way"
    )


def committed_batches(job: JobConfig) -> int:
    return len(list((Path(job.checkpoint_dir) / "ohlcv" / "commits").glob("[0-9]*")))


def wait_for_recovery(job: JobConfig, process: subprocess.Popen[bytes]) -> float:
    """Seconds until the job in `process` has started its query (the heartbeat is its own) and
    committed every offset the topic then holds: a restarted or unblocked job has caught up. (Not
    "a new batch": when the replay has ended and everything was committed, none ever comes.)"""
    started = time.monotonic()
    if job.status_file:
        heartbeat = Path(job.status_file)
        wait_until(
            lambda: (read_status(heartbeat) or {}).get("pid") == process.pid,
            300,
            "the restarted job's heartbeat",
        )
    wait_until_committed(job, process)
    return time.monotonic() - started


def test_broker_killed_during_a_full_speed_replay_loses_and_duplicates_nothing(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """Kafka SIGKILLed while `replay --speed max` sends the shared quarter, restarted 5 s later:
    the idempotent producer's retries deliver every row exactly once, the replay finishes, and
    the job's windows are exact. A live feed with a 1 MB buffer, sending thousands of updates a
    second meanwhile, fills it while Kafka is away and stops with one line saying what it did not
    send."""
    path = SHARED_Q1 if SHARED_Q1.exists() else SAMPLE
    rows = read_csv_rows(path)
    windows = ("1h", "4h")  # of the quarter's 15-minute candles: every row in 1h and 4h windows
    feed_log = tmp_path / "feed.log"
    symbols = [f"S{i:03d}USDT" for i in range(200)]
    with simulator(symbols, 60, "--push-every-s", "0.1") as sim:
        feed = start_feed_process(
            local_stack,
            sim,
            "binance",
            symbols,
            f"{unique_name}_feed",
            feed_log,
            "--buffer-mb",
            "1",
        )
        status = live_status_file(local_stack.stack_dir, "binance", f"{unique_name}_feed")
        wait_until(lambda: status.exists() and json.loads(status.read_text())["connects"], 60)
        replay = start_replay(local_stack, path, unique_name, "max", tmp_path / "replay.log")
        wait_until_replay_under_way(local_stack, unique_name, len(rows))
        stack.kill(local_stack, "kafka")
        killed_at = time.monotonic()
        try:
            feed_exit = feed.wait(timeout=60)
        finally:
            if feed.poll() is None:
                feed.kill()
                feed.wait()
            time.sleep(max(0.0, killed_at + 5 - time.monotonic()))
            stack.up(local_stack, only={"kafka"})
    assert replay.wait(timeout=300) == 0, (tmp_path / "replay.log").read_text()[-2000:]
    recovery_s = time.monotonic() - killed_at
    errors = [line for line in feed_log.read_text().splitlines() if line.startswith("live feed:")]
    assert feed_exit == 1 and len(errors) == 1, feed_log.read_text()[-2000:]
    assert "Kafka is not taking messages" in errors[0] and "not sent" in errors[0], errors

    records = decoded(consume_all(local_stack, unique_name, expected=len(rows)))
    lines = Counter(message["source_line"] for _, message in records)
    assert len(lines) == len(rows), "rows lost in the topic"
    assert max(lines.values()) == 1, "rows duplicated in the topic"
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=windows)
    assert run_job(job).returncode == 0
    lost, duplicated = assert_exact(local_stack, unique_name, expected_aggregates(rows, windows))
    record_fault(
        "Kafka broker SIGKILL + restart during replay --speed max",
        len(rows),
        lost,
        duplicated,
        recovery_s,
        "test_broker_killed",
    )


def test_driver_killed_at_random_moments_and_restarted_ends_exact(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """The continuous job SIGKILLed three times at random moments while the sample streams in
    (120x real time): each time its heartbeat says "crashed", the restart sensor asks for the
    same run config, and the restarted job resumes from its checkpoint. Exact at the end."""
    ensure_topic(local_stack.kafka.bootstrap_servers, unique_name, partitions=3)
    status_file = tmp_path / "status.json"
    job = dataclasses.replace(
        job_for(local_stack, unique_name, tmp_path / "ckpt", windows=WINDOWS, trigger="1 second"),
        status_file=str(status_file),
    )
    speed = SAMPLE_SPAN_S / 70  # the replay lasts about 70 s
    replay = start_replay(local_stack, SAMPLE, unique_name, str(speed), tmp_path / "replay.log")
    chance = random.Random()
    recoveries = []
    try:
        for kill in range(3):
            process = start_job(job, start_new_session=True)
            if kill:
                recoveries.append(wait_for_recovery(job, process))
            time.sleep(chance.uniform(2, 12))  # a random moment, after at least one batch
            wait_until(lambda: committed_batches(job) > 0, 120, "a first committed batch")
            process.kill()
            process.wait()
            status = read_status(status_file)
            assert status is not None and stream_state(status) == "crashed"
        assert_restart_requested(local_stack, unique_name, tmp_path)
        process = start_job(job)
        recoveries.append(wait_for_recovery(job, process))
        assert replay.wait(timeout=300) == 0
        wait_until_committed(job, process)
    finally:
        replay.kill()
    stop(process)
    sample_ends_exact(
        local_stack,
        unique_name,
        "Spark driver SIGKILL x3 at random moments, restarted",
        max(recoveries),
        "test_driver_killed",
    )


def assert_restart_requested(settings: Settings, topic: str, tmp_path: Path) -> None:
    """The health sensor reports the stream crashed; with its run failed in Dagster, the restart
    sensor requests a run of the same config; a run stopped on purpose is not restarted."""
    spark = SparkResource(
        master="local[1]",
        driver_host="127.0.0.1",
        connectors_dir="/jars",
        state_dir=str(tmp_path / "dagster-state"),
    )
    spark.status_file(topic).parent.mkdir(parents=True, exist_ok=True)
    spark.status_file(topic).write_text((tmp_path / "status.json").read_text())
    kafka = KafkaResource(bootstrap_servers=settings.kafka.bootstrap_servers, topic=topic)
    resources = {"kafka": kafka, "spark": spark}
    config = {"ops": {"run_streaming_ohlcv": {"config": {"trigger": "1 second"}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        health = streaming_health_sensor(
            dg.build_sensor_context(instance=instance, resources=resources)
        )
        assert isinstance(health, dg.SensorResult) and health.asset_events
        assert {event.metadata["state"].value for event in health.asset_events} == {"crashed"}
        failed = instance.create_run_for_job(
            streaming_job, run_config=config, status=dg.DagsterRunStatus.FAILURE
        )
        request = streaming_restart_sensor(
            dg.build_sensor_context(instance=instance, resources=resources)
        )
        assert isinstance(request, dg.RunRequest)
        assert request.run_config == config
        assert request.run_key == f"restart:{failed.run_id}"
        instance.create_run_for_job(
            streaming_job, run_config=config, status=dg.DagsterRunStatus.CANCELED
        )
        skipped = streaming_restart_sensor(
            dg.build_sensor_context(instance=instance, resources=resources)
        )
        assert isinstance(skipped, dg.SkipReason)


def test_mongodb_then_influxdb_down_for_30_s_each_are_ridden_out_and_the_stream_ends_exact(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """The MongoDB-compatible server stopped for 30 s, then InfluxDB for 30 s, while the
    continuous job runs and the sample streams in: the batch in flight waits and retries its
    writes, the job never exits, and both sinks end exact."""
    outages = ["influxdb"] if not local_stack.serves_mongo else ["ferretdb", "influxdb"]
    ensure_topic(local_stack.kafka.bootstrap_servers, unique_name, partitions=3)
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=WINDOWS, trigger="1 second")
    log = tmp_path / "job.log"
    with log.open("wb") as out:
        process = start_job(job, stdout=out, stderr=out)
    speed = SAMPLE_SPAN_S / 90  # the replay lasts about 90 s, both outages inside it
    replay = start_replay(local_stack, SAMPLE, unique_name, str(speed), tmp_path / "replay.log")
    recoveries = []
    try:
        wait_until(lambda: committed_batches(job) > 2, 180, "the stream to be under way")
        for service in outages:
            stack.down(local_stack, only={service})
            time.sleep(30)
            stack.up(local_stack, only={service})
            recoveries.append(wait_for_recovery(job, process))
        assert replay.wait(timeout=300) == 0
        wait_until_committed(job, process)
        assert process.poll() is None, "the job exited"
    finally:
        replay.kill()
    stop(process)
    assert log.read_text().count("unreachable") >= len(outages), "an outage was not noticed"
    sample_ends_exact(
        local_stack,
        unique_name,
        f"{' then '.join(outages)} down 30 s each during a continuous run",
        max(recoveries),
        "test_mongodb_then_influxdb_down",
    )


def mutate(line: str, chance: random.Random) -> str:
    """One random edit of a CSV line: a character replaced, deleted or inserted, a field emptied,
    duplicated or swapped with another, or garbage appended."""
    fields = line.split(",")
    kind = chance.randrange(7)
    position = chance.randrange(len(line))
    character = chance.choice('0123456789.-e,xX ;"\\\t\u00e9\u2603')
    if kind == 0:
        return line[:position] + character + line[position + 1 :]
    if kind == 1:
        return line[:position] + line[position + 1 :]
    if kind == 2:
        return line[:position] + character + line[position:]
    index = chance.randrange(len(fields))
    if kind == 3:
        fields[index] = ""
    elif kind == 4:
        fields.insert(index, fields[index])
    elif kind == 5:
        other = chance.randrange(len(fields))
        fields[index], fields[other] = fields[other], fields[index]
    else:
        return line + chance.choice([",", ",1", "garbage", "\u0000", ",,,"])
    return ",".join(fields)


def random_payload(chance: random.Random) -> bytes:
    """A message no candle rule accepts: not JSON, not an object, truncated, a required field
    missing or null, or one of the hand-written broken candles."""
    kind = chance.randrange(6)
    valid = json.dumps(VALID)
    if kind == 0:
        return b"\xff" + chance.randbytes(chance.randrange(0, 200))
    if kind == 1:
        return chance.choice([b"[]", b"[1,2]", b"42", b'"text"', b"null", b"", b"{}"])
    if kind == 2:
        return valid[: chance.randrange(1, len(valid) - 1)].encode()
    required = chance.choice(("symbol", "event_time_ms", "open", "high", "low", "close", "volume"))
    if kind == 3:
        return json.dumps({k: v for k, v in VALID.items() if k != required}).encode()
    if kind == 4:
        return json.dumps({**VALID, required: None}).encode()
    changes, _ = chance.choice(BROKEN_VALUES + BROKEN_MESSAGES_ONLY)
    return json.dumps({**VALID, **changes}).encode()


def test_fuzzed_csv_lines_and_random_payloads_are_all_accounted_for(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """10,000 CSV lines, about a third of them randomly mutated, replayed while the continuous job
    runs, and 10,000 random payloads produced straight to the topic: every input line is in the
    topic or the replay's dead letters; every random payload is a dead letter of the job; the job
    never stops or logs a traceback; after the late-row backfill both sinks equal the reference
    computed from the messages the job accepted."""
    chance = random.Random(20261129)
    rows = read_csv_rows(SAMPLE)
    header = "open_time_ms,symbol,open,high,low,close,volume,quote_volume,trades"
    lines = [
        f"{r['t'] + shift},{r['symbol']},{r['open']!r},{r['high']!r},{r['low']!r},"
        f"{r['close']!r},{r['volume']!r},{r['quote_volume']!r},{r['trades']}"
        for shift in (0, 2 * 86_400_000)
        for r in rows
    ][:10_000]
    fuzzed = [mutate(line, chance) if chance.random() < 0.35 else line for line in lines]
    changed = sum(a != b for a, b in zip(lines, fuzzed, strict=True))
    csv_file = tmp_path / "fuzzed.csv"
    csv_file.write_text("\n".join([header, *fuzzed]) + "\n", encoding="utf-8")

    ensure_topic(local_stack.kafka.bootstrap_servers, unique_name, partitions=3)
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=WINDOWS, trigger="1 second")
    log = tmp_path / "job.log"
    with log.open("wb") as out:
        process = start_job(job, stdout=out, stderr=out)
    replay = start_replay(local_stack, csv_file, unique_name, "max", tmp_path / "replay.log")
    payloads = [random_payload(chance) for _ in range(10_000)]
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka.bootstrap_servers, acks="all")
    try:
        sent = [producer.send(unique_name, key=b"fuzz", value=p) for p in payloads]
        producer.flush()
        fuzz_offsets = {
            f"{unique_name}-{meta.partition}-{meta.offset}"
            for meta in (future.get(timeout=60) for future in sent)
        }
        assert replay.wait(timeout=300) == 0, (tmp_path / "replay.log").read_text()[-2000:]
        wait_until_committed(job, process)
        assert process.poll() is None, "the stream stopped"
    finally:
        producer.close()
        replay.kill()
    stop(process)
    assert "Traceback" not in log.read_text()

    topic = consume_all(local_stack, unique_name, expected=message_count(local_stack, unique_name))
    dlq = f"{unique_name}.dlq"
    dead = decoded(consume_all(local_stack, dlq, expected=message_count(local_stack, dlq)))
    replay_dead = [value for _, value in dead if value.get("stage") != "spark"]
    from_replay = [r for r in topic if r.key != b"fuzz"]
    rejected_by_replay = {value["source_line"] for value in replay_dead}
    accepted_by_replay = {json.loads(r.value)["source_line"] for r in from_replay}
    # Every input line is in the topic or a dead letter of the replay, never both, never twice.
    assert len(from_replay) == len(accepted_by_replay)
    assert accepted_by_replay | rejected_by_replay == set(range(2, len(lines) + 2))
    assert accepted_by_replay & rejected_by_replay == set()
    assert len(replay_dead) == len(rejected_by_replay), "a line's dead letter sent twice"
    job_dead = {key for key, value in dead if value.get("stage") == "spark"}
    assert job_dead == fuzz_offsets, "every random payload, and only those, is a job dead letter"

    late_rows = sum(
        e.rows for e in late_ledger.open_entries_in(mongo_of(local_stack, unique_name), unique_name)
    )
    command = [sys.executable, "-m", "crypto_cli", "backfill", "--late"]
    environment = {**job_environment_for(job), "KAFKA_TOPIC": unique_name}
    repaired = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    accepted = sorted(from_replay, key=lambda r: (r.partition, r.offset))
    candles = [json.loads(r.value) for r in accepted]
    reference_rows = [
        {"t": c["event_time_ms"], **{k: v for k, v in c.items() if k != "event_time_ms"}}
        for c in candles
    ]
    expected = expected_aggregates(reference_rows, WINDOWS)
    lost, duplicated = assert_exact(local_stack, unique_name, expected)
    assert late_ledger.open_entries_in(mongo_of(local_stack, unique_name), unique_name) == []
    record_fault(
        f"fuzz: 10,000 CSV lines ({changed:,} mutated; {len(rejected_by_replay):,} dead letters "
        f"of the replay, {late_rows} late rows repaired) + 10,000 random payloads (all dead "
        "letters of the job)",
        20_000,
        lost,
        duplicated,
        0.0,
        "test_fuzzed",
    )


def message_count(settings: Settings, topic: str) -> int:
    return sum(end_offsets(settings.kafka.bootstrap_servers, topic).values())


def job_environment_for(job: JobConfig) -> dict[str, Any]:
    return {
        **os.environ,
        **job.to_env(),
        "MONGO_DATABASE": job.mongo.database,
        "INFLUXDB_MEASUREMENT": job.influx.measurement,
    }


def test_daemon_restarted_while_the_stream_runs_leaves_it_running(
    local_stack: Settings, tmp_path: Path
) -> None:
    """`streaming_job` launched through the UI's API while the sample streams in; the Dagster
    daemon is stopped and started again: the run executes under the code server (as in docker
    compose), so the same job keeps its pid and goes on committing; terminated from the UI at
    the end, both sinks are exact."""
    with dagster_services(local_stack, tmp_path) as (services, topic):
        api = DagsterApi(services.url)
        ensure_topic(local_stack.kafka.bootstrap_servers, topic, partitions=3)
        config = {"trigger": "1 second", "windows": ",".join(WINDOWS)}
        run_id = api.launch("streaming_job", {"ops": {"run_streaming_ohlcv": {"config": config}}})
        status_file = stream_status_file(local_stack.stack_dir, topic)
        stream_pid = wait_until(
            lambda: running_stream_pid(status_file), 300, "the stream to be running"
        )
        speed = SAMPLE_SPAN_S / 40
        replay = start_replay(local_stack, SAMPLE, topic, str(speed), tmp_path / "replay.log")
        try:
            checkpoint = checkpoint_dir(local_stack.stack_dir, topic)
            commits = checkpoint / "ohlcv" / "commits"
            wait_until(lambda: len(list(commits.glob("[0-9]*"))) > 2, 120, "batches committed")
            services.stop_daemon()
            stopped_at, before = time.monotonic(), len(list(commits.glob("[0-9]*")))
            while len(list(commits.glob("[0-9]*"))) <= before:  # the stream needs no daemon
                assert time.monotonic() - stopped_at < 60, "no batch after the daemon stopped"
                time.sleep(0.1)
            recovery_s = time.monotonic() - stopped_at
            time.sleep(5)
            services.start_daemon()
            assert running_stream_pid(status_file) == stream_pid
            assert api.run_status(run_id) == "STARTED"
            assert replay.wait(timeout=300) == 0
            ends = end_offsets(local_stack.kafka.bootstrap_servers, topic)
            wait_until(
                lambda: all(
                    (committed_offsets(checkpoint / "ohlcv") or {}).get(topic, {}).get(p, 0) >= e
                    for p, e in ends.items()
                ),
                300,
                "everything committed",
            )
        finally:
            replay.kill()
        api.terminate(run_id)
        assert api.wait_for_run(run_id, 120) == "CANCELED"
    sample_ends_exact(
        local_stack,
        topic,
        "Dagster daemon stopped and started while streaming_job runs (the run goes on)",
        recovery_s,
        "test_daemon_restarted",
    )
