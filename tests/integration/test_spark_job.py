"""The OHLCV job end to end on the real stack: every document in MongoDB and every point in
InfluxDB equals aggregates computed independently from the CSV (tests/expected_ohlcv.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.settings import REPO_ROOT, Settings
from tests.conftest import SHARED_DATA
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
SHARED_Q1 = SHARED_DATA / "binance_spot_15m_10sym_2025Q1.csv.gz"
WINDOWS = ("5m", "1h", "4h")


def run_job(
    settings: Settings, name: str, checkpoint: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """The job as it is launched: its own process, available-now, this test's names."""
    command = [sys.executable, "-m", "spark_jobs.main", "--trigger", "available-now"]
    args = ["--topic", name, "--mongo-database", name, "--measurement", name]
    return subprocess.run(
        [*command, *args, "--checkpoint-dir", str(checkpoint), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "STACK_DIR": str(settings.stack_dir)},
    )


def assert_sinks_match(settings: Settings, name: str, expected: dict) -> None:
    mongo, bad_ids = read_mongo(settings.mongo_uri, name, settings.mongo_collection)
    assert bad_ids == []
    assert mismatches(expected, mongo)[:10] == []
    influx = read_influx(settings, name)
    assert mismatches(expected, influx)[:10] == []


def test_sample_end_to_end_then_rerun_leaves_both_sinks_exact(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    replay(ReplayOptions(path=SAMPLE, topic=unique_name), local_stack, show_progress=False)
    expected = expected_aggregates(read_csv_rows(SAMPLE), WINDOWS)

    first = run_job(local_stack, unique_name, tmp_path / "ckpt")
    assert first.returncode == 0, first.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)

    # Everything again from a new checkpoint: the same keys are overwritten, nothing is added.
    again = run_job(local_stack, unique_name, tmp_path / "ckpt-again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)

    # Same checkpoint: nothing new to process, sinks unchanged.
    resumed = run_job(local_stack, unique_name, tmp_path / "ckpt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)


def test_real_binance_klines_end_to_end(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    if not SHARED_Q1.exists():
        pytest.skip(f"{SHARED_Q1} is not present")
    symbols = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    end_ms = 1737072000000  # 2025-01-17T00:00Z: 18 days x 96 candles x 3 symbols
    options = ReplayOptions(
        path=SHARED_Q1, topic=unique_name, symbols=frozenset(symbols), end_ms=end_ms
    )
    summary = replay(options, local_stack, show_progress=False)
    rows = read_csv_rows(SHARED_Q1, symbols, end_ms)
    assert summary.sent == len(rows) == 18 * 96 * 3

    result = run_job(local_stack, unique_name, tmp_path / "ckpt")

    assert result.returncode == 0, result.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected_aggregates(rows, WINDOWS))


def test_failed_sink_fails_the_job_and_a_restart_completes_it(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """InfluxDB unreachable: the batch fails, the job exits non-zero, the checkpoint does not
    advance; with InfluxDB back the same checkpoint finishes and both sinks are exact."""
    replay(ReplayOptions(path=SAMPLE, topic=unique_name), local_stack, show_progress=False)
    expected = expected_aggregates(read_csv_rows(SAMPLE), ("1h",))
    env_backup = os.environ.get("INFLUXDB_URL")
    os.environ["INFLUXDB_URL"] = "http://127.0.0.1:9"
    try:
        failed = run_job(local_stack, unique_name, tmp_path / "ckpt", "--windows", "1h")
    finally:
        if env_backup is None:
            os.environ.pop("INFLUXDB_URL")
        else:
            os.environ["INFLUXDB_URL"] = env_backup
    assert failed.returncode != 0
    assert "FOREACH_BATCH_USER_FUNCTION_ERROR" in failed.stderr + failed.stdout

    restarted = run_job(local_stack, unique_name, tmp_path / "ckpt", "--windows", "1h")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)


def test_killed_mid_stream_then_restarted_ends_exact(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """SIGKILL after some micro-batches committed; the restart resumes from the checkpoint and
    both sinks end equal to the expected aggregates: nothing lost, nothing counted twice."""
    replay(ReplayOptions(path=SAMPLE, topic=unique_name), local_stack, show_progress=False)
    expected = expected_aggregates(read_csv_rows(SAMPLE), ("5m",))
    checkpoint = tmp_path / "ckpt"
    command = [sys.executable, "-m", "spark_jobs.main", "--trigger", "available-now"]
    args = ["--topic", unique_name, "--mongo-database", unique_name, "--measurement", unique_name]
    job = subprocess.Popen(
        [
            *command,
            *args,
            "--checkpoint-dir",
            str(checkpoint),
            "--windows",
            "5m",
            *["--max-offsets-per-trigger", "600"],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    commits = checkpoint / "ohlcv_5m" / "commits"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(commits.glob("[0-9]*"))) < 2:
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    committed = len(list(commits.glob("[0-9]*")))
    assert 2 <= committed < 15, "the job should have been killed mid-stream"
    mongo, _ = read_mongo(local_stack.mongo_uri, unique_name, local_stack.mongo_collection)
    assert 0 < len(mongo) < len(expected)

    restarted = run_job(local_stack, unique_name, checkpoint, "--windows", "5m")

    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert_sinks_match(local_stack, unique_name, expected)
