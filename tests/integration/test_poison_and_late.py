"""No row lost: poison messages quarantined while the stream goes on, per-symbol files in any
order, and late rows repaired by a backfill, from the command line and from Dagster. Every
scenario ends with both sinks compared with the independent reference (tests/expected_ohlcv.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from kafka import KafkaProducer

from crypto_assets.aggregation.repairs import late_rows_sensor
from crypto_assets.definitions import build_definitions
from crypto_pipeline.clients import end_offsets, ensure_topic
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.reconcile import committed_offsets
from crypto_pipeline.settings import REPO_ROOT, Settings
from spark_jobs.interface.config import JobConfig
from tests.conftest import SHARED_DATA
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.integration.dagster_helpers import backfills_requested, resources_for, wait_until
from tests.integration.job_helpers import job_for, mongo_of, replay_file, run_job, start_job
from tests.integration.kafka_helpers import consume_all, decoded
from tests.integration.test_spark_job import assert_sinks_match, summary_of, write_csv_rows
from tests.poison_cases import BROKEN_MESSAGES_ONLY, BROKEN_VALUES, VALID

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
SHARED_Q1 = SHARED_DATA / "binance_spot_15m_10sym_2025Q1.csv.gz"
DAY_2_MS = 1_735_776_000_000  # 2025-01-02T00:00Z: the sample's second day
T0_MS = 1_735_689_600_000  # 2025-01-01T00:00Z
WINDOWS = ("5m", "1h", "4h")


def message(row: dict[str, Any]) -> bytes:
    """A candle as the replay sends it (written here with json, not with the producer's code)."""
    fields = {"symbol": row["symbol"], "event_time_ms": row["t"]}
    names = ("open", "high", "low", "close", "volume", "quote_volume", "trades")
    return json.dumps({**fields, **{name: row[name] for name in names}}).encode()


def wait_until_committed(
    job: JobConfig, process: subprocess.Popen[bytes], timeout_s: float = 300
) -> None:
    """Until the running job's query has committed every offset now in the topic."""
    ends = end_offsets(job.kafka.bootstrap_servers, job.kafka.topic)
    query = Path(job.checkpoint_dir) / "ohlcv"

    def committed() -> bool:
        assert process.poll() is None, "the job stopped"
        done = (committed_offsets(query) or {}).get(job.kafka.topic, {})
        return all(done.get(p, 0) >= end for p, end in ends.items())

    wait_until(committed, timeout_s, f"the job to commit {ends}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0


def unrepaired(settings: Settings, name: str) -> list[late_ledger.LateEntry]:
    return late_ledger.open_entries_in(mongo_of(settings, name), name)


def test_poison_messages_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """10,000 valid candles with every kind of poison message among them, produced straight to
    Kafka while the continuous job runs: each poison message is a dead letter with its reason,
    the job keeps running, and every window is exact."""
    sample = read_csv_rows(SAMPLE)  # 8,640 candles; the rest the same two days later
    rows = sample + [{**row, "t": row["t"] + 2 * 86_400_000} for row in sample[:1_360]]
    poison = [
        (json.dumps({**VALID, **changes}).encode(), reason)
        for changes, reason in BROKEN_VALUES + BROKEN_MESSAGES_ONLY
    ]
    ensure_topic(local_stack.kafka.bootstrap_servers, unique_name, partitions=3)
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", trigger="1 second")
    log = (tmp_path / "job.log").open("wb")
    process = start_job(job, stdout=log, stderr=log)
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka.bootstrap_servers, acks="all")
    try:
        step = len(rows) // len(poison)
        for index, row in enumerate(rows):
            producer.send(unique_name, key=row["symbol"].encode(), value=message(row))
            if index % step == 0 and index // step < len(poison):
                producer.send(unique_name, key=b"poison", value=poison[index // step][0])
        producer.flush()
        wait_until_committed(job, process)
        assert process.poll() is None, "the stream stopped"
    finally:
        producer.close()
        stop(process)

    dead = decoded(consume_all(local_stack, f"{unique_name}.dlq", expected=len(poison)))
    assert sorted((v["raw"], v["reason"]) for _, v in dead) == sorted(
        (raw.decode(), reason) for raw, reason in poison
    )
    assert_sinks_match(local_stack, unique_name, expected_aggregates(rows, WINDOWS))


@pytest.mark.parametrize("order", ["alphabetical", "reversed"])
def test_per_symbol_files_in_any_order_end_exact(
    local_stack: Settings, unique_name: str, tmp_path: Path, order: str
) -> None:
    """The shared quarter of 15-minute candles split into one file per symbol, replayed one
    after another while the continuous job runs, waiting for it after each file: each symbol
    has its own watermark, so no row is late and every window is exact."""
    if not SHARED_Q1.exists():
        pytest.skip(f"{SHARED_Q1} is not present")
    rows = read_csv_rows(SHARED_Q1)
    symbols = sorted({row["symbol"] for row in rows}, reverse=order == "reversed")
    windows = ("1h", "4h")
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", trigger="1 second", windows=windows)
    ensure_topic(local_stack.kafka.bootstrap_servers, unique_name, partitions=3)
    log_path = tmp_path / "job.log"
    with log_path.open("wb") as log:
        process = start_job(job, stdout=log, stderr=log)
        try:
            for symbol in symbols:
                own = [row for row in rows if row["symbol"] == symbol]
                replay_file(
                    local_stack, write_csv_rows(tmp_path / f"{symbol}.csv", own), unique_name
                )
                wait_until_committed(job, process)
        finally:
            stop(process)

    summary = summary_of(subprocess.CompletedProcess([], 0, "", log_path.read_text()))
    assert summary["late_rows"] == 0
    assert_sinks_match(local_stack, unique_name, expected_aggregates(rows, windows))


def test_an_older_period_after_a_newer_one_is_repaired_by_the_cli_backfill(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """The sample's second day, then its first day, each followed by an available-now run: the
    first day is behind every symbol's watermark, so the job drops it as late, counts it and
    records it in the late ledger. `crypto-pipeline backfill --late` recomputes it from the
    topic: both sinks equal the reference over everything in the topic, the ledger is clear."""
    rows = read_csv_rows(SAMPLE)
    day_1 = [row for row in rows if row["t"] < DAY_2_MS]
    day_2 = [row for row in rows if row["t"] >= DAY_2_MS]
    job = job_for(local_stack, unique_name, tmp_path / "ckpt")
    replay_file(local_stack, write_csv_rows(tmp_path / "day2.csv", day_2), unique_name)
    assert run_job(job).returncode == 0
    replay_file(local_stack, write_csv_rows(tmp_path / "day1.csv", day_1), unique_name)
    late_run = run_job(job)
    assert late_run.returncode == 0, late_run.stderr[-3000:]

    assert summary_of(late_run)["late_rows"] == len(day_1)
    assert sum(entry.rows for entry in unrepaired(local_stack, unique_name)) == len(day_1)

    environment = {
        **os.environ,
        **job.to_env(),
        "KAFKA_TOPIC": unique_name,
        "MONGO_DATABASE": job.mongo.database,
        "INFLUXDB_MEASUREMENT": job.influx.measurement,
    }
    command = [sys.executable, "-m", "crypto_cli", "backfill", "--late"]
    repaired = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr[-3000:]

    assert unrepaired(local_stack, unique_name) == []
    assert_sinks_match(local_stack, unique_name, expected_aggregates(rows, WINDOWS))


def check_statuses(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, str]:
    result = defs.resolve_job_def("reconciliation_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    return {
        f"{e.asset_key.to_user_string()}/{e.check_name}": "passed"
        if e.passed
        else f"failed:{e.severity.value}"
        for e in result.get_asset_check_evaluations()
    }


def evaluate_late_rows_sensor(resources: dict[str, Any], instance: dg.DagsterInstance) -> Any:
    names = ("kafka", "mongo", "influx")
    context = dg.build_sensor_context(
        instance=instance, resources={name: resources[name] for name in names}
    )
    return late_rows_sensor(context)


def test_late_rows_of_a_live_run_fail_the_check_until_dagster_repairs_them(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """A continuous run gets the sample's second day, then its first: the late_rows_repaired
    check fails (ERROR) while the ledger holds them, `backfill_job` (what the late-rows sensor
    launches) repairs them, then every reconciliation check passes and both sinks are exact.
    Last, another late replay through Dagster's own `ohlcv_job` is repaired in the same run."""
    rows = read_csv_rows(SAMPLE)
    day_1 = [row for row in rows if row["t"] < DAY_2_MS]
    day_2 = [row for row in rows if row["t"] >= DAY_2_MS]
    resources = resources_for(local_stack, unique_name, tmp_path / "state")
    defs = build_definitions(resources)
    job = dataclasses.replace(
        job_for(local_stack, unique_name, resources["spark"].checkpoint_dir(unique_name)),
        trigger="1 second",
    )
    ensure_topic(local_stack.kafka.bootstrap_servers, unique_name, partitions=3)
    process = start_job(job)
    try:
        replay_file(local_stack, write_csv_rows(tmp_path / "day2.csv", day_2[:-600]), unique_name)
        wait_until_committed(job, process)
        replay_file(local_stack, write_csv_rows(tmp_path / "day1.csv", day_1), unique_name)
        wait_until_committed(job, process)
    finally:
        stop(process)

    with dg.DagsterInstance.ephemeral() as instance:
        before = check_statuses(defs, instance)
        assert before["mongo_realtime/late_rows_repaired"] == "failed:ERROR"
        assert before["influx_ohlcv/late_rows_repaired"] == "failed:ERROR"
        assert backfills_requested(evaluate_late_rows_sensor(resources, instance)) == ["candles"]

        backfill = defs.resolve_job_def("backfill_job").execute_in_process(instance=instance)
        assert backfill.success
        assert isinstance(evaluate_late_rows_sensor(resources, instance), dg.SkipReason)

        after = check_statuses(defs, instance)
        for name in ("sinks_agree", "late_rows_repaired", "no_gaps"):
            assert after[f"mongo_realtime/{name}"] == after[f"influx_ohlcv/{name}"] == "passed"
        assert_sinks_match(
            local_stack, unique_name, expected_aggregates(day_1 + day_2[:-600], WINDOWS)
        )

        # The last 600 minutes of day 2 through Dagster, then day 1 again with other closes.
        replay_file(local_stack, write_csv_rows(tmp_path / "end.csv", day_2[-600:]), unique_name)
        changed = [{**row, "close": row["low"]} for row in day_1[:300]]
        replay_file(local_stack, write_csv_rows(tmp_path / "again.csv", changed), unique_name)
        ohlcv = defs.resolve_job_def("ohlcv_job").execute_in_process(instance=instance)
        assert ohlcv.success
        evaluations = {
            (e.asset_key.to_user_string(), e.check_name): e.passed
            for e in ohlcv.get_asset_check_evaluations()
        }
        assert evaluations[("mongo_realtime", "late_rows_repaired")] is True
        materialized = ohlcv.get_asset_materialization_events()[0].materialization.metadata
        assert materialized["late_rows"].value == len(changed)
        repair: dict[str, Any] = materialized["late_repair"].value  # type: ignore[assignment]
        assert repair["late_entries_repaired"] >= 1
    expected = expected_aggregates(day_2[:-600] + day_1 + day_2[-600:] + changed, WINDOWS)
    assert_sinks_match(local_stack, unique_name, expected)


def test_a_field_that_becomes_null_is_null_in_both_sinks(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """Ten minutes of BTCUSDT with quote volume and trades, then minute 5 delivered again
    without them: the re-emitted windows have no quote volume and no trades in MongoDB, and
    InfluxDB (which keeps a field's old value when a point is written again) reads the same."""
    header = "open_time_ms,symbol,open,high,low,close,volume"
    first = tmp_path / "first.csv"
    first.write_text(
        f"{header},quote_volume,trades\n"
        + "".join(f"{T0_MS + 60_000 * m},BTCUSDT,10,12,9,11,5,55,3\n" for m in range(10))
    )
    again = tmp_path / "again.csv"
    again.write_text(f"{header}\n{T0_MS + 5 * 60_000},BTCUSDT,10,12,9,11,5\n")
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=("5m", "1h"))
    for path in (first, again):
        replay_file(local_stack, path, unique_name)
        result = run_job(job)
        assert result.returncode == 0, result.stderr[-3000:]

    mongo, _ = read_mongo(mongo_of(local_stack, unique_name))
    influx = read_influx(dataclasses.replace(local_stack.influx, measurement=unique_name))
    assert mismatches(mongo, influx) == []
    touched = [("file", "BTCUSDT", "5m", T0_MS + 5 * 60_000), ("file", "BTCUSDT", "1h", T0_MS)]
    for key in touched:
        assert (mongo[key]["quote_volume"], mongo[key]["trades"]) == (None, None)
        assert mongo[key]["vwap"] == pytest.approx((12 + 9 + 11) / 3, rel=1e-12)
    untouched = ("file", "BTCUSDT", "5m", T0_MS)
    assert (influx[untouched]["quote_volume"], influx[untouched]["trades"]) == (275.0, 15)
