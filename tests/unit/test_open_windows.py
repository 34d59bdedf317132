"""The windowed step on hand-made candles, every expected value written out by hand; and on random
batches of many series, against the independent reference (tests/expected_ohlcv.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from spark_jobs.open_windows import CANDLE_SCHEMA, SymbolState, WindowLength, advance, advance_all
from spark_jobs.state_store import StateFileError, StateStore, StateView
from tests.expected_ohlcv import expected_aggregates, mismatches

MIN = 60_000
FIVE = WindowLength("5m", 5 * MIN)
HOUR = WindowLength("1h", 60 * MIN)
DELAY = 10 * MIN


def candles(*rows: tuple[Any, ...]) -> pd.DataFrame:
    """(minute, offset, open, high, low, close, volume[, quote_volume[, trades]])"""
    records = []
    for minute, offset, o, h, lo, c, v, *rest in rows:
        quote_volume = rest[0] if rest else None
        trades = rest[1] if len(rest) > 1 else None
        records.append(
            {
                "event_time_ms": int(minute * MIN),
                "partition": 0,
                "offset": offset,
                "open": float(o),
                "high": float(h),
                "low": float(lo),
                "close": float(c),
                "volume": float(v),
                "quote_volume": None if quote_volume is None else float(quote_volume),
                "trades": None if trades is None else float(trades),
            }
        )
    if not records:
        return CANDLE_SCHEMA.empty_table().to_pandas()
    return pd.DataFrame.from_records(records).astype({"quote_volume": float, "trades": float})


def held(*rows: tuple[Any, ...]) -> pa.Table:
    """A state's candles: `candles` as the state keeps them."""
    return pa.Table.from_pandas(candles(*rows), schema=CANDLE_SCHEMA, preserve_index=False)


