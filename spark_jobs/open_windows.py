"""The state of each series (an exchange's symbol): the candles of its windows that can still
change, and its watermark. No Spark: `advance_all` takes the states and one micro-batch's candles
of every series in it, and returns the new states, the aggregates of every window the batch
touched, and the late candles. It steps all the batch's series at once (one sort by series and
event time, numpy reductions per series and window), so a batch's cost grows with its candles,
not with a fixed cost per series; a state's candles are an Arrow table, so a batch's new states
are slices of one table.

Semantics (the same for every window length, computed from one state):
- windows are aligned to the epoch: [t - t % size, + size);
- a candle delivered twice counts once: per event time, the copy delivered last wins (the highest
  (partition, offset) within a batch, the later batch across batches);
- open and close come from the earliest and latest event time, never from arrival order;
- quote volume and trades are null when any candle of the window lacks them; VWAP is quote volume
  / volume, with the volume-weighted typical price (high + low + close) / 3 standing in for a
  missing quote volume, and null when the volume is zero;
- the watermark is per series: the newest event time seen minus the allowed delay, moved at the
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

import numpy as np
import pandas as pd
import pyarrow as pa

from crypto_pipeline.formats.candle_message import CANDLE_VALUES
from crypto_pipeline.formats.window_values import AGGREGATE_FIELDS, INPUT_OFFSETS
from crypto_pipeline.windows import window_ms
from spark_jobs.sorted_runs import last_of_runs, run_bounds

INTEGER_COLUMNS = ("event_time_ms", "partition", "offset")
CANDLE_COLUMNS = (*INTEGER_COLUMNS, *CANDLE_VALUES)
CANDLE_SCHEMA = pa.schema(
    [(name, pa.int64() if name in INTEGER_COLUMNS else pa.float64()) for name in CANDLE_COLUMNS]
)
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


def window_lengths(labels: Sequence[str]) -> tuple[WindowLength, ...]:
    """Window labels ("5m", "1h") with their lengths."""
    return tuple(WindowLength(label, window_ms(label)) for label in labels)


@dataclass(frozen=True)
class SymbolState:
    watermark_ms: int | None
    max_event_ms: int | None
    candles: pa.Table  # CANDLE_SCHEMA, one row per event time, sorted by event time

    @classmethod
    def empty(cls) -> SymbolState:
        return cls(None, None, CANDLE_SCHEMA.empty_table())


@dataclass(frozen=True)
class Step:
    state: SymbolState
    aggregates: pd.DataFrame  # AGGREGATE_COLUMNS, one row per touched window
    late: pd.DataFrame  # the late candles (CANDLE_COLUMNS)


NO_MARK = np.iinfo(np.int64).min  # a series without a watermark: nothing is late for it
Columns = dict[str, np.ndarray]  # "code" (the series' index in the batch) + CANDLE_COLUMNS


def advance(
    state: SymbolState,
    arrivals: pd.DataFrame,
    windows: Sequence[WindowLength],
    delay_ms: int,
) -> Step:
    """`advance_all` for one series."""
    step = advance_all({"": state}, arrivals.assign(symbol=""), windows, delay_ms)
    late = step.late.get("", _frame(_columns(arrivals.iloc[:0], np.zeros(0))))
    return Step(step.states.get("", state), step.aggregates.drop(columns="symbol"), late)


def _columns(frame: pd.DataFrame, codes: np.ndarray) -> Columns:
    columns = {
        name: frame[name].to_numpy(dtype=np.int64)
        if name in INTEGER_COLUMNS
        else frame[name].to_numpy(dtype=np.float64, na_value=np.nan)  # a nullable column's NA too
        for name in CANDLE_COLUMNS
    }
    columns["code"] = codes.astype(np.int64)
    return columns


def stacked_candles(tables: Sequence[pa.Table], keys: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """Several states' candles as one table, and each row's key (`keys`: one per table)."""
    stacked = pa.concat_tables([CANDLE_SCHEMA.empty_table(), *tables]).combine_chunks()
    return stacked, np.repeat(keys, [table.num_rows for table in tables])


def _held_candles(tables: Sequence[pa.Table], codes: np.ndarray) -> Columns:
    """The states' candles of the series `codes`, one table each, as one set of columns."""
    held, held_codes = stacked_candles(tables, codes.astype(np.int64))
    columns = {name: held.column(name).to_numpy() for name in CANDLE_COLUMNS}
    columns["code"] = held_codes
    return columns


