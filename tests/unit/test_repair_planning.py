"""What a repair reads and decides, on values written out by hand: per-symbol ranges, chunks of
whole windows, what retention deleted, ledger ids across checkpoint resets, the checkpoint's
reset advice and its one-driver lock."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from crypto_pipeline.candle_rules import FUTURE_EVENT_TIME
from crypto_pipeline.formats.late_ledger import REFUSED, LateEntry, entry_id, repair_ranges
from crypto_pipeline.replay.input_files import read_rows
from crypto_pipeline.replay.producer import ReplayOptions, beyond_clock, last_event_ms
from crypto_pipeline.settings import Settings
from spark_jobs.backfill import (
    WINDOW_KEY,
    chunk_span_ms,
    chunks,
    deleted_by_retention,
    none_recomputed,
    refused_reason,
    widened,
    windows_in_scope,
)
from spark_jobs.interface.config import TRADES, JobConfig
from spark_jobs.main import CheckpointMismatch, check_checkpoint, lock_checkpoint
from spark_jobs.open_windows import WindowLength

MIN = 60_000
HOUR = 60 * MIN
FIVE, ONE_HOUR, FOUR_HOURS = (
    WindowLength("5m", 5 * MIN),
    WindowLength("1h", HOUR),
    WindowLength("4h", 4 * HOUR),
)


def test_each_symbol_is_repaired_over_its_own_ranges_not_one_range_across_all() -> None:
    """Before, every entry was merged into one range across all their symbols: a late minute of
    2024 and one of 2026 made a backfill of two years for both."""
    entries = [
        LateEntry("BTCUSDT", 1, 10 * MIN, 12 * MIN),
        LateEntry("BTCUSDT", 2, 12 * MIN, 20 * MIN),  # overlaps: merged
        LateEntry("BTCUSDT", 1, 900 * MIN, 900 * MIN),
        LateEntry("ETHUSDT", 1, 5 * MIN, 5 * MIN),
    ]
    assert repair_ranges(entries) == {
        "BTCUSDT": [(10 * MIN, 20 * MIN + 1), (900 * MIN, 900 * MIN + 1)],
        "ETHUSDT": [(5 * MIN, 5 * MIN + 1)],
    }


def test_ledger_ids_differ_after_a_checkpoint_reset() -> None:
    """Batch ids start again on a reset checkpoint; before, its new late rows got the ids of old
    repaired entries and looked repaired."""
    entry = LateEntry("BTCUSDT", 1, 10 * MIN, 10 * MIN)
    assert entry_id("t", "a1", 3, entry) != entry_id("t", "b2", 3, entry)
    assert entry_id("t", "a1", 3, entry) == entry_id("t", "a1", 3, entry)  # a retried batch
    refused = dataclasses.replace(entry, kind=REFUSED)
    assert entry_id("t", "a1", 3, entry) != entry_id("t", "a1", 3, refused)


def test_a_backfill_goes_through_its_range_in_chunks_of_whole_windows() -> None:
    windows = [FIVE, ONE_HOUR, FOUR_HOURS]
    span = chunk_span_ms(windows)
    assert span == 4 * HOUR
    assert chunk_span_ms([FIVE, WindowLength("3h", 3 * HOUR), FOUR_HOURS]) == 12 * HOUR
    assert widened(
        {"X": [(5 * HOUR + 7 * MIN, 5 * HOUR + 8 * MIN), (6 * HOUR, 9 * HOUR)]}, span
    ) == {"X": [(4 * HOUR, 12 * HOUR)]}
    # Buckets (number, candles): runs of at most 500; a bigger bucket is a chunk of its own.
    assert chunks([(3, 200), (1, 200), (2, 200), (4, 900), (5, 10)], 500) == [
        (1, 2),
        (3, 3),
        (4, 4),
        (5, 5),
    ]


def test_only_the_windows_that_overlap_a_symbols_range_are_recomputed() -> None:
    times = [0, 4 * MIN, 6 * MIN, 59 * MIN, 61 * MIN]
    candles = pd.DataFrame(
        {
            "symbol": ["X"] * 5 + ["Y"],
            "event_time_ms": [*times, 6 * MIN],
            "partition": 0,
            "offset": range(6),
            "open": 1.0,
            "high": 2.0,
            "low": 1.0,
            "close": 1.5,
            "volume": 1.0,
            "quote_volume": 1.5,
            "trades": 1.0,
        }
    )
    computed = windows_in_scope(candles, [FIVE, ONE_HOUR], {"X": [(6 * MIN, 6 * MIN + 1)]})
    keys = zip(computed["symbol"], computed["window"], computed["window_start_ms"], strict=True)
    assert sorted(keys) == [
        ("X", "1h", 0),
        ("X", "5m", 5 * MIN),
    ]
    hour = computed[computed["window"] == "1h"].iloc[0]
    assert hour["rows"] == 4  # the whole hour, not only the range's candle


def test_late_candles_deleted_by_retention_make_their_entry_unrepairable() -> None:
    """Before, a backfill that found no candles wrote nothing and marked the entries repaired."""
    entry = LateEntry("BTCUSDT", 2, 10 * MIN, 11 * MIN, {"1": [40, 41]})
    assert deleted_by_retention(entry, {0: 0, 1: 40}) is None
    reason = deleted_by_retention(entry, {0: 0, 1: 41})
    assert reason is not None and "retention" in reason and "offset 41" in reason


def test_a_refused_window_makes_the_entries_inside_it_unrepairable() -> None:
    refused = pd.DataFrame(
        {
            "symbol": ["BTCUSDT"],
            "window": ["1h"],
            "window_start_ms": [0],
            "window_end_ms": [HOUR],
        }
    )
    inside = LateEntry("BTCUSDT", 1, 10 * MIN, 10 * MIN)
    assert "1 windows (first 1h at 1970-01-01T00:00:00+00:00)" in str(
        refused_reason(inside, refused)
    )
    assert refused_reason(dataclasses.replace(inside, series="ETHUSDT"), refused) is None
    later = LateEntry("BTCUSDT", 1, 2 * HOUR, 2 * HOUR)
    assert refused_reason(later, refused) is None


def job(checkpoint: Path, **changes: object) -> JobConfig:
    config = JobConfig.from_settings(Settings.from_env({}), checkpoint_dir=str(checkpoint))
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def test_a_checkpoint_has_an_id_and_its_mismatch_says_what_a_reset_really_does(
    tmp_path: Path,
) -> None:
    root, first_id = check_checkpoint(job(tmp_path / "ckpt"))
    assert check_checkpoint(job(tmp_path / "ckpt")) == (root, first_id)  # kept across runs
    assert check_checkpoint(job(tmp_path / "other"))[1] != first_id  # a reset: a new one
    with pytest.raises(CheckpointMismatch) as mismatch:
        check_checkpoint(job(tmp_path / "ckpt", windows=("1h",)))
    message = str(mismatch.value)
    # Before: "delete it (the sinks are idempotent...)", after which partial windows were
    # rewritten at the retention boundary.
    assert "idempotent" not in message
    assert "no window is overwritten with one computed from less input" in message


def test_a_trades_checkpoint_whose_ids_were_in_sparks_state_is_refused(tmp_path: Path) -> None:
    """The trades job kept the ids each series counted in Spark's state before; this job keeps
    them in its own state, so an older checkpoint would forget every id: refused, with the
    reset's advice."""
    older = tmp_path / "ckpt"
    older.mkdir()
    (older / "job.json").write_text(
        '{"windows": ["1s", "1m"], "watermark": "30 seconds", "series": "exchange:symbol"}'
    )
    trades = job(older, source=TRADES, windows=("1s", "1m"), watermark="30 seconds")
    with pytest.raises(CheckpointMismatch, match="no window is overwritten"):
        check_checkpoint(trades)
    fresh = dataclasses.replace(trades, checkpoint_dir=str(tmp_path / "fresh"))
    assert check_checkpoint(fresh) == check_checkpoint(fresh)