def by_window(aggregates: pd.DataFrame) -> dict[tuple[str, int], dict[str, Any]]:
    return {
        (row["window"], row["window_start_ms"] // MIN): row for row in aggregates.to_dict("records")
    }


def test_out_of_order_and_duplicate_candles_in_one_batch() -> None:
    step = advance(
        SymbolState.empty(),
        candles(
            (0, 0, 10, 12, 9, 11, 1, 10, 1),
            (2, 1, 11, 13, 10, 12, 2, 24, 2),
            (1, 2, 10.5, 11.5, 10, 11, 1, 11, 1),  # out of order
            (2, 3, 11, 13, 10, 12.5, 2, 25, 2),  # the same event time again: this copy wins
        ),
        [FIVE],
        DELAY,
    )
    (window,) = step.aggregates.to_dict("records")
    assert (window["window"], window["window_start_ms"], window["window_end_ms"]) == (
        "5m",
        0,
        5 * MIN,
    )
    assert (window["open"], window["high"], window["low"], window["close"]) == (10, 13, 9, 12.5)
    assert (window["volume"], window["quote_volume"], window["trades"]) == (4, 46, 4)
    assert window["vwap"] == 46 / 4
    assert (window["rows"], window["first_event_ms"], window["last_event_ms"]) == (3, 0, 2 * MIN)
    assert step.late.empty
    assert (step.state.max_event_ms, step.state.watermark_ms) == (2 * MIN, 2 * MIN - DELAY)


def test_every_window_length_from_one_state_aligned_to_the_epoch() -> None:
    step = advance(
        SymbolState.empty(),
        candles((58, 0, 1, 2, 1, 2, 1, 2, 1), (61, 1, 2, 3, 2, 3, 1, 3, 1)),
        [FIVE, HOUR],
        DELAY,
    )
    assert sorted(by_window(step.aggregates)) == [("1h", 0), ("1h", 60), ("5m", 55), ("5m", 60)]


def test_a_later_batch_updates_an_open_window_and_drops_a_late_candle() -> None:
    first = advance(SymbolState.empty(), candles((0, 0, 10, 11, 9, 10, 1, 10, 1)), [FIVE], DELAY)
    second = advance(
        first.state,
        candles(
            (3, 1, 10, 14, 10, 13, 1, 13, 1),  # same window, still open: updated
            (30, 2, 20, 21, 19, 20, 1, 20, 1),  # moves the watermark to minute 20
        ),
        [FIVE],
        DELAY,
    )
    windows = by_window(second.aggregates)
    assert sorted(windows) == [("5m", 0), ("5m", 30)]
    assert (windows[("5m", 0)]["high"], windows[("5m", 0)]["close"]) == (14, 13)
    assert windows[("5m", 0)]["rows"] == 2
    third = advance(
        second.state,
        candles((4, 3, 99, 99, 99, 99, 100, 9900, 9), (31, 4, 20, 22, 20, 21, 2, 42, 3)),
        [FIVE],
        DELAY,
    )
    assert list(third.late["event_time_ms"]) == [4 * MIN]  # before the watermark: late
    (window,) = third.aggregates.to_dict("records")
    assert (window["window_start_ms"], window["volume"], window["rows"]) == (30 * MIN, 3, 2)


def test_vwap_falls_back_to_the_typical_price_and_missing_values_stay_null() -> None:
    step = advance(
        SymbolState.empty(),
        candles((0, 0, 10, 12, 9, 11, 1), (1, 1, 11, 14, 11, 13, 3, None, 5)),
        [FIVE],
        DELAY,
    )
    (window,) = step.aggregates.to_dict("records")
    # typical prices (12+9+11)/3 = 32/3 and (14+11+13)/3 = 38/3; volumes 1 and 3.
    assert window["vwap"] == pytest.approx((32 / 3 * 1 + 38 / 3 * 3) / 4, rel=1e-12)
    assert pd.isna(window["quote_volume"]) and pd.isna(window["trades"])


def test_zero_volume_has_no_vwap() -> None:
    step = advance(SymbolState.empty(), candles((0, 0, 1, 1, 1, 1, 0, 0, 0)), [FIVE], DELAY)
    (window,) = step.aggregates.to_dict("records")
    assert pd.isna(window["vwap"])
    assert (window["volume"], window["quote_volume"], window["trades"]) == (0, 0, 0)


def test_the_state_keeps_only_windows_that_can_still_change() -> None:
    hour = advance(
        SymbolState.empty(),
        candles(*[(m, m, 1, 2, 1, 1, 1, 1, 1) for m in range(60)]),
        [FIVE, HOUR],
        DELAY,
    )
    # Watermark 49: every candle's hour [0, 60) is still open.
    assert hour.state.candles.num_rows == 60
    later = advance(
        hour.state,
        candles(*[(m, m, 1, 2, 1, 1, 1, 1, 1) for m in range(60, 75)]),
        [FIVE, HOUR],
        DELAY,
    )
    # Watermark 64: hour [0, 60) closed, its candles gone; [60, 75) kept.
    assert [t // MIN for t in later.state.candles["event_time_ms"].to_pylist()] == list(
        range(60, 75)
    )


def test_a_batch_of_several_symbols_advances_each_from_its_own_state() -> None:
    first = advance_all(
        {},
        candles((0, 0, 1, 2, 1, 2, 1), (30, 1, 1, 2, 1, 2, 1)).assign(symbol=["A", "B"]),
        [FIVE],
        DELAY,
    )
    # B's watermark is 20, A's 0-10: a candle at minute 5 is late for B only.
    second = advance_all(
        first.states,
        candles((5, 2, 1, 2, 1, 2, 1), (5, 3, 1, 2, 1, 2, 1)).assign(symbol=["A", "B"]),
        [FIVE],
        DELAY,
    )
    assert second.touched == ("A", "B")
    assert list(second.aggregates["symbol"]) == ["A"]
    late = {
        symbol: list(candles["event_time_ms"] // MIN) for symbol, candles in second.late.items()
    }
    assert late == {"B": [5]}
    assert set(second.states) == {"A", "B"}


def assert_same_state(actual: SymbolState, expected: SymbolState) -> None:
    marks = (expected.watermark_ms, expected.max_event_ms)
    assert (actual.watermark_ms, actual.max_event_ms) == marks
    # As frames: NaN equals NaN there, and a null read from a file is NaN.
    pd.testing.assert_frame_equal(actual.candles.to_pandas(), expected.candles.to_pandas())


def assert_same_states(loaded: StateView, states: dict[str, SymbolState]) -> None:
    assert set(loaded) == set(states)
    for symbol, state in states.items():
        assert_same_state(loaded[symbol], state)


def test_the_state_store_keeps_two_versions_and_starts_a_batch_from_the_one_before(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state")
    assert dict(store.load(0)) == {}
    states = {
        "A": SymbolState(-DELAY, 0, held((0, 0, 10, 12, 9, 11, 1))),
        "B": SymbolState(5 * MIN, 15 * MIN, held((15, 1, 11, 14, 11, 13, 3, 39.5, 5))),
        "C": SymbolState(MIN, 11 * MIN, held()),  # a watermark, no open window
    }
    for batch_id in (0, 1, 2):  # every symbol changes: each version is a whole one
        assert store.save(batch_id, store.load(batch_id), states) > 0
        store.prune(batch_id)
    assert sorted(path.name for path in (tmp_path / "state").iterdir()) == ["1.arrow", "2.arrow"]
    assert_same_states(StateStore(tmp_path / "state").load(2), states)  # batch 2 run again


def test_a_batch_of_few_symbols_writes_only_theirs_and_a_restart_reads_them_all(
    tmp_path: Path,
) -> None:
    """Forty idle symbols and one busy one: the busy one's batches write deltas of one symbol
    (small files), a fresh store reads base + deltas back to the same states, and a batch run
    again after a failure starts from the version before it."""
    idle = {
        f"S{n}": SymbolState(n * MIN, n * MIN + DELAY, held((n, n, 10, 12, 9, 11, 1)))
        for n in range(40)
    }
    store = StateStore(tmp_path / "state")
    base_bytes = store.save(0, store.load(0), idle)
    busy: dict[str, SymbolState] = {}
    for batch_id in (1, 2, 3):
        busy = {"BUSY": SymbolState(batch_id, batch_id, held((batch_id, 100, 1, 2, 1, 2, 1)))}
        assert store.save(batch_id, store.load(batch_id), busy) < base_bytes
        store.prune(batch_id)
    assert sorted(path.name for path in (tmp_path / "state").iterdir()) == [
        f"{n}.arrow" for n in range(4)
    ]
    restarted = StateStore(tmp_path / "state").load(4)
    assert (len(restarted), restarted.candles) == (41, 41)
    assert_same_states(restarted, {**idle, **busy})
    before_last = StateStore(tmp_path / "state").load(3)
    assert before_last["BUSY"].max_event_ms == 2


def test_a_damaged_state_file_is_one_clear_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.save(0, store.load(0), {"A": SymbolState(0, 0, held((0, 0, 1, 2, 1, 2, 1)))})
    (tmp_path / "state" / "0.arrow").write_bytes(b"ARROW1 truncated")
    with pytest.raises(StateFileError, match=r"cannot be read.*move .* aside"):
        StateStore(tmp_path / "state").load(1)


def test_a_candle_in_a_closed_window_is_late_but_counts_in_its_open_windows() -> None:
    first = advance(
        SymbolState.empty(),
        candles(*[(m, m, 1, 2, 1, 1, 1, 1, 1) for m in range(40)]),
        [FIVE, HOUR],
        DELAY,
    )
    # Watermark 29: the 5m window [10, 15) is closed, the hour [0, 60) open.
    second = advance(first.state, candles((12.5, 99, 1, 7, 1, 1, 1, 1, 1)), [FIVE, HOUR], DELAY)
    assert list(second.late["event_time_ms"]) == [12.5 * MIN]
    (hour,) = second.aggregates.to_dict("records")
    assert (hour["window"], hour["window_start_ms"], hour["rows"], hour["high"]) == (
        "1h",
        0,
        41,
        7,
    )
    # A candle whose every window is closed changes nothing.
    third = advance(
        advance(second.state, candles((75, 100, 1, 2, 1, 1, 1, 1, 1)), [FIVE, HOUR], DELAY).state,
        candles((30, 101, 1, 9, 1, 1, 1, 1, 1)),
        [FIVE, HOUR],
        DELAY,
    )
    assert third.aggregates.empty and list(third.late["event_time_ms"]) == [30 * MIN]


def test_each_window_carries_the_highest_offset_of_its_candles_per_partition() -> None:
    """The version of a window's input: per partition the highest offset among its candles (a
    copy delivered again at a later offset raises it), for one partition and for two."""
    arrivals = candles((1, 7, 1, 2, 1, 2, 1), (2, 9, 1, 2, 1, 2, 1), (6, 4, 1, 2, 1, 2, 1))
    step = advance(SymbolState.empty(), arrivals, [FIVE], DELAY)
    assert list(step.aggregates["input_offsets"]) == [{"0": 9}, {"0": 4}]

    again = candles((1, 12, 1, 2, 1, 2, 1)).assign(partition=2)
    later = advance(step.state, again, [FIVE], DELAY)
    assert list(later.aggregates["input_offsets"]) == [{"0": 9, "2": 12}]


def test_a_base_from_an_older_jobs_state_file_and_changed_symbols_reads_back(
    tmp_path: Path,
) -> None:
    """The state file of the job before deltas (integer columns as floats, no base in its
    metadata), then a batch that changes most of the state: the whole version written from
    the old file's slices and the new states reads back to the same states."""
    old = candles((0, 0, 10, 12, 9, 11, 1), (1, 1, 10, 12, 9, 11, 1)).astype(
        {"partition": "float64", "offset": "float64"}
    )
    table = pa.Table.from_pandas(old.assign(symbol="OLD"), preserve_index=False)
    marks = {"OLD": [-DELAY, MIN], "IDLE": [0, DELAY]}
    folder = tmp_path / "state"
    folder.mkdir()
    table = table.replace_schema_metadata({b"watermarks": json.dumps(marks).encode()})
    with pa.OSFile(str(folder / "0.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)

    store = StateStore(folder)
    new = {"NEW": SymbolState(0, 9 * MIN, held(*[(m, 10 + m, 1, 2, 1, 2, 1) for m in range(9)]))}
    store.save(1, store.load(1), new)
    restarted = StateStore(folder).load(2)
    assert_same_states(
        restarted,
        {
            "OLD": SymbolState(
                -DELAY, MIN, held((0, 0, 10, 12, 9, 11, 1), (1, 1, 10, 12, 9, 11, 1))
            ),
            "IDLE": SymbolState(0, DELAY, held()),
            **new,
        },
    )


def random_deliveries(series: int, minutes: int, seed: int) -> pd.DataFrame:
    """Candles of `series` series in a shuffled delivery order, a fifth delivered twice (the later
    copy with other values), some without quote volume or trades; offsets in delivery order."""
    rng = np.random.default_rng(seed)
    names = np.repeat([f"ex{n % 3}:S{n}" for n in range(series)], minutes)
    times = np.tile(np.arange(minutes) * MIN, series)
    again = rng.random(len(times)) < 0.2
    names, times = np.r_[names, names[again]], np.r_[times, times[again]]
    count = len(times)
    low = rng.uniform(1, 100, count)
    frame = pd.DataFrame(
        {
            "symbol": names,
            "event_time_ms": times,
            "partition": 0,
            "open": low * rng.uniform(1, 1.01, count),
            "high": low * 1.02,
            "low": low,
            "close": low * rng.uniform(1, 1.01, count),
            "volume": rng.uniform(0, 5, count).round(3),
            "quote_volume": np.where(rng.random(count) < 0.05, np.nan, rng.uniform(0, 500, count)),
            "trades": np.where(rng.random(count) < 0.05, np.nan, rng.integers(0, 50, count)),
        }
    )
    order = np.r_[rng.permutation(count - again.sum()), np.arange(count - again.sum(), count)]
    return frame.iloc[order].assign(offset=np.arange(count)).reset_index(drop=True)


def batches_of(deliveries: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
    cuts = np.sort(np.random.default_rng(seed).choice(len(deliveries) - 1, 14, replace=False))
    bounds = [0, *(cuts + 1).tolist(), len(deliveries)]
    return [deliveries.iloc[start:stop] for start, stop in itertools.pairwise(bounds)]


def test_every_window_of_many_series_in_random_batches_equals_the_reference() -> None:
    """Thirty series in fifteen batches, shuffled and re-delivered, nothing late: each window's
    last emission equals the independent reference of every candle delivered."""
    deliveries = random_deliveries(30, 130, seed=5)
    states: Mapping[str, SymbolState] = {}
    emitted: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for batch in batches_of(deliveries, seed=6):
        step = advance_all(states, batch, [FIVE, HOUR], delay_ms=10 * 24 * 60 * MIN)
        states = {**states, **step.states}
        assert not step.late
        for window in step.aggregates.to_dict("records"):
            exchange, symbol = window["symbol"].split(":")
            trades = window["trades"]
            window["trades"] = None if pd.isna(trades) else int(trades)
            for name in ("quote_volume", "vwap"):
                window[name] = None if pd.isna(window[name]) else window[name]
            emitted[(exchange, symbol, window["window"], window["window_start_ms"])] = window
    rows = [
        {
            "exchange": row["symbol"].split(":")[0],
            "symbol": row["symbol"].split(":")[1],
            "t": row["event_time_ms"],
            **{name: row[name] for name in ("open", "high", "low", "close", "volume")},
            "quote_volume": None if np.isnan(row["quote_volume"]) else row["quote_volume"],
            "trades": None if np.isnan(row["trades"]) else int(row["trades"]),
        }
        for row in deliveries.to_dict("records")
    ]
    expected = expected_aggregates(rows, ["5m", "1h"])
    assert len(expected) == 30 * (26 + 3)
    assert mismatches(expected, emitted) == []


def test_a_batch_of_many_series_steps_each_as_if_it_were_alone() -> None:
    """With late candles (a 10-minute delay, shuffled deliveries): stepping every series of each
    batch at once gives, per series, the windows, late candles and state of stepping it alone."""
    deliveries = random_deliveries(12, 90, seed=8)
    together: Mapping[str, SymbolState] = {}
    alone: dict[str, SymbolState] = {}
    late_rows = 0
    for batch in batches_of(deliveries, seed=9):
        step = advance_all(together, batch, [FIVE, HOUR], DELAY)
        together = {**together, **step.states}
        for name, own in batch.groupby("symbol"):
            single = advance(alone.get(str(name), SymbolState.empty()), own, [FIVE, HOUR], DELAY)
            alone[str(name)] = single.state
            mine = step.aggregates[step.aggregates["symbol"] == name].drop(columns="symbol")
            pd.testing.assert_frame_equal(
                mine.reset_index(drop=True), single.aggregates.reset_index(drop=True)
            )
            late = step.late.get(str(name), single.late.iloc[:0])
            pd.testing.assert_frame_equal(
                late.reset_index(drop=True), single.late.reset_index(drop=True), check_dtype=False
            )
            late_rows += len(late)
            assert_same_state(together[str(name)], single.state)
    assert late_rows > 0  # the case this test is for happened


def test_a_batch_without_candles_changes_nothing() -> None:
    """A micro-batch of dead letters only: no series, no windows, no late candles."""
    step = advance_all({"A": SymbolState.empty()}, candles().assign(symbol=[]), [FIVE], DELAY)
    assert (step.touched, step.states, step.late) == ((), {}, {})
    assert step.aggregates.empty and step.aggregates.columns[0] == "symbol"
