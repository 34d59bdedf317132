"""Copies of a trade dropped on the executors, per series, in Spark's state (issue 23).

The checked trades are grouped by series (exchange, symbol) with `applyInPandasWithState`. A
series' state holds the ids it counted within the dedupe horizon, each with when it was counted
(processing time: when the batch was planned). Numeric ids are kept as intervals of consecutive
ids counted in one batch: for an exchange's sequential ids, one per batch while the topic's
partitions are read in step (a backlog read unevenly across partitions splits them, down to one
per trade). Other ids (Bybit's UUIDs) are kept one by one, and the whole state of a series is
read and written each batch, so its cost grows with the horizon's ids.

The group's trades whose identity `exchange:SYMBOL:trade_id` is not in the state are reduced to
one-second partials (trade_seconds.partials_of, which counts copies within them once) and their
ids added. Ids older than the horizon are forgotten, and so is a series that got no trade for a
horizon (Spark's processing-time timeout). The driver's `redelivered` rule
(spark_jobs/trade_windows.py) uses the same clock, so a copy Spark no longer remembers is
recorded for repair.

Spark's `dropDuplicatesWithinWatermark` did the same per trade at about 20 us of core time per
new key (bench/results.md): here a batch costs one call per series.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crypto_pipeline.formats import trade_message as message
from spark_jobs.trade_seconds import CHECKED, NUMERIC_ID, partials_of

# pyspark's own serializer pads each output with an all-null frame through `pd.concat`, which
# pandas 2.3 warns about once per group in the workers' logs (imported there with this module).
warnings.filterwarnings(
    "ignore",
    message="The behavior of DataFrame concatenation with empty or all-NA entries",
    category=FutureWarning,
)

# A series' state: intervals [low, high] of numeric ids and the other ids, each with the time it
# was counted.
STATE_DDL = "intervals BINARY, texts STRING, text_ms BINARY"
INTERVAL = np.dtype([("low", np.int64), ("high", np.int64), ("seen_ms", np.int64)])
# What the grouping hands over: the checked rows without their copy key (the state has the ids).
GROUPED = pa.schema([field for field in CHECKED if field.name != "copy_key"])


@dataclass(frozen=True)
class CountedIds:
    """The ids of one series counted within the horizon."""

    intervals: np.ndarray  # INTERVAL, disjoint, sorted by low
    texts: np.ndarray  # str
    text_ms: np.ndarray  # int64, when each text id was counted

    @classmethod
    def empty(cls) -> CountedIds:
        return cls(np.zeros(0, INTERVAL), np.zeros(0, dtype=object), np.zeros(0, np.int64))

    @classmethod
    def from_state(cls, row: tuple[Any, ...]) -> CountedIds:
        intervals, texts, text_ms = row
        times = np.frombuffer(text_ms, np.int64)
        return cls(
            np.frombuffer(intervals, INTERVAL),
            np.array(texts.split("\n") if len(times) else [], dtype=object),
            times,
        )

    def to_state(self) -> tuple[bytes, str, bytes]:
        # Ids never hold a line end (candle_rules.TRADE_ID_PATTERN).
        return self.intervals.tobytes(), "\n".join(self.texts), self.text_ms.tobytes()

    def counted(self, numbers: np.ndarray, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which numeric ids and which other ids are already counted."""
        lows, highs = self.intervals["low"], self.intervals["high"]
        at = np.searchsorted(lows, numbers, side="right") - 1
        inside = (at >= 0) & (numbers <= highs[np.maximum(at, 0)]) if len(lows) else at >= 0
        return inside, np.isin(texts, self.texts)

    def adding(self, numbers: np.ndarray, texts: np.ndarray, now_ms: int) -> CountedIds:
        """With new (uncounted) ids, counted at `now_ms`: each run of consecutive numbers one
        interval."""
        numbers = np.unique(numbers)
        added = np.zeros(0, INTERVAL)
        if len(numbers):
            breaks = np.flatnonzero(np.diff(numbers) != 1) + 1
            starts, ends = np.r_[0, breaks], np.r_[breaks - 1, len(numbers) - 1]
            added = np.zeros(len(starts), INTERVAL)
            added["low"], added["high"], added["seen_ms"] = numbers[starts], numbers[ends], now_ms
        intervals = np.concatenate([self.intervals, added])
        texts = np.unique(texts)
        return CountedIds(
            intervals[np.argsort(intervals["low"], kind="stable")],
            np.concatenate([self.texts, texts]),
            np.concatenate([self.text_ms, np.full(len(texts), now_ms, np.int64)]),
        )

    def since(self, oldest_ms: int) -> CountedIds:
        """Without the ids counted before `oldest_ms` (the driver's `redelivered` rule flags a
        second first seen before it)."""
        recent = self.text_ms >= oldest_ms
        return CountedIds(
            self.intervals[self.intervals["seen_ms"] >= oldest_ms],
            self.texts[recent],
            self.text_ms[recent],
        )


def uncounted(
    trades: pa.Table, ids: CountedIds, now_ms: int, horizon_ms: int
) -> tuple[pa.Table, CountedIds]:
    """One series' checked trades -> those whose id was not counted within the horizon, and the
    ids counted after them."""
    ids = ids.since(now_ms - horizon_ms)
    trade_ids = trades.column(message.TRADE_ID)
    numeric = pc.fill_null(pc.match_substring_regex(trade_ids, NUMERIC_ID), False).to_numpy(
        zero_copy_only=False
    )
    numbers = np.zeros(len(numeric), np.int64)
    numbers[numeric] = pc.cast(pc.filter(trade_ids, numeric), pa.int64()).to_numpy()
    texts = trade_ids.to_numpy(zero_copy_only=False)
    known_numbers, known_texts = ids.counted(numbers[numeric], texts[~numeric])
    known = np.zeros(len(numeric), dtype=bool)
    known[numeric], known[~numeric] = known_numbers, known_texts
    fresh = trades.filter(pa.array(~known))
    new_numbers, new_texts = numeric & ~known, ~numeric & ~known
    return fresh, ids.adding(numbers[new_numbers], texts[new_texts], now_ms)


def dedupe_and_reduce(horizon_ms: int) -> Any:
    """applyInPandasWithState, grouped by (kind, exchange, symbol): a series' new trades ->
    their partials (OUTPUT); the dead letters (kind "dead", no state) passed through."""

    def run(key: tuple[Any, ...], frames: Iterator[pd.DataFrame], state: Any) -> Iterator[Any]:
        if state.hasTimedOut:
            state.remove()
            return
        checked = pa.Table.from_pandas(
            pd.concat(list(frames), ignore_index=True), GROUPED, preserve_index=False
        )
        if key[0] != "trade":
            yield partials_of(checked).to_pandas()
            return
        now_ms = state.getCurrentProcessingTimeMs()
        counted = CountedIds.from_state(state.get) if state.exists else CountedIds.empty()
        fresh, counted = uncounted(checked, counted, now_ms, horizon_ms)
        state.update(counted.to_state())
        state.setTimeoutDuration(horizon_ms)
        if fresh.num_rows:
            yield partials_of(fresh).to_pandas()

    return run