def test_a_second_driver_on_the_same_checkpoint_is_refused(tmp_path: Path) -> None:
    held = lock_checkpoint(tmp_path)
    try:
        with pytest.raises(CheckpointMismatch, match="in use by pid"):
            lock_checkpoint(tmp_path)
    finally:
        held.close()
    lock_checkpoint(tmp_path).close()  # free again once the first driver is gone


def test_an_entry_whose_range_the_topic_no_longer_holds_is_unrepairable() -> None:
    """A refused window's entry carries no offsets: when retention deleted all of its candles,
    nothing is recomputed, and that is the reason given (it was marked repaired before)."""
    entry = LateEntry("BTCUSDT", 60, 0, HOUR - 1, kind=REFUSED)
    nothing = pd.DataFrame({name: [] for name in WINDOW_KEY})
    assert "none of its candles" in str(none_recomputed(entry, nothing))
    hour = pd.DataFrame(
        {"symbol": ["BTCUSDT"], "window": ["1h"], "window_start_ms": [0], "window_end_ms": [HOUR]}
    )
    assert none_recomputed(entry, hour) is None


def test_a_future_dated_line_neither_is_sent_nor_sets_where_a_rebased_replay_ends(
    tmp_path: Path,
) -> None:
    """Before, a 2095 line counted as the file's last event: `--rebase-now` shifted the whole
    file 70 years into the past."""
    path = tmp_path / "with-2095.csv"
    path.write_text(
        "open_time_ms,symbol,open,high,low,close,volume\n"
        "1735689600000,BTCUSDT,1,2,0.5,1,1\n"
        "3944678400000,BTCUSDT,1,2,0.5,1,1\n"
        "1735689660000,BTCUSDT,1,2,0.5,1,1\n"
    )
    options = ReplayOptions(path=path, topic="t", rebase_now=True)
    now = 1_764_892_800_000  # 2025-12-05
    assert last_event_ms(options, now) == 1_735_689_660_000
    rejected = [beyond_clock(options, line, now) for line in read_rows(path)]
    assert [line.reason for line in rejected] == [None, FUTURE_EVENT_TIME, None]
