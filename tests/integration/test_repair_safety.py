"""A repair never makes a window worse: a backfill racing the continuous job, in both orders, and
a backfill after the topic's retention deleted part of a window. Real Kafka, FerretDB, InfluxDB
and Spark; both sinks end equal to the independent reference (tests/expected_ohlcv.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from crypto_assets.aggregation.repairs import BACKFILL_ATTEMPTS, backfill_job, late_rows_sensor
from crypto_pipeline.clients import end_offsets, ensure_topic, mongo_client
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.formats.late_ledger import LateEntry
from crypto_pipeline.settings import Settings
from spark_jobs.interface.config import JobConfig
from spark_jobs.window_versions import LeaseLost, WriterLease, writing_turn
from tests.expected_ohlcv import expected_aggregates
from tests.integration.dagster_helpers import backfills_requested, resources_for, wait_until
from tests.integration.job_helpers import job_for, mongo_of, run_job, start_job
from tests.integration.test_poison_and_late import message, stop, wait_until_committed
from tests.integration.test_spark_job import assert_sinks_match

HOUR_MS = 3_600_000
H0 = 1_735_689_600_000  # 2025-01-01T00:00Z
WINDOWS = ("5m", "1h")


def candle(minute: int, close: float = 1.5) -> dict[str, Any]:
    """BTCUSDT at H0 + minute: volume 1, quote volume `close`, 2 trades."""
    return {
        "symbol": "BTCUSDT",
        "t": H0 + minute * 60_000,
        "open": 1.0,
        "high": 2.0,
        "low": 1.0,
        "close": close,
        "volume": 1.0,
        "quote_volume": close,
        "trades": 2,
    }


def produce(settings: Settings, topic: str, rows: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    try:
        for row in rows:
            producer.send(topic, key=row["symbol"].encode(), value=message(row))
        producer.flush()
    finally:
        producer.close()


def backfill_of(job: JobConfig, first_minute: int, end_minute: int) -> JobConfig:
    return dataclasses.replace(
        job,
        trigger="available-now",
        status_file=None,
        backfill_symbols=("BTCUSDT",),
        backfill_start_ms=H0 + first_minute * 60_000,
        backfill_end_ms=H0 + end_minute * 60_000,
    )


def start_backfill(job: JobConfig, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return start_job(job, stdout=output, stderr=output)


def summary_line(log: Path) -> dict[str, Any]:
    (line,) = [line for line in log.read_text().splitlines() if "job summary: " in line]
    summary: dict[str, Any] = json.loads(line.split("job summary: ", 1)[1])
    return summary


def test_a_backfill_racing_the_stream_never_replaces_a_newer_window(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """The continuous job runs. Hour 0 holds 41 candles when a backfill of it reads the topic;
    the backfill is held (by the write lease, then SIGSTOP) while the other 19 arrive and the
    stream writes the complete hour; then the backfill writes: its windows are stale and
    refused. Hour 1 the other way round: the backfill of 41 candles lands first, the stream's
    complete hour replaces it. Both sinks end exact over all 120 candles."""
    ensure_topic(local_stack.kafka.bootstrap_servers, unique_name, partitions=3)
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", trigger="1 second", windows=WINDOWS)
    stream_log = (tmp_path / "stream.log").open("wb")
    stream = start_job(job, stdout=stream_log, stderr=stream_log)
    rows = [candle(m) for m in range(120)]
    try:
        # Order 1: the backfill reads first and writes last.
        produce(local_stack, unique_name, rows[:41])
        wait_until_committed(job, stream)
        lease = WriterLease(
            mongo_client(job.mongo.uri)[job.mongo.database][job.mongo.writers_collection],
            "the test",
        )
        lease.acquire(60, lambda error: False)
        log = tmp_path / "backfill-1.log"
        backfill = start_backfill(backfill_of(job, 0, 60), log)
        wait_until(
            lambda: "windows computed; writing" in log.read_text(), 300, "the backfill's read"
        )
        backfill.send_signal(signal.SIGSTOP)  # waiting for the lease: no write has begun
        lease.release()
        produce(local_stack, unique_name, rows[41:60])
        wait_until_committed(job, stream)
        backfill.send_signal(signal.SIGCONT)
        assert backfill.wait(timeout=300) == 0, log.read_text()[-3000:]
        first = summary_line(log)
        assert first["backfill_candles"] == 41
        assert first["stale_windows"] == 2  # the hour and its last 5-minute window
        assert first["refused_windows"] == 0
        assert_sinks_match(local_stack, unique_name, expected_aggregates(rows[:60], WINDOWS))

        # Order 2: the backfill reads and writes first, the stream completes the hour after.
        produce(local_stack, unique_name, rows[60:101])
        wait_until_committed(job, stream)
        log = tmp_path / "backfill-2.log"
        assert start_backfill(backfill_of(job, 60, 120), log).wait(timeout=300) == 0
        second = summary_line(log)
        assert (second["backfill_candles"], second["stale_windows"]) == (41, 0)
        produce(local_stack, unique_name, rows[101:])
        wait_until_committed(job, stream)
    finally:
        stop(stream)
    assert_sinks_match(local_stack, unique_name, expected_aggregates(rows, WINDOWS))


def test_a_window_partly_deleted_by_retention_is_unrepairable_and_keeps_its_values(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """Hour 0 (60 candles) is aggregated, then hour 2 moves the watermark; a corrected candle of
    minute 5 arrives late and is recorded in the ledger. Retention then deletes the hour's first
    30 candles (DeleteRecords, what the broker's retention does). `backfill --late` cannot
    recompute the hour whole: it refuses to overwrite it with 31 rows, marks the entry
    unrepairable with the reason and exits 1 with one line; both sinks keep the hour exact as
    it was, and the entry stays open."""
    ensure_topic(local_stack.kafka.bootstrap_servers, unique_name, partitions=1)
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=WINDOWS)
    hour_0 = [candle(m) for m in range(60)]
    hour_2 = [candle(m) for m in range(120, 180)]
    for rows in (hour_0, hour_2):
        produce(local_stack, unique_name, rows)
        assert run_job(job).returncode == 0
    produce(local_stack, unique_name, [candle(5, close=1.25)])
    assert run_job(job).returncode == 0
    (entry,) = late_ledger.open_entries_in(mongo_of(local_stack, unique_name), unique_name)
    assert (entry.rows, entry.offsets) == (1, {"0": [120, 120]})

    admin = KafkaAdminClient(bootstrap_servers=local_stack.kafka.bootstrap_servers)
    try:
        admin.delete_records({TopicPartition(unique_name, 0): 30})
    finally:
        admin.close()
    assert end_offsets(local_stack.kafka.bootstrap_servers, unique_name) == {0: 121}

    environment = {
        **os.environ,
        **job.to_env(),
        "KAFKA_TOPIC": unique_name,
        "MONGO_DATABASE": job.mongo.database,
        "INFLUXDB_MEASUREMENT": job.influx.measurement,
    }
    command = [sys.executable, "-m", "crypto_cli", "backfill", "--late"]
    command += ["--windows", ",".join(WINDOWS)]
    started = time.monotonic()
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert "cannot be repaired" in last_line and "retention" in last_line, last_line
    assert time.monotonic() - started < 600

    (entry,) = late_ledger.open_entries_in(mongo_of(local_stack, unique_name), unique_name)
    assert entry.unrepairable is not None and "2 windows" in entry.unrepairable
    # Every window as it was before the late candle: the hour keeps its 60 rows and the 5-minute
    # window its 5, nothing recomputed from what retention left.
    assert_sinks_match(local_stack, unique_name, expected_aggregates(hour_0 + hour_2, WINDOWS))


def test_the_late_rows_sensor_stops_after_three_failed_backfills_and_skips_unrepairable(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """A ledger entry in the real MongoDB: the sensor requests a backfill; after three failed
    backfill runs in a row it warns and stops (before, it relaunched one every tick, forever);
    a successful run lets it try again. An entry found unrepairable is left to a person."""
    mongo = mongo_of(local_stack, unique_name)
    with mongo_client(mongo.uri) as client:
        ledger = client[mongo.database][mongo.late_collection]
        late_ledger.record(ledger, unique_name, "ckpt", 7, [LateEntry("BTCUSDT", 1, H0, H0)])
        resources = resources_for(local_stack, unique_name, tmp_path / "state")
        with dg.DagsterInstance.ephemeral() as instance:

            def evaluate() -> Any:
                names = ("kafka", "mongo", "influx")
                context = dg.build_sensor_context(
                    instance=instance, resources={name: resources[name] for name in names}
                )
                return late_rows_sensor(context)

            assert backfills_requested(evaluate()) == ["candles"]
            for status in [dg.DagsterRunStatus.FAILURE] * BACKFILL_ATTEMPTS:
                instance.create_run_for_job(backfill_job, status=status)
            stopped = evaluate()
            assert isinstance(stopped, dg.SkipReason)
            assert "failed in a row" in str(stopped.skip_message)
            instance.create_run_for_job(backfill_job, status=dg.DagsterRunStatus.SUCCESS)
            assert backfills_requested(evaluate()) == ["candles"]

            (entry,) = late_ledger.open_entries(ledger, unique_name)
            late_ledger.decide(ledger, [], {entry.id: "deleted by retention"})
            assert isinstance(evaluate(), dg.SkipReason)
            assert [e.unrepairable for e in late_ledger.open_entries(ledger, unique_name)] == [
                "deleted by retention"
            ]


def test_the_write_lease_is_renewed_while_a_turn_writes_and_expires_when_its_holder_stalls(
    local_stack: Settings, unique_name: str
) -> None:
    """On the real MongoDB, with a 1 s time to live: a turn that writes for 3 s keeps the lease
    (renewed) while another writer waits for it; a holder that stalls without renewing loses it
    to the next writer after the time to live, and its release says so."""
    mongo = mongo_of(local_stack, unique_name)
    with mongo_client(mongo.uri) as client:
        leases = client[mongo.database][mongo.writers_collection]
        first = WriterLease(leases, "first", ttl_s=1.0)
        second = WriterLease(leases, "second", ttl_s=1.0)
        with writing_turn(first, 10, lambda error: False):
            time.sleep(3)
            with pytest.raises(TimeoutError, match="held by first"):
                second.acquire(1.5, lambda error: False)
        second.acquire(1, lambda error: False)  # free once the turn is over
        second.release()

        first.acquire(1, lambda error: False)  # and then stalls: no renewal
        time.sleep(1.5)
        second.acquire(1, lambda error: False)
        with pytest.raises(LeaseLost):
            first.release()
        second.release()