def _take(columns: Columns, index: np.ndarray) -> Columns:
    return {name: values[index] for name, values in columns.items()}


def _concat(parts: Sequence[Columns]) -> Columns:
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _run_bounds(codes: np.ndarray, series: int) -> list[int]:
    """For rows sorted by series code, where each of the `series` codes' rows start (and end)."""
    return np.searchsorted(codes, np.arange(series + 1)).tolist()


def _frame(columns: Columns, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    return pd.DataFrame({name: columns[name][start:stop] for name in CANDLE_COLUMNS})


def _marks(times: Sequence[int | None]) -> np.ndarray:
    """Per series, a time or NO_MARK where it has none."""
    return np.array([NO_MARK if t is None else t for t in times], dtype=np.int64)


def _window_ends(times: np.ndarray, windows: Sequence[WindowLength]) -> np.ndarray:
    """The ends of the windows each event time falls in: one row per window length."""
    return np.array([times - times % window.size_ms + window.size_ms for window in windows])


@dataclass(frozen=True)
class BatchStep:
    """One micro-batch over every series in it."""

    states: dict[str, SymbolState]  # the new state of each series the batch had candles of
    aggregates: pd.DataFrame  # "symbol" (the series) + AGGREGATE_COLUMNS
    late: dict[str, pd.DataFrame]  # per series, its late candles (CANDLE_COLUMNS)
    touched: tuple[str, ...]  # the series the batch had candles of


def advance_all(
    states: Mapping[str, SymbolState],
    candles: pd.DataFrame,
    windows: Sequence[WindowLength],
    delay_ms: int,
) -> BatchStep:
    """One batch of candles ("symbol" + CANDLE_COLUMNS) over every series in it at once: one
    sort by (series, event time), then numpy reductions per (series, window). Only the batch's
    series' states are read (the others may be many, and idle)."""
    codes, names = pd.factorize(candles["symbol"].astype(str), sort=True)
    touched = tuple(str(name) for name in names)
    found = [states.get(name) for name in touched]
    previous = [SymbolState.empty() if state is None else state for state in found]
    watermarks = _marks([state.watermark_ms for state in previous])

    # The copy of an event time delivered last wins: highest (partition, offset).
    arrivals = _columns(candles, codes)
    order = np.lexsort(
        (arrivals["offset"], arrivals["partition"], arrivals["event_time_ms"], arrivals["code"])
    )
    arrivals = _take(arrivals, order)
    arrivals = _take(arrivals, last_of_runs(arrivals["code"], arrivals["event_time_ms"]))
    ends = _window_ends(arrivals["event_time_ms"], windows)
    marks = watermarks[arrivals["code"]]
    late = _take(arrivals, ends.min(axis=0) <= marks)
    fresh = _take(arrivals, ends.max(axis=0) > marks)

    # The batch's copy of an event time replaces the one in the state.
    stepped = np.unique(fresh["code"])
    held = _held_candles([previous[code].candles for code in stepped.tolist()], stepped)
    merged = _concat([held, fresh])
    from_batch = np.r_[np.zeros(len(held["code"]), bool), np.ones(len(fresh["code"]), bool)]
    order = np.lexsort((from_batch, merged["event_time_ms"], merged["code"]))
    merged, from_batch = _take(merged, order), from_batch[order]
    last = last_of_runs(merged["code"], merged["event_time_ms"])
    merged, from_batch = _take(merged, last), from_batch[last]

    aggregates = _touched_windows(merged, from_batch, windows, watermarks)
    aggregates.insert(0, "symbol", np.array(touched, dtype=object)[aggregates.pop("code")])

    newest = np.full(len(touched), NO_MARK, dtype=np.int64)
    np.maximum.at(newest, fresh["code"], fresh["event_time_ms"])
    newest = np.maximum(newest, _marks([state.max_event_ms for state in previous]))
    new_marks = np.where(newest == NO_MARK, NO_MARK, newest - delay_ms)
    kept = _take(
        merged,
        _window_ends(merged["event_time_ms"], windows).max(axis=0) > new_marks[merged["code"]],
    )
    kept_table = pa.table({name: kept[name] for name in CANDLE_COLUMNS}, schema=CANDLE_SCHEMA)
    bounds = _run_bounds(kept["code"], len(touched))
    updated = dict(zip(touched, previous, strict=True))  # a series whose candles were all late
    for code in stepped.tolist():
        updated[touched[code]] = SymbolState(
            int(new_marks[code]),
            int(newest[code]),
            kept_table.slice(bounds[code], bounds[code + 1] - bounds[code]),
        )
    late_bounds = _run_bounds(late["code"], len(touched))
    late_frames = {
        touched[code]: _frame(late, late_bounds[code], late_bounds[code + 1])
        for code in np.unique(late["code"]).tolist()
    }
    return BatchStep(updated, aggregates, late_frames, touched)


def _touched_windows(
    candles: Columns,
    from_batch: np.ndarray,
    windows: Sequence[WindowLength],
    watermarks: np.ndarray,
) -> pd.DataFrame:
    """The aggregates of every window that has a candle of the batch and is still open, of
    every length: "code" + AGGREGATE_COLUMNS, by series, length (in `windows` order), start.
    `candles` is sorted by series and event time, so each window's candles are one run."""
    frames = [
        _windows_of_length(candles, from_batch, window, watermarks).assign(length=index)
        for index, window in enumerate(windows)
    ]
    frame = pd.concat(frames, ignore_index=True)
    order = np.lexsort((frame["window_start_ms"], frame["length"], frame["code"]))
    return frame.take(order).drop(columns="length").reset_index(drop=True)


def _windows_of_length(
    candles: Columns, from_batch: np.ndarray, window: WindowLength, watermarks: np.ndarray
) -> pd.DataFrame:
    size = window.size_ms
    times, codes = candles["event_time_ms"], candles["code"]
    starts = times - times % size
    first, last = run_bounds(codes, starts)  # each window's rows are one run

    def reduce(ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        return ufunc.reduceat(values, first) if len(first) else values[:0]

    def total(values: np.ndarray) -> np.ndarray:
        return reduce(np.add, values)

    chosen = np.flatnonzero(
        (reduce(np.logical_or, from_batch))
        & (starts[first] + size > watermarks[codes[first]])  # a closed window is never emitted
    )

    def total_or_null(values: np.ndarray) -> np.ndarray:
        """The sum per window, NaN where any candle lacks the value."""
        missing = total(np.isnan(values).astype(np.int64)) > 0
        return np.where(missing, np.nan, total(np.nan_to_num(values)))

    high, low, close, volume = candles["high"], candles["low"], candles["close"], candles["volume"]
    volumes = total(volume)
    quote_volume = total_or_null(candles["quote_volume"])
    # Quote volume, or the volume-weighted typical price standing in for it.
    turnover = total((high + low + close) / 3 * volume)
    turnover = np.where(np.isnan(quote_volume), turnover, quote_volume)
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = np.where(volumes > 0, turnover / volumes, np.nan)
    trades = total_or_null(candles["trades"])
    trades_missing = np.isnan(trades)
    window_starts = starts[first]
    offsets = _highest_offsets(candles["partition"], candles["offset"], first, chosen)
    frame = pd.DataFrame(
        {
            "code": codes[first],
            "window": window.label,
            "window_start_ms": window_starts,
            "window_end_ms": window_starts + size,
            "open": candles["open"][first],
            "high": reduce(np.maximum, high),
            "low": reduce(np.minimum, low),
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
        }
    ).take(chosen)
    frame[INPUT_OFFSETS] = offsets
    return frame


def _highest_offsets(
    partitions: np.ndarray, offsets: np.ndarray, first: np.ndarray, chosen: np.ndarray
) -> np.ndarray:
    """Per chosen window (`chosen`: indexes of runs starting at `first`), {partition: highest
    offset}. A series' candles are normally all in one partition (key = series): then one
    reduction does it."""
    versions = np.empty(len(chosen), dtype=object)
    if not len(chosen):
        return versions
    single = np.minimum.reduceat(partitions, first) == np.maximum.reduceat(partitions, first)
    highest = np.maximum.reduceat(offsets, first)
    versions[:] = [
        {str(partition): int(offset)}
        for partition, offset in zip(
            partitions[first[chosen]].tolist(), highest[chosen].tolist(), strict=True
        )
    ]
    mixed = chosen[~single[chosen]]
    if len(mixed):
        run = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(offsets)]))
        rows = np.isin(run, mixed)
        frame = pd.DataFrame(
            {"run": run[rows], "partition": partitions[rows], "offset": offsets[rows]}
        )
        position = {int(index): place for place, index in enumerate(chosen.tolist())}
        for index in mixed.tolist():
            versions[position[index]] = {}
        for (index, partition), offset in (
            frame.groupby(["run", "partition"])["offset"].max().items()
        ):
            versions[position[int(index)]][str(partition)] = int(offset)
    return versions
