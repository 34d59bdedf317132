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
  end of each batch. A candle older than the watermark is late: it changes no window and is
  returned, so that it can be counted and repaired;
- the state keeps only the candles of windows that end after the watermark (any other window can
  no longer change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

CANDLE_COLUMNS = (
    "event_time_ms",
    "partition",
    "offset",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
)
AGGREGATE_COLUMNS = (
    "window",
    "window_start_ms",
    "window_end_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "vwap",
    "trades",
    "rows",
    "first_event_ms",
    "last_event_ms",
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


def encode_candles(candles: pd.DataFrame) -> bytes:
    """The state's candles as an Arrow IPC stream (what Spark's state store keeps)."""
    table = pa.Table.from_pandas(candles[list(CANDLE_COLUMNS)], preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_candles(encoded: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(encoded).read_all().to_pandas()


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
    if state.watermark_ms is None:
        late_mask = np.zeros(len(arrivals), dtype=bool)
    else:
        late_mask = arrivals["event_time_ms"].to_numpy() < state.watermark_ms
    late, fresh = arrivals[late_mask], arrivals[~late_mask]
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

    newest = int(fresh["event_time_ms"].max())
    max_event_ms = newest if state.max_event_ms is None else max(state.max_event_ms, newest)
    watermark_ms = max_event_ms - delay_ms
    times = merged["event_time_ms"].to_numpy(dtype=np.int64)
    latest_end = np.zeros(len(merged), dtype=np.int64)
    for window in windows:
        latest_end = np.maximum(latest_end, times - times % window.size_ms + window.size_ms)
    kept = merged[latest_end > watermark_ms].reset_index(drop=True)
    return Step(SymbolState(watermark_ms, max_event_ms, kept), aggregates, late)


def _touched_windows(
    candles: pd.DataFrame, fresh: pd.DataFrame, window: WindowLength
) -> pd.DataFrame:
    """The aggregates of the windows of this length that `fresh` has candles in."""
    size = window.size_ms
    starts = candles["event_time_ms"].to_numpy(dtype=np.int64)
    starts = starts - starts % size
    fresh_times = fresh["event_time_ms"].to_numpy(dtype=np.int64)
    touched = np.isin(starts, np.unique(fresh_times - fresh_times % size))
    frame = candles[touched].assign(
        window_start_ms=starts[touched],
        turnover=lambda f: (f["high"] + f["low"] + f["close"]) / 3 * f["volume"],
        quote_volume_missing=lambda f: f["quote_volume"].isna(),
        trades_missing=lambda f: f["trades"].isna(),
    )
    grouped = frame.groupby("window_start_ms", sort=True).agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        quote_volume=("quote_volume", "sum"),
        quote_volume_missing=("quote_volume_missing", "any"),
        turnover=("turnover", "sum"),
        trades=("trades", "sum"),
        trades_missing=("trades_missing", "any"),
        rows=("event_time_ms", "size"),
        first_event_ms=("event_time_ms", "min"),
        last_event_ms=("event_time_ms", "max"),
    )
    quote_volume = grouped["quote_volume"].where(~grouped["quote_volume_missing"])
    volume = grouped["volume"]
    vwap = quote_volume.fillna(grouped["turnover"]) / volume
    result = pd.DataFrame(
        {
            "window": window.label,
            "window_start_ms": grouped.index.to_numpy(dtype=np.int64),
            "window_end_ms": grouped.index.to_numpy(dtype=np.int64) + size,
            "open": grouped["open"],
            "high": grouped["high"],
            "low": grouped["low"],
            "close": grouped["close"],
            "volume": volume,
            "quote_volume": quote_volume,
            "vwap": vwap.where(volume > 0),
            "trades": grouped["trades"].round().astype("Int64").where(~grouped["trades_missing"]),
            "rows": grouped["rows"].astype(np.int64),
            "first_event_ms": grouped["first_event_ms"].astype(np.int64),
            "last_event_ms": grouped["last_event_ms"].astype(np.int64),
        }
    )
    return result.reset_index(drop=True)
