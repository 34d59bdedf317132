"""The state of one symbol: the candles of its windows that can still change, and its watermark.
Pure pandas, no Spark: `advance` takes the state and one micro-batch of the symbol's candles and
returns the new state, the aggregates of every window the batch touched, and the late candles.

Semantics (the same for every window length, computed from one state):
- windows are aligned to the epoch: [t - t % size, + size);
- a candle delivered twice counts once: per event time, the copy delivered last wins (the highest
  (partition, offset) within a batch, the later batch across batches);
- open and close come from the earliest and latest event time, never from arrival order;
- quote volume and trades are null when any candle of the window lacks them; VWAP is quote volume
  / volume, with the volume-weighted typical price (high + low + close) / 3 standing in for a
  missing quote volume, and null when the volume is zero;
- the watermark is per symbol: the newest event time seen minus the allowed delay, moved at the
  end of each batch. A window that ends at or before the watermark is closed: it is never
  emitted again, and the state drops its candles (unless a longer window still open holds them);
- a candle that falls in a closed window is late: it is returned, so that it can be counted and
  repaired (spark_jobs/backfill.py), and it still counts in its windows that are open. Every
  emitted window is therefore complete, and a repaired window is never overwritten by the stream;
- every window carries the version of its input: `rows` and `input_offsets`, per Kafka partition
  the highest offset of its candles (spark_jobs/window_versions.py decides which write is newer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crypto_pipeline.formats.candle_message import CANDLE_VALUES
from crypto_pipeline.formats.window_values import AGGREGATE_FIELDS, INPUT_OFFSETS

CANDLE_COLUMNS = ("event_time_ms", "partition", "offset", *CANDLE_VALUES)
AGGREGATE_COLUMNS = (
    "window",
    "window_start_ms",
    "window_end_ms",
    *AGGREGATE_FIELDS,
    INPUT_OFFSETS,
)


@dataclass(frozen=True)
class WindowLength:
    label: str
    size_ms: int


@dataclass(frozen=True)
class SymbolState:
    watermark_ms: int | None
    max_event_ms: int | None
    candles: pd.DataFrame  # CANDLE_COLUMNS, one row per event time, sorted by event time

    @classmethod
    def empty(cls) -> SymbolState:
        return cls(None, None, pd.DataFrame({name: [] for name in CANDLE_COLUMNS}))


@dataclass(frozen=True)
class Step:
    state: SymbolState
    aggregates: pd.DataFrame  # AGGREGATE_COLUMNS, one row per touched window
    late: pd.DataFrame  # the late candles (CANDLE_COLUMNS)


def _last_copy_per_event_time(candles: pd.DataFrame) -> pd.DataFrame:
    ordered = candles.sort_values(["event_time_ms", "partition", "offset"], kind="stable")
    return ordered.drop_duplicates("event_time_ms", keep="last")


def advance(
    state: SymbolState,
    arrivals: pd.DataFrame,
    windows: Sequence[WindowLength],
    delay_ms: int,
) -> Step:
    arrivals = _last_copy_per_event_time(arrivals[list(CANDLE_COLUMNS)])
    ends = _window_ends(arrivals["event_time_ms"].to_numpy(dtype=np.int64), windows)
    if state.watermark_ms is None:
        late_mask = np.zeros(len(arrivals), dtype=bool)
        open_mask = ~late_mask
    else:
        late_mask = ends.min(axis=0) <= state.watermark_ms
        open_mask = ends.max(axis=0) > state.watermark_ms
    late, fresh = arrivals[late_mask], arrivals[open_mask]
    if fresh.empty:
        empty = pd.DataFrame({name: [] for name in AGGREGATE_COLUMNS})
        return Step(state, empty, late)

    # The batch's copy of an event time replaces the one in the state.
    merged = pd.concat([state.candles, fresh], ignore_index=True)
    merged = merged.drop_duplicates("event_time_ms", keep="last").sort_values("event_time_ms")
    merged = merged.reset_index(drop=True)
    aggregates = pd.concat(
        [_touched_windows(merged, fresh, window) for window in windows], ignore_index=True
    )
    if state.watermark_ms is not None:  # a closed window is never emitted again
        aggregates = aggregates[aggregates["window_end_ms"] > state.watermark_ms]

    newest = int(fresh["event_time_ms"].max())
    max_event_ms = newest if state.max_event_ms is None else max(state.max_event_ms, newest)
    watermark_ms = max_event_ms - delay_ms
    merged_ends = _window_ends(merged["event_time_ms"].to_numpy(dtype=np.int64), windows)
    kept = merged[merged_ends.max(axis=0) > watermark_ms].reset_index(drop=True)
    return Step(SymbolState(watermark_ms, max_event_ms, kept), aggregates, late)


def _window_ends(times: np.ndarray, windows: Sequence[WindowLength]) -> np.ndarray:
    """The ends of the windows each event time falls in: one row per window length."""
    return np.array([times - times % window.size_ms + window.size_ms for window in windows])


def _touched_windows(
    candles: pd.DataFrame, fresh: pd.DataFrame, window: WindowLength
) -> pd.DataFrame:
    """The aggregates of the windows of this length that `fresh` has candles in. `candles` is
    sorted by event time, so each window's candles are one run: reduced with numpy."""
    size = window.size_ms
    times = candles["event_time_ms"].to_numpy(dtype=np.int64)
    starts = times - times % size
    fresh_times = fresh["event_time_ms"].to_numpy(dtype=np.int64)
    touched = np.isin(starts, np.unique(fresh_times - fresh_times % size))
    times, starts = times[touched], starts[touched]
    first = np.flatnonzero(np.r_[True, starts[1:] != starts[:-1]])
    last = np.r_[first[1:], len(times)] - 1

    def column(name: str) -> np.ndarray:
        return candles[name].to_numpy(dtype=np.float64)[touched]

    def total(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, first) if len(values) else values

    def total_or_null(values: np.ndarray) -> np.ndarray:
        """The sum per window, NaN where any candle lacks the value."""
        missing = total(np.isnan(values).astype(np.int64)) > 0
        return np.where(missing, np.nan, total(np.nan_to_num(values)))

    high, low, close, volume = column("high"), column("low"), column("close"), column("volume")
    volumes = total(volume)
    quote_volume = total_or_null(column("quote_volume"))
    # Quote volume, or the volume-weighted typical price standing in for it.
    turnover = total((high + low + close) / 3 * volume)
    turnover = np.where(np.isnan(quote_volume), turnover, quote_volume)
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = np.where(volumes > 0, turnover / volumes, np.nan)
    trades = total_or_null(column("trades"))
    trades_missing = np.isnan(trades)
    window_starts = starts[first]
    partitions = candles["partition"].to_numpy(dtype=np.int64)[touched]
    offsets = candles["offset"].to_numpy(dtype=np.int64)[touched]
    return pd.DataFrame(
        {
            "window": window.label,
            "window_start_ms": window_starts,
            "window_end_ms": window_starts + size,
            "open": column("open")[first],
            "high": np.maximum.reduceat(high, first) if len(high) else high,
            "low": np.minimum.reduceat(low, first) if len(low) else low,
            "close": close[last],
            "volume": volumes,
            "quote_volume": quote_volume,
            "vwap": vwap,
            "trades": pd.arrays.IntegerArray(
                np.where(trades_missing, 0, np.round(trades)).astype(np.int64), trades_missing
            ),
            "rows": (last - first + 1).astype(np.int64),
            "first_event_ms": times[first],
            "last_event_ms": times[last],
            INPUT_OFFSETS: _highest_offsets(partitions, offsets, first),
        }
    )


