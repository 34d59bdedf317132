"""The OHLCV job end to end on the real stack: every document in MongoDB and every point in
InfluxDB equals aggregates computed independently from the CSV (tests/expected_ohlcv.py)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.settings import REPO_ROOT, Settings
from spark_jobs.interface.summary import read_summary
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
    """InfluxDB unreachable past the job's patience (5 s here): the batch fails, the job exits
    non-zero, the checkpoint does not advance; with InfluxDB back the same checkpoint finishes
    and both sinks are exact."""
    replay_file(local_stack, SAMPLE, unique_name)
    expected = expected_aggregates(read_csv_rows(SAMPLE), ("1h",))
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=("1h",))
    nowhere = dataclasses.replace(job.influx, url="http://127.0.0.1:9")

    failed = run_job(dataclasses.replace(job, influx=nowhere, sink_outage_patience_s=5))
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
    commits = checkpoint / "ohlcv" / "commits"
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


def test_a_checkpoint_of_the_previous_layout_is_a_one_line_error(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "ckpt"
    (checkpoint / "ohlcv_5m" / "commits").mkdir(parents=True)

    result = run_job(job_for(local_stack, unique_name, checkpoint), timeout_s=120)

    assert result.returncode == 2
    # What a reset does, truly: no longer "the sinks are idempotent" (issue 20).
    assert result.stderr.strip().splitlines() == [
        f"spark_jobs: error: {checkpoint} holds checkpoints of the previous layout; stop the job "
        f"and move {checkpoint} aside: a new checkpoint reads the topic again from "
        "--starting-offsets, and no window is overwritten with one computed from less input "
        "(windows whose candles the topic no longer holds keep their stored values; a window that "
        "would mix old and new input is refused and listed by the late_rows_repaired check)"
    ]


def test_other_windows_on_the_same_checkpoint_are_refused(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "job.json").write_text('{"windows": ["5m"], "watermark": "30 minutes"}')

    result = run_job(job_for(local_stack, unique_name, checkpoint, windows=("1h",)), 120)

    assert result.returncode == 2
    assert "was written with {'windows': ['5m'], 'watermark': '30 minutes'}" in result.stderr
    assert "Traceback" not in result.stderr


def write_csv_rows(path: Path, rows: list[dict]) -> Path:
    header = "open_time_ms,symbol,open,high,low,close,volume,quote_volume,trades"
    lines = [
        f"{r['t']},{r['symbol']},{r['open']!r},{r['high']!r},{r['low']!r},{r['close']!r},"
        f"{r['volume']!r},{r['quote_volume']!r},{r['trades']}"
        for r in rows
    ]
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def summary_of(result: subprocess.CompletedProcess[str]) -> dict:
    return read_summary(result.stderr)


def test_state_holds_only_open_windows_and_shrinks_once_the_watermark_passes(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """Windows 5m and 4h, watermark 30 minutes. Run 1: two hours of BTCUSDT, all in the open 4h
    window [00:00, 04:00): the state holds all 120 candles. Run 2 (same checkpoint): ten candles
    at 04:40..04:49 move the watermark to 04:19, past that window: its 120 candles leave the
    state, which keeps the 10 of [04:00, 08:00). Every aggregate stays exact."""
    rows = read_csv_rows(SAMPLE, {"BTCUSDT"})
    first, later = rows[:120], rows[280:290]
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=("5m", "4h"))

    replay_file(local_stack, write_csv_rows(tmp_path / "first.csv", first), unique_name)
    one = run_job(job)
    assert one.returncode == 0, one.stderr[-3000:]
    replay_file(local_stack, write_csv_rows(tmp_path / "later.csv", later), unique_name)
    two = run_job(job)
    assert two.returncode == 0, two.stderr[-3000:]

    before, after = summary_of(one)["state"], summary_of(two)["state"]
    assert (before["symbols"], before["candles"]) == (1, 120)
    assert (after["symbols"], after["candles"]) == (1, 10)
    assert after["bytes"] < before["bytes"]
    assert summary_of(two)["late_rows"] == 0
    assert_sinks_match(local_stack, unique_name, expected_aggregates(first + later, ("5m", "4h")))


def test_late_candles_are_counted_by_symbol_and_change_nothing(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """After ten hours of BTCUSDT and ETHUSDT, a file with BTCUSDT's first hour again (changed
    prices) and ETHUSDT's next hour: BTCUSDT's rows are late for its own watermark and are
    dropped, counted with their range; ETHUSDT's are not."""
    btc, eth = read_csv_rows(SAMPLE, {"BTCUSDT"}), read_csv_rows(SAMPLE, {"ETHUSDT"})
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=("5m", "1h"))
    replay_file(local_stack, write_csv_rows(tmp_path / "a.csv", btc[:600] + eth[:600]), unique_name)
    assert run_job(job).returncode == 0
    rewritten = [{**r, "close": r["low"]} for r in btc[:60]]
    replay_file(
        local_stack, write_csv_rows(tmp_path / "b.csv", rewritten + eth[600:660]), unique_name
    )
    result = run_job(job)
    assert result.returncode == 0, result.stderr[-3000:]

    summary = summary_of(result)
    assert summary["late_rows"] == 60
    assert summary["late_rows_by_symbol"] == {
        "file:BTCUSDT": {
            "rows": 60,
            "first_event_ms": btc[0]["t"],
            "last_event_ms": btc[59]["t"],
        }
    }
    expected = expected_aggregates(btc[:600] + eth[:660], ("5m", "1h"))
    assert_sinks_match(local_stack, unique_name, expected)
