"""Candles from trades, the driver's part: each micro-batch's one-second partials (computed on the
executors by spark_jobs/trade_seconds.py, copies dropped by spark_jobs/trade_dedupe.py) merged into
the state of their series and into every window they touch. No Spark, no work per trade: the
state and the work grow with the seconds that have trades.

The state holds one partial per (series, second) of the windows that can still change, with when
that second's first trades arrived, and per series its watermark and newest trade time.

Semantics (those of candles from candles, spark_jobs/open_windows.py, where they apply):
- windows are aligned to the epoch; open and close are the first and last trade by (time, id);
- a window without trades has no candle: a quiet minute is a gap, not a flat candle, which would
  show a price nobody traded at;
- the watermark is per series: its newest trade time minus the allowed delay, moved at the end
  of each batch. A window that ends at or before it is closed: never emitted again; the state
  drops the seconds no open window holds;
- a second in a closed window of the shortest length is late: recorded in the late ledger for a
  repair, and still counted in its windows that are open;
- copies of a trade are dropped within the dedupe horizon (processing time, against the ids each
  series counted, kept in this state: spark_jobs/trade_dedupe.py). A second that gets trades
  again more than the horizon after its first ones may hold a copy no longer remembered:
  recorded in the ledger (`redelivered`), so that its windows are recomputed, never silently
  doubled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from crypto_pipeline.formats.late_ledger import LATE, REDELIVERED, LateEntry
from crypto_pipeline.formats.window_values import INPUT_OFFSETS, SERIES_SEPARATOR
from spark_jobs.open_windows import WindowLength
from spark_jobs.state_store import StateFileError, write_durably
from spark_jobs.trade_dedupe import IdsBySeries, ids_from_table, ids_table
from spark_jobs.trade_seconds import PARTIAL_FIELDS, SECOND_MS, merge_partials

PARTIAL_NAMES = [name for name, _ in PARTIAL_FIELDS]
STATE_SCHEMA = pa.schema([*PARTIAL_FIELDS, ("seen_ms", pa.int64())])
MARKS = b"marks"
NO_MARK = np.iinfo(np.int64).min
Marks = dict[str, tuple[int, int]]  # series -> (watermark ms, newest trade ms)


@dataclass(frozen=True)
class TradeState:
    seconds: pd.DataFrame  # STATE_SCHEMA, one row per (exchange, symbol, second)
    marks: Marks
    ids: IdsBySeries = field(default_factory=dict)  # counted within the dedupe horizon

    @classmethod
    def empty(cls) -> TradeState:
        return cls(STATE_SCHEMA.empty_table().to_pandas(), {})


@dataclass(frozen=True)
class TradeStep:
    state: TradeState
    windows: pd.DataFrame  # the sinks' shape (spark_jobs/sinks.py), one row per touched window
    ledger: list[LateEntry]  # late and redelivered seconds, per series


def _series(frame: pd.DataFrame) -> pd.Series:
    return frame["exchange"] + SERIES_SEPARATOR + frame["symbol"]


def _keys(series: pd.Series, start_ms: pd.Series) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([series.to_numpy(), start_ms.to_numpy()])


def merged_windows(seconds: pd.DataFrame, size_ms: int) -> pd.DataFrame:
    """Partials (PARTIAL_NAMES columns, any number per second) merged into windows of a length."""
    table = pa.Table.from_pandas(seconds[PARTIAL_NAMES], preserve_index=False)
    return merge_partials(table.cast(pa.schema(PARTIAL_FIELDS)), size_ms).to_pandas()


def advance_trades(
    state: TradeState,
    partials: pa.Table,
    lengths: Sequence[WindowLength],
    delay_ms: int,
    horizon_ms: int,
    now_ms: int,
) -> TradeStep:
    """The state after a batch's partials (PARTIAL_FIELDS, any number per second), the windows
    they touched and the ledger entries; `now_ms`: when the batch was planned."""
    if partials.num_rows == 0:
        return TradeStep(state, window_rows(pd.DataFrame(columns=PARTIAL_NAMES), "", 0), [])
    arrived = merge_partials(partials, SECOND_MS).to_pandas()
    arrived_series = _series(arrived)
    watermarks = {series: marks[0] for series, marks in state.marks.items()}
    old_mark = arrived_series.map(watermarks).fillna(NO_MARK).astype("int64")
    shortest = min(length.size_ms for length in lengths)
    late = (arrived.second_ms - arrived.second_ms % shortest + shortest <= old_mark).to_numpy()

    held = state.seconds
    again = _keys(_series(held), held.second_ms).isin(_keys(arrived_series, arrived.second_ms))
    before = held[again]
    stale = before[before.seen_ms < now_ms - horizon_ms]
    forgotten = _keys(_series(stale), stale.second_ms)
    combined = merged_windows(pd.concat([before[PARTIAL_NAMES], arrived]), SECOND_MS)
    first_seen = pd.Series(
        before.seen_ms.to_numpy(), index=_keys(_series(before), before.second_ms)
    )
    combined_keys = _keys(_series(combined), combined.second_ms)
    combined["seen_ms"] = (
        first_seen.reindex(combined_keys).fillna(now_ms).astype("int64").to_numpy()
    )
    seconds = pd.concat([held[~again], combined], ignore_index=True)
    series = _series(seconds)

    windows = []
    for length in lengths:
        size = length.size_ms
        touched = _keys(arrived_series, arrived.second_ms - arrived.second_ms % size).unique()
        inside = _keys(series, seconds.second_ms - seconds.second_ms % size).isin(touched)
        merged = merged_windows(seconds[inside], size)
        # A window closed before this batch keeps its last version (late seconds: the ledger).
        still_open = merged.second_ms + size > _series(merged).map(watermarks).fillna(NO_MARK)
        windows.append(window_rows(merged[still_open.to_numpy()], length.label, size))

    newest = arrived.groupby(arrived_series.to_numpy()).last_ms.max()
    marks = dict(state.marks)
    for name, newest_ms in newest.items():
        old_watermark, old_newest = marks.get(str(name), (NO_MARK, NO_MARK))
        newest_ms = max(int(newest_ms), old_newest)
        marks[str(name)] = (max(old_watermark, newest_ms - delay_ms), newest_ms)
    second = seconds.second_ms.to_numpy()
    last_end = np.max([second - second % length.size_ms + length.size_ms for length in lengths], 0)
    keep = last_end > series.map({name: mark[0] for name, mark in marks.items()}).to_numpy()
    ledger = ledger_entries(arrived[late], LATE) + ledger_entries(
        arrived[_keys(arrived_series, arrived.second_ms).isin(forgotten)], REDELIVERED
    )
    return TradeStep(
        replace(state, seconds=seconds[keep].reset_index(drop=True), marks=marks),
        pd.concat(windows, ignore_index=True),
        ledger,
    )


def ledger_entries(seconds: pd.DataFrame, kind: str) -> list[LateEntry]:
    """One entry per series: its trades in these seconds and their time range."""
    grouped = seconds.groupby(_series(seconds).to_numpy(), sort=True)
    return [
        LateEntry(
            str(name),
            int(group.trades.sum()),
            int(group.first_ms.min()),
            int(group.last_ms.max()),
            kind=kind,
        )
        for name, group in grouped
    ]


def window_rows(merged: pd.DataFrame, label: str, size_ms: int) -> pd.DataFrame:
    """Merged partials as the sinks take windows (`symbol` holds the series key); `rows` counts
    trades, VWAP is quote volume over volume (every trade's quantity is positive)."""
    return pd.DataFrame(
        {
            "symbol": _series(merged) if len(merged) else pd.Series(dtype=object),
            "window": label,
            "window_start_ms": merged.second_ms,
            "window_end_ms": merged.second_ms + size_ms,
            **{name: merged[name] for name in ("open", "high", "low", "close", "volume")},
            "quote_volume": merged.quote_volume,
            "vwap": merged.quote_volume / merged.volume,
            "trades": merged.trades,
            "rows": merged.trades,
            "first_event_ms": merged.first_ms,
            "last_event_ms": merged.last_ms,
            # Trade-built windows have one writer (the trades job): no version to compare.
            INPUT_OFFSETS: [{} for _ in range(len(merged))],
            "taker_buy_volume": merged.taker_buy_volume,
            "taker_sell_volume": merged.taker_sell_volume,
        }
    ).reset_index(drop=True)


class TradeStateStore:
    """The state after each batch, `<dir>/<batch id>.arrow` (the marks in its metadata) and the
    counted ids in `<batch id>.ids.arrow`, written first: a version exists once its seconds file
    does. Batch N starts from the newest version below N, so a batch run again starts from the
    same state."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _versions(self) -> list[int]:
        names = [path.stem for path in self.directory.glob("*.arrow")]
        return sorted(int(name) for name in names if name.isdigit())

    def _read(self, path: Path) -> pa.Table:
        try:
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_file(source).read_all()
        except (OSError, pa.ArrowInvalid) as error:
            raise StateFileError(f"the state file {path} cannot be read ({error})") from None

    def load(self, batch_id: int) -> TradeState:
        earlier = [version for version in self._versions() if version < batch_id]
        if not earlier:
            return TradeState.empty()
        path = self.directory / f"{earlier[-1]}.arrow"
        table = self._read(path)
        try:
            marks = json.loads((table.schema.metadata or {})[MARKS])
        except (KeyError, ValueError) as error:
            raise StateFileError(f"the state file {path} cannot be read ({error})") from None
        seconds = table.replace_schema_metadata(None).to_pandas()
        return TradeState(
            seconds,
            {name: (int(w), int(n)) for name, (w, n) in marks.items()},
            ids_from_table(self._read(path.with_suffix(".ids.arrow"))),
        )

    def save(self, batch_id: int, state: TradeState) -> int:
        """Version `batch_id`, and the versions no later batch starts from removed; its bytes."""
        table = pa.Table.from_pandas(state.seconds, preserve_index=False).cast(STATE_SCHEMA)
        table = table.replace_schema_metadata({MARKS: json.dumps(state.marks).encode()})
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{batch_id}.arrow"
        ids_path = path.with_suffix(".ids.arrow")
        write_durably(ids_path, ids_table(state.ids))
        write_durably(path, table)
        for version in self._versions():
            if version < batch_id - 1:
                # The ids first: a version left without them is never loaded again (a newer one
                # is there), and is removed next time.
                (self.directory / f"{version}.ids.arrow").unlink(missing_ok=True)
                (self.directory / f"{version}.arrow").unlink(missing_ok=True)
        return path.stat().st_size + ids_path.stat().st_size
