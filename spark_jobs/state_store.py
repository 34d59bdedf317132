"""The windowed step's state, kept next to Spark's checkpoint: one Arrow file per micro-batch,
`<checkpoint dir>/state/<batch id>.arrow`, holding the candles of open windows and, in the file's
metadata, each symbol's watermark and newest event time.

A version is either a *base* (every symbol) or a *delta* (only the symbols its batch touched,
applied on top of the versions before it, back to a base): a batch's cost grows with the symbols
in it, not with every symbol ever seen. A base is written when a delta would not be much smaller
(its symbols hold half the state's candles), or after MAX_DELTAS deltas.

Batch N starts from the newest version below N (normally N - 1) and writes version N, so a batch
that Spark runs again after a failure (same batch id, same offsets) starts from the same state and
gives the same result. Reading a state keeps each symbol's candles as a slice of the Arrow table
until the batch needs them, so a restart reads 20,000 symbols in well under a second. A version is
written to a temporary file, flushed to disk and renamed into place. Spark runs batch N + 1 only
once N is committed, so versions no batch from N on can start from are removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs.open_windows import CANDLE_COLUMNS, CANDLE_SCHEMA, SymbolState, stacked_candles

WATERMARKS = b"watermarks"
BASE = b"base"  # the version of the base a delta applies to (a base names itself)
SUFFIX = ".arrow"
STATE = "state"  # the state's folder, next to the query's checkpoint (both jobs)
MAX_DELTAS = 100
COLUMNS = ("symbol", *CANDLE_COLUMNS)
SCHEMA = pa.schema([("symbol", pa.string()), *CANDLE_SCHEMA])


class StateFileError(RuntimeError):
    """A state file cannot be read: the checkpoint's state is damaged."""


@dataclass(frozen=True)
class _Slice:
    table: pa.Table
    start: int
    length: int


class StateView(Mapping[str, SymbolState]):
    """Every symbol's state after some version. Symbols read from files stay Arrow slices until
    asked for; `apply` puts a batch's new states on top (O(symbols in the batch))."""

    def __init__(self) -> None:
        self._marks: dict[str, tuple[int | None, int | None]] = {}
        self._slices: dict[str, _Slice] = {}
        self._states: dict[str, SymbolState] = {}
        self._rows: dict[str, int] = {}
        self.candles = 0  # candles held by every symbol

    def __getitem__(self, symbol: str) -> SymbolState:
        state = self._states.get(symbol)
        if state is not None:
            return state
        watermark_ms, max_event_ms = self._marks[symbol]  # KeyError for an unknown symbol
        piece = self._slices.get(symbol)
        candles = (
            SymbolState.empty().candles
            if piece is None
            else piece.table.slice(piece.start, piece.length).select(CANDLE_COLUMNS)
        )
        return SymbolState(watermark_ms, max_event_ms, candles)

    def __iter__(self) -> Iterator[str]:
        return iter(self._marks)

    def __len__(self) -> int:
        return len(self._marks)

    def rows(self, symbol: str) -> int:
        return self._rows.get(symbol, 0)

    def _set_rows(self, symbol: str, rows: int) -> None:
        self.candles += rows - self._rows.get(symbol, 0)
        self._rows[symbol] = rows

    def apply(self, changed: Mapping[str, SymbolState]) -> None:
        for symbol, state in changed.items():
            self._marks[symbol] = (state.watermark_ms, state.max_event_ms)
            self._states[symbol] = state
            self._slices.pop(symbol, None)
            self._set_rows(symbol, state.candles.num_rows)

    def apply_file(self, table: pa.Table, marks: dict[str, list[int | None]]) -> None:
        """A version's table (sorted by symbol) and watermarks on top of what is here. Cast to
        one schema: a file written by an older version of the job may hold other number types."""
        table = table.select(COLUMNS).cast(SCHEMA)
        for symbol, (watermark_ms, max_event_ms) in marks.items():
            self._marks[symbol] = (watermark_ms, max_event_ms)
            self._states.pop(symbol, None)
            self._slices.pop(symbol, None)
            self._set_rows(symbol, 0)
        if not table.num_rows:
            return
        symbols = table.column("symbol")
        changes = pc.not_equal(symbols.slice(1), symbols.slice(0, len(symbols) - 1))
        starts = np.r_[0, np.flatnonzero(changes.to_numpy(zero_copy_only=False)) + 1]
        lengths = np.diff(np.r_[starts, table.num_rows])
        names = symbols.take(pa.array(starts)).to_pylist()
        for symbol, start, length in zip(names, starts.tolist(), lengths.tolist(), strict=True):
            self._slices[symbol] = _Slice(table, start, length)
            self._set_rows(symbol, length)

    def table(self) -> pa.Table:
        """Every symbol's candles as one table, each symbol's rows together (for a base): the
        slices still read from files, then the states batches changed."""
        pieces = [piece.table.slice(piece.start, piece.length) for piece in self._slices.values()]
        pieces.append(_candles_table(self._states))
        return pa.concat_tables(pieces).combine_chunks()

    def marks(self, symbols: Iterator[str] | None = None) -> dict[str, list[int | None]]:
        chosen = self._marks if symbols is None else {s: self._marks[s] for s in symbols}
        return {s: list(mark) for s, mark in chosen.items()}