def _highest_offsets(partitions: np.ndarray, offsets: np.ndarray, first: np.ndarray) -> list[Any]:
    """Per window (runs starting at `first`), {partition: highest offset}. A symbol's candles are
    normally all in one partition (key = symbol): then one reduction does it."""
    if not len(offsets):
        return []
    if partitions.min() == partitions.max():
        partition = str(int(partitions[0]))
        return [{partition: int(o)} for o in np.maximum.reduceat(offsets, first)]
    window = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(offsets)]))
    frame = pd.DataFrame({"window": window, "partition": partitions, "offset": offsets})
    highest = frame.groupby(["window", "partition"], sort=True)["offset"].max()
    versions: list[dict[str, int]] = [{} for _ in first]
    for (index, partition), offset in highest.items():
        versions[int(index)][str(partition)] = int(offset)
    return versions


@dataclass(frozen=True)
class BatchStep:
    """One micro-batch over every symbol in it."""

    states: dict[str, SymbolState]  # the new state of each symbol the batch had candles of
    aggregates: pd.DataFrame  # "symbol" + AGGREGATE_COLUMNS
    late: dict[str, pd.DataFrame]  # per symbol, its late candles (CANDLE_COLUMNS)
    touched: tuple[str, ...]  # the symbols the batch had candles of


def advance_all(
    states: Mapping[str, SymbolState],
    candles: pd.DataFrame,
    windows: Sequence[WindowLength],
    delay_ms: int,
) -> BatchStep:
    """`advance` for each symbol of a batch of candles ("symbol" + CANDLE_COLUMNS); only those
    symbols' states are read (the others may be many, and idle)."""
    updated: dict[str, SymbolState] = {}
    aggregates, late = [], {}
    for symbol, arrivals in candles.groupby("symbol", sort=True):
        previous = states[str(symbol)] if str(symbol) in states else SymbolState.empty()
        step = advance(previous, arrivals, windows, delay_ms)
        updated[str(symbol)] = step.state
        aggregates.append(step.aggregates.assign(symbol=str(symbol)))
        if len(step.late):
            late[str(symbol)] = step.late
    columns = ["symbol", *AGGREGATE_COLUMNS]
    frame = (
        pd.concat(aggregates, ignore_index=True)[columns]
        if aggregates
        else pd.DataFrame({name: [] for name in columns})
    )
    touched = tuple(sorted(str(symbol) for symbol in candles["symbol"].unique()))
    return BatchStep(updated, frame, late, touched)
