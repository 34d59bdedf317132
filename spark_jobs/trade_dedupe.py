"""Copies of a trade dropped within the dedupe horizon, per series, against the ids it counted
(issue 23). The executors do the work per trade; the driver keeps the ids and does work per
series and batch.

- **Executors** (`task_partials_and_ids`). Each task reads a range of one Kafka partition, so a
  series' trades of a micro-batch are spread over the tasks (by the hash of their key
  `exchange:SYMBOL:trade_id`). A task checks them (trade_seconds.checked_trades), counts copies
  within the task once (a copy under the same key is in the same partition), reduces them to
  one-second partials per series (trade_seconds.partials_of), and sends each series' ids along:
  runs of consecutive numbers (an exchange's sequential ids) and, for ids that are not numbers
  (Bybit's UUIDs), one by one.
- **Driver** (`drop_counted`). Each series' ids counted within the horizon are kept in the job's
  state (spark_jobs/trade_windows.TradeStateStore), each with when it was counted (processing
  time: when the batch was planned). All tasks' ids of a series are compared with those and with
  each other. A series whose ids overlap none keeps its partials as they are (the driver merges
  the partials of every task). Only a series with a copy from an earlier batch (a file replayed
  twice, a feed's refill), or in two tasks (a copy under another key, a partition split between
  tasks), is read again from the batch, its trades whose ids were counted dropped and its
  partials recomputed on the driver. The key only places the work; what counts is the identity
  read from the message.

Ids older than the horizon are forgotten. The driver's `redelivered` rule
(spark_jobs/trade_windows.py) uses the same clock, so a copy no longer remembered is recorded for
repair, never counted twice silently.

Spark's `dropDuplicatesWithinWatermark` did this per trade at about 20 us of core time per new
key, and `applyInPandasWithState` per series still cost more than half the job's time
(bench/results.md). A shuffle by series, so that each series was in one task, cost 12-15 % of
the rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_pipeline.formats import trade_message as message
from crypto_pipeline.formats.window_values import SERIES_SEPARATOR
from spark_jobs.sorted_runs import run_bounds
from spark_jobs.trade_seconds import (
    NUMERIC_ID,
    OUTPUT,
    checked_trades,
    partials_of,
    per_task,
    spark_ddl,
)

INTERVAL = np.dtype([("low", np.int64), ("high", np.int64), ("seen_ms", np.int64)])
# The executors' output: partials and dead letters (OUTPUT), and one row of kind "ids" per series
# with its ids: runs [low, high] of numbers as int64 pairs, the other ids one per line.
DEDUPED = pa.schema([*OUTPUT, ("id_runs", pa.binary()), ("id_texts", pa.string())])
DEDUPED_DDL = spark_ddl(DEDUPED)
# The ids of every series in the state file: a run of numbers (text null) or one other id.
IDS_SCHEMA = pa.schema(
    [
        ("series", pa.string()),
        ("low", pa.int64()),
        ("high", pa.int64()),
        ("text", pa.string()),
        ("seen_ms", pa.int64()),
    ]
)


def split_ids(trade_ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trade ids -> (which are numbers, their values where they are, every id as text)."""
    numeric = pc.fill_null(pc.match_substring_regex(trade_ids, NUMERIC_ID), False).to_numpy(
        zero_copy_only=False
    )
    numbers = np.zeros(len(numeric), np.int64)
    numbers[numeric] = pc.cast(pc.filter(trade_ids, numeric), pa.int64()).to_numpy()
    return numeric, numbers, np.asarray(trade_ids.to_numpy(zero_copy_only=False), dtype=object)


def id_runs(numbers: np.ndarray) -> np.ndarray:
    """Numbers -> the runs of consecutive distinct ones, as rows [low, high] (int64)."""
    numbers = np.unique(numbers)
    if not len(numbers):
        return np.zeros((0, 2), np.int64)
    breaks = np.flatnonzero(np.diff(numbers) != 1) + 1
    return np.column_stack(
        [numbers[np.r_[0, breaks]], numbers[np.r_[breaks - 1, len(numbers) - 1]]]
    )