def _candles_table(states: Mapping[str, SymbolState]) -> pa.Table:
    """The states' candles as one table with their series' names, in name order."""
    names = sorted(states)
    candles, symbols = stacked_candles(
        [states[name].candles for name in names], np.array(names, dtype=object)
    )
    return candles.add_column(0, "symbol", pa.array(symbols, pa.string()))


def write_durably(path: Path, table: pa.Table) -> None:
    """The file on disk (fsynced, and its directory) before it takes its name."""
    partial = path.with_name(f".{path.name}.partial")
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    with partial.open("rb+") as written:
        os.fsync(written.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def rename_series(directory: Path, rename: Callable[[str], str]) -> int:
    """Every state version's series renamed in place (the state of a checkpoint written before
    series had an exchange: its symbols become file series). Renaming one prefix onto every name
    keeps each version sorted. Returns the versions rewritten."""
    paths = sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []
    for path in paths:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        metadata = dict(table.schema.metadata or {})
        marks = json.loads(metadata[WATERMARKS])
        metadata[WATERMARKS] = json.dumps({rename(s): m for s, m in marks.items()}).encode()
        column = table.schema.get_field_index("symbol")
        names = pa.array([rename(s) for s in table.column(column).to_pylist()], pa.string())
        table = table.set_column(column, "symbol", names).replace_schema_metadata(metadata)
        write_durably(path, table)
    return len(paths)


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The version this process wrote last: the next batch starts from it without a read.
        self._last: tuple[int, StateView] | None = None
        self._bases: dict[int, int] = {}  # version -> the base it applies to
        self._delta_rows = 0  # candles written in deltas since the last base

    def _versions(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        names = (path.name.removesuffix(SUFFIX) for path in self.directory.glob(f"*{SUFFIX}"))
        return sorted(int(name) for name in names if name.isdigit())

    def _path(self, version: int) -> Path:
        return self.directory / f"{version}{SUFFIX}"

    def _read(self, version: int) -> tuple[pa.Table, dict[str, list[int | None]], int]:
        path = self._path(version)
        try:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            metadata = table.schema.metadata or {}
            marks = json.loads(metadata[WATERMARKS])
            base = int(metadata.get(BASE, str(version).encode()))
        except (OSError, pa.ArrowInvalid, KeyError, ValueError) as error:
            raise StateFileError(
                f"the state file {path} cannot be read ({error}); the checkpoint's state is "
                f"damaged: stop the job and move {self.directory.parent} aside (a new "
                "checkpoint recomputes from the topic; no stored window gets worse)"
            ) from None
        self._bases[version] = base
        return table, marks, base

    def load(self, batch_id: int) -> StateView:
        """The state every batch before `batch_id` left (empty before the first)."""
        earlier = [version for version in self._versions() if version < batch_id]
        if not earlier:
            return StateView()
        if self._last is not None and self._last[0] == earlier[-1]:
            return self._last[1]
        newest = earlier[-1]
        table, marks, base = self._read(newest)
        chain = [(table, marks)]  # newest first, back to its base
        for version in range(newest - 1, base - 1, -1):
            table, marks, _ = self._read(version)
            chain.append((table, marks))
        view = StateView()
        for table, marks in reversed(chain):
            view.apply_file(table, marks)
        self._delta_rows = sum(table.num_rows for table, _ in chain[:-1])
        self._last = (newest, view)
        return view

    def save(self, batch_id: int, view: StateView, changed: Mapping[str, SymbolState]) -> int:
        """Version `batch_id`: `view` (the state the batch started from) with its changed
        symbols applied, written as a delta or a base; its size in bytes."""
        try:
            return self._save(batch_id, view, changed)
        except BaseException:
            self._last = None  # `view` may hold this version's changes: read it again
            raise

    def _save(self, batch_id: int, view: StateView, changed: Mapping[str, SymbolState]) -> int:
        base_of_previous = self._bases.get(batch_id - 1)
        changed_rows = sum(state.candles.num_rows for state in changed.values())
        view.apply(changed)
        delta = (
            base_of_previous is not None
            and batch_id - base_of_previous <= MAX_DELTAS
            and 2 * (self._delta_rows + changed_rows) < view.candles
        )
        if delta:
            table = _candles_table(changed)
            marks = view.marks(iter(changed))
            base = base_of_previous
            self._delta_rows += changed_rows
        else:
            table, marks, base = view.table(), view.marks(), batch_id
            # The view reads from the base from now on, so the earlier tables can be freed.
            view.apply_file(table, marks)
            self._delta_rows = 0
        table = table.replace_schema_metadata(
            {WATERMARKS: json.dumps(marks).encode(), BASE: str(base).encode()}
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        write_durably(self._path(batch_id), table)
        self._bases[batch_id] = base  # type: ignore[assignment]
        self._last = (batch_id, view)
        return self._path(batch_id).stat().st_size

    def prune(self, batch_id: int) -> None:
        """Remove the versions neither batch `batch_id` (run again) nor the next starts from."""
        keep_from = min(
            self._bases.get(batch_id - 1, batch_id - 1), self._bases.get(batch_id, batch_id)
        )
        for version in self._versions():
            if version < keep_from:
                self._path(version).unlink(missing_ok=True)
                self._bases.pop(version, None)
