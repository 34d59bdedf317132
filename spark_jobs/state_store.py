"""The windowed step's state, kept next to Spark's checkpoint: one Arrow file per micro-batch,
`<checkpoint dir>/state/<batch id>.arrow`, holding the candles of every symbol's open windows and,
in the file's metadata, each symbol's watermark and newest event time.

Batch N starts from the newest version below N (normally N - 1) and writes version N, so a batch
that Spark runs again after a failure (same batch id, same offsets) starts from the same state and
gives the same result. A version is written to a temporary file and renamed into place. Spark runs
batch N + 1 only once N is committed, so versions below N - 1 are no longer needed and are
removed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa

from spark_jobs.open_windows import CANDLE_COLUMNS, SymbolState

WATERMARKS = b"watermarks"
SUFFIX = ".arrow"


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The version this process wrote last: the next batch starts from it without a read.
        self._last: tuple[int, dict[str, SymbolState]] | None = None

    def _versions(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        names = (path.name.removesuffix(SUFFIX) for path in self.directory.glob(f"*{SUFFIX}"))
        return sorted(int(name) for name in names if name.isdigit())

    def _path(self, version: int) -> Path:
        return self.directory / f"{version}{SUFFIX}"

    def load(self, batch_id: int) -> dict[str, SymbolState]:
        """The state every batch before `batch_id` left (empty before the first)."""
        earlier = [version for version in self._versions() if version < batch_id]
        if not earlier:
            return {}
        if self._last is not None and self._last[0] == earlier[-1]:
            return dict(self._last[1])
        with pa.memory_map(str(self._path(earlier[-1]))) as source:
            table = pa.ipc.open_file(source).read_all()
        marks = json.loads((table.schema.metadata or {})[WATERMARKS])
        candles = table.to_pandas()
        by_symbol = {str(symbol): frame for symbol, frame in candles.groupby("symbol")}
        empty = SymbolState.empty().candles
        return {
            symbol: SymbolState(
                watermark_ms,
                max_event_ms,
                by_symbol.get(symbol, empty)[list(CANDLE_COLUMNS)].reset_index(drop=True),
            )
            for symbol, (watermark_ms, max_event_ms) in marks.items()
        }

    def save(self, batch_id: int, states: dict[str, SymbolState]) -> int:
        """Write version `batch_id`; its size in bytes."""
        frames = [
            state.candles[list(CANDLE_COLUMNS)].assign(symbol=symbol)
            for symbol, state in states.items()
            if len(state.candles)
        ]
        candles = (
            pd.concat(frames, ignore_index=True)
            if frames
            else SymbolState.empty().candles.assign(symbol=pd.Series(dtype=str))
        )
        table = pa.Table.from_pandas(
            candles.astype({"quote_volume": "float64", "trades": "float64"}), preserve_index=False
        )
        marks = {s: [state.watermark_ms, state.max_event_ms] for s, state in states.items()}
        table = table.replace_schema_metadata({WATERMARKS: json.dumps(marks).encode()})
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{batch_id}{SUFFIX}.partial"
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(partial, self._path(batch_id))
        self._last = (batch_id, dict(states))
        return self._path(batch_id).stat().st_size

    def prune(self, batch_id: int) -> None:
        """Remove the versions no batch from `batch_id` on can start from."""
        for version in self._versions():
            if version < batch_id - 1:
                self._path(version).unlink(missing_ok=True)
