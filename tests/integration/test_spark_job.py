"""The OHLCV job end to end on the real stack: every document in MongoDB and every point in
InfluxDB equals aggregates computed independently from the CSV (tests/expected_ohlcv.py)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.settings import REPO_ROOT, Settings
from tests.conftest import SHARED_DATA
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.integration.job_helpers import (
    influx_of,
    job_for,
    mongo_of,
    replay_file,
    run_job,
    start_job,
)

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
SHARED_Q1 = SHARED_DATA / "binance_spot_15m_10sym_2025Q1.csv.gz"
WINDOWS = ("5m", "1h", "4h")


def assert_sinks_match(settings: Settings, name: str, expected: dict) -> None:
    mongo, bad_ids = read_mongo(mongo_of(settings, name))
    assert bad_ids == []
    assert mismatches(expected, mongo)[:10] == []
    influx = read_influx(influx_of(settings, name))
    assert mismatches(expected, influx)[:10] == []


def test_sample_end_to_end_then_rerun_leaves_both_sinks_exact(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    replay_file(local_stack, SAMPLE, unique_name)
    expected = expected_aggregates(read_csv_rows(SAMPLE), WINDOWS)

    first = run_job(job_for(local_stack, unique_name, tmp_path / "ckpt"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)

    # Everything again from a new checkpoint: every window is replaced (the connector's
    # replace-upsert of existing documents), nothing is added.
    again = run_job(job_for(local_stack, unique_name, tmp_path / "ckpt-again"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)

    # Same checkpoint: nothing new to process, sinks unchanged.
    resumed = run_job(job_for(local_stack, unique_name, tmp_path / "ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)


def test_real_binance_klines_end_to_end(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    if not SHARED_Q1.exists():
        pytest.skip(f"{SHARED_Q1} is not present")
    symbols = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    end_ms = 1737072000000  # 2025-01-17T00:00Z: 18 days x 96 candles x 3 symbols
    summary = replay_file(
        local_stack, SHARED_Q1, unique_name, symbols=frozenset(symbols), end_ms=end_ms
    )
    rows = read_csv_rows(SHARED_Q1, symbols, end_ms)
    assert summary.sent == len(rows) == 18 * 96 * 3

    result = run_job(job_for(local_stack, unique_name, tmp_path / "ckpt"))

    assert result.returncode == 0, result.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected_aggregates(rows, WINDOWS))


def test_failed_sink_fails_the_job_and_a_restart_completes_it(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """InfluxDB unreachable: the batch fails, the job exits non-zero, the checkpoint does not
    advance; with InfluxDB back the same checkpoint finishes and both sinks are exact."""
    replay_file(local_stack, SAMPLE, unique_name)
    expected = expected_aggregates(read_csv_rows(SAMPLE), ("1h",))
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=("1h",))
    nowhere = dataclasses.replace(job.influx, url="http://127.0.0.1:9")

    failed = run_job(dataclasses.replace(job, influx=nowhere))
    assert failed.returncode != 0
    assert "FOREACH_BATCH_USER_FUNCTION_ERROR" in failed.stderr + failed.stdout

    restarted = run_job(job)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)


def test_killed_mid_stream_then_restarted_ends_exact(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """SIGKILL after some micro-batches committed; the restart resumes from the checkpoint and
    both sinks end equal to the expected aggregates: nothing lost, nothing counted twice."""
    replay_file(local_stack, SAMPLE, unique_name)
    expected = expected_aggregates(read_csv_rows(SAMPLE), ("5m",))
    checkpoint = tmp_path / "ckpt"
    capped = job_for(
        local_stack, unique_name, checkpoint, windows=("5m",), max_offsets_per_trigger=600
    )
    job = start_job(capped, start_new_session=True)
    commits = checkpoint / "ohlcv_5m" / "commits"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(commits.glob("[0-9]*"))) < 2:
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    committed = len(list(commits.glob("[0-9]*")))
    assert 2 <= committed < 15, "the job should have been killed mid-stream"
    mongo, _ = read_mongo(mongo_of(local_stack, unique_name))
    assert 0 < len(mongo) < len(expected)

    restarted = run_job(dataclasses.replace(capped, max_offsets_per_trigger=None))

    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)