@dataclass(frozen=True)
class CountedIds:
    """The ids of one series counted within the horizon."""

    intervals: np.ndarray  # INTERVAL, disjoint, sorted by low
    texts: np.ndarray  # str
    text_ms: np.ndarray  # int64, when each text id was counted

    @classmethod
    def empty(cls) -> CountedIds:
        return cls(np.zeros(0, INTERVAL), np.zeros(0, dtype=object), np.zeros(0, np.int64))

    def counted(self, numbers: np.ndarray, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which numeric ids and which other ids are already counted."""
        lows, highs = self.intervals["low"], self.intervals["high"]
        at = np.searchsorted(lows, numbers, side="right") - 1
        inside = (at >= 0) & (numbers <= highs[np.maximum(at, 0)]) if len(lows) else at >= 0
        return inside, np.isin(texts, self.texts)

    def overlaps(self, runs: np.ndarray, texts: np.ndarray) -> bool:
        """Whether any id of these disjoint runs [low, high] or these other ids is counted."""
        lows, highs = self.intervals["low"], self.intervals["high"]
        # The counted interval starting last at or before a run's high is the only one that can
        # overlap it without another overlapping it too (the intervals are disjoint).
        at = np.searchsorted(lows, runs[:, 1], side="right") - 1
        hit = (at >= 0) & (highs[np.maximum(at, 0)] >= runs[:, 0]) if len(lows) else at >= 0
        return bool(hit.any() or np.isin(texts, self.texts).any())

    def adding(self, runs: np.ndarray, texts: np.ndarray, now_ms: int) -> CountedIds:
        """With new (uncounted) ids counted at `now_ms`: runs [low, high] and other ids.
        Intervals that touch become one with the newer time, so an exchange's sequential ids
        are one interval per series however the batches cut them: an id is then remembered as
        long as its neighbours are, which only drops a copy for longer."""
        added = np.zeros(len(runs), INTERVAL)
        added["low"], added["high"], added["seen_ms"] = runs[:, 0], runs[:, 1], now_ms
        intervals = np.concatenate([self.intervals, added])
        intervals = intervals[np.argsort(intervals["low"], kind="stable")]
        if len(intervals):
            first = np.flatnonzero(np.r_[True, intervals["low"][1:] != intervals["high"][:-1] + 1])
            joined = np.zeros(len(first), INTERVAL)
            joined["low"] = intervals["low"][first]
            joined["high"] = np.maximum.reduceat(intervals["high"], first)
            joined["seen_ms"] = np.maximum.reduceat(intervals["seen_ms"], first)
            intervals = joined
        texts = np.unique(texts)
        return CountedIds(
            intervals,
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

    def __len__(self) -> int:
        return len(self.intervals) + len(self.texts)


IdsBySeries = dict[str, CountedIds]


def uncounted(
    trades: pa.Table, ids: CountedIds, now_ms: int, horizon_ms: int
) -> tuple[pa.Table, CountedIds]:
    """One series' checked trades -> those whose id was not counted within the horizon, and the
    ids counted after them."""
    ids = ids.since(now_ms - horizon_ms)
    numeric, numbers, texts = split_ids(trades.column(message.TRADE_ID))
    known_numbers, known_texts = ids.counted(numbers[numeric], texts[~numeric])
    known = np.zeros(len(numeric), dtype=bool)
    known[numeric], known[~numeric] = known_numbers, known_texts
    new_numbers, new_texts = numeric & ~known, ~numeric & ~known
    return trades.filter(pa.array(~known)), ids.adding(
        id_runs(numbers[new_numbers]), texts[new_texts], now_ms
    )


def _series_keys(table: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(
        table.column("exchange"), table.column("symbol"), SERIES_SEPARATOR
    ).combine_chunks()


def _in_two_tasks(runs: np.ndarray, texts: np.ndarray) -> bool:
    """Whether tasks' ids of a series share one: runs [low, high] (disjoint within a task) that
    overlap, or a text id twice (unique within a task). Sorted by low, an overlapping pair
    implies an overlapping neighbour."""
    runs = runs[np.argsort(runs[:, 0], kind="stable")]
    return bool((runs[1:, 0] <= runs[:-1, 1]).any() or len(np.unique(texts)) < len(texts))


def drop_counted(
    partials: pa.Table,
    ids: pa.Table,
    counted: Mapping[str, CountedIds],
    now_ms: int,
    horizon_ms: int,
    trades_of: Callable[[list[str]], pa.Table],
) -> tuple[pa.Table, IdsBySeries]:
    """A batch's partials (PARTIAL_FIELDS) and its series' ids (`ids` rows of DEDUPED) -> the
    partials without the trades counted within the horizon, and every series' ids counted after
    them. `trades_of(series)`: the batch's checked trades (trade_seconds.CHECKED) of those
    series, read again only for a series with an id counted before or in two tasks."""
    before = {series: known.since(now_ms - horizon_ms) for series, known in counted.items()}
    after, again = dict(before), set()
    runs_of: dict[str, list[np.ndarray]] = {}
    texts_of: dict[str, list[np.ndarray]] = {}
    for series, run_bytes, text_lines in zip(
        _series_keys(ids).to_pylist(),
        ids.column("id_runs").to_pylist(),
        ids.column("id_texts").to_pylist(),
        strict=True,
    ):
        runs_of.setdefault(series, []).append(np.frombuffer(run_bytes, np.int64).reshape(-1, 2))
        texts = text_lines.split("\n") if text_lines else []
        texts_of.setdefault(series, []).append(np.array(texts, dtype=object))
    for series, task_runs in runs_of.items():
        runs, texts = np.concatenate(task_runs), np.concatenate(texts_of[series])
        known = after.get(series, CountedIds.empty())
        if _in_two_tasks(runs, texts) or known.overlaps(runs, texts):
            again.add(series)
        else:
            after[series] = known.adding(runs, texts, now_ms)
    if again:
        recounted = [partials.filter(pc.invert(pc.is_in(_series_keys(partials), pa.array(again))))]
        trades = trades_of(sorted(again))
        trade_series = _series_keys(trades)
        for series in sorted(again):
            fresh, after[series] = uncounted(
                trades.filter(pc.equal(trade_series, series)),
                before.get(series, CountedIds.empty()),
                now_ms,
                horizon_ms,
            )
            recounted.append(partials_of(fresh).select(partials.column_names).cast(partials.schema))
        partials = pa.concat_tables(recounted)
    return partials, {series: known for series, known in after.items() if len(known)}


def ids_table(ids: Mapping[str, CountedIds]) -> pa.Table:
    """Every series' counted ids as rows (IDS_SCHEMA), for the state file."""
    known = list(ids.values())
    runs = np.concatenate([np.zeros(0, INTERVAL), *(one.intervals for one in known)])
    texts = np.concatenate([np.zeros(0, dtype=object), *(one.texts for one in known)])
    is_text = np.r_[np.zeros(len(runs), bool), np.ones(len(texts), bool)]
    series = [name for name, one in ids.items() for _ in range(len(one.intervals))]
    series += [name for name, one in ids.items() for _ in range(len(one.texts))]
    return pa.table(
        {
            "series": pa.array(series, pa.string()),
            "low": pa.array(np.r_[runs["low"], np.zeros(len(texts), np.int64)], mask=is_text),
            "high": pa.array(np.r_[runs["high"], np.zeros(len(texts), np.int64)], mask=is_text),
            "text": pa.array(np.r_[np.full(len(runs), None), texts], pa.string()),
            "seen_ms": np.r_[runs["seen_ms"], *(one.text_ms for one in known)].astype(np.int64),
        },
        IDS_SCHEMA,
    )


def ids_from_table(table: pa.Table) -> IdsBySeries:
    """IDS_SCHEMA rows -> every series' counted ids."""
    table = table.sort_by([("series", "ascending"), ("low", "ascending")])
    names = table.column("series").to_numpy(zero_copy_only=False)
    is_text = pc.is_valid(table.column("text")).to_numpy(zero_copy_only=False)
    ids = {}
    for start, end in zip(*run_bounds(names), strict=True):
        rows = table.slice(start, end - start + 1)
        text = is_text[start : end + 1]
        runs = rows.filter(pa.array(~text))
        intervals = np.zeros(runs.num_rows, INTERVAL)
        for name in ("low", "high", "seen_ms"):
            intervals[name] = runs.column(name).to_numpy()
        others = rows.filter(pa.array(text))
        ids[str(names[start])] = CountedIds(
            intervals,
            np.asarray(others.column("text").to_numpy(zero_copy_only=False), dtype=object),
            others.column("seen_ms").to_numpy(),
        )
    return ids


def ids_rows(checked: pa.Table) -> pa.Table:
    """A task's checked rows -> one row per series with its trades' ids (DEDUPED's id columns)."""
    trades = checked.filter(pc.equal(checked.column("kind"), "trade"))
    codes = _series_keys(trades).dictionary_encode().indices.to_numpy()
    numeric, numbers, texts = split_ids(trades.column(message.TRADE_ID))
    order = np.argsort(codes, kind="stable")
    rows: dict[str, list[Any]] = {"exchange": [], "symbol": [], "id_runs": [], "id_texts": []}
    if len(order):
        for start, end in zip(*run_bounds(codes[order]), strict=True):
            rows_of = order[start : end + 1]
            first = int(rows_of[0])
            rows["exchange"].append(trades.column("exchange")[first].as_py())
            rows["symbol"].append(trades.column("symbol")[first].as_py())
            rows["id_runs"].append(id_runs(numbers[rows_of[numeric[rows_of]]]).tobytes())
            rows["id_texts"].append("\n".join(np.unique(texts[rows_of[~numeric[rows_of]]])))
    count = len(rows["exchange"])
    return pa.table({"kind": pa.array(["ids"] * count, pa.string()), **rows})


def task_partials_and_ids(future_ms: int) -> Any:
    """mapInArrow on the trades topic's records (value, partition, offset, timestamp): a
    task's partials, dead letters and each series' ids (DEDUPED)."""

    def step(records: pa.Table) -> pa.Table:
        checked = checked_trades(records.to_batches()[0], future_ms)
        output = pa.concat_tables(
            [partials_of(checked), ids_rows(checked)], promote_options="default"
        )
        return output.select(DEDUPED.names).cast(DEDUPED)

    return per_task(step)
