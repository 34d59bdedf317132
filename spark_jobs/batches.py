"""The `foreachBatch` of the OHLCV query: each micro-batch is computed once (cached), then MongoDB,
InfluxDB and the dead-letter topic are written at the same time; a failure of any fails the batch
(Spark retries it from the checkpoint, and every write is idempotent)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame

from spark_jobs.config import JobConfig
from spark_jobs.sinks import write_batch_metrics, write_dead_letters, write_influx, write_mongo
from spark_jobs.transform import aggregates_of, dead_letters_of, summaries_of

log = logging.getLogger("spark_jobs")


@dataclass
class LateRange:
    """Candles that arrived after their symbol's watermark: how many, and their event times."""

    rows: int
    first_event_ms: int
    last_event_ms: int

    def add(self, other: LateRange) -> None:
        self.rows += other.rows
        self.first_event_ms = min(self.first_event_ms, other.first_event_ms)
        self.last_event_ms = max(self.last_event_ms, other.last_event_ms)


@dataclass
class BatchTotals:
    """What one micro-batch did, from the summary rows of the stateful step."""

    windows: int = 0
    dead_letters: int = 0
    late: dict[str, LateRange] = field(default_factory=dict)
    # What the state holds after the batch, for the symbols the batch touched.
    state_candles: dict[str, int] = field(default_factory=dict)
    state_bytes: dict[str, int] = field(default_factory=dict)
    # Seconds per stage: "compute" (read, parse, state step: the batch into the cache), then
    # each sink's write (they overlap).
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_summaries(cls, summaries: list[dict[str, Any]]) -> BatchTotals:
        totals = cls()
        for row in summaries:
            symbol = row["symbol"]
            totals.dead_letters += row["dead_letters"] or 0
            totals.windows += row["windows_emitted"] or 0
            if symbol is None:
                continue
            if row["late_rows"]:
                late = LateRange(row["late_rows"], row["late_first_ms"], row["late_last_ms"])
                totals.late[symbol] = late
            totals.state_candles[symbol] = row["state_candles"]
            totals.state_bytes[symbol] = row["state_bytes"]
        return totals

    @property
    def late_rows(self) -> int:
        return sum(late.rows for late in self.late.values())


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "-"


class BatchWriter:
    """Called by Spark for every micro-batch; `on_batch` receives its totals (the progress
    tracker keeps them for the heartbeat and the Dagster metadata)."""

    def __init__(self, config: JobConfig, on_batch: Callable[[int, BatchTotals], None]) -> None:
        self.config = config
        self.on_batch = on_batch
        self.pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="sink")

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            started = time.monotonic()
            # The only action on the whole batch: it computes it and fills the cache.
            summaries = [row.asDict() for row in summaries_of(batch).collect()]
            totals = BatchTotals.from_summaries(summaries)
            totals.seconds["compute"] = time.monotonic() - started
            totals.seconds.update(self._write(batch, batch_id, totals))
        finally:
            batch.unpersist()
        if "influx" in self.config.sinks:
            counts = {
                "windows": totals.windows,
                "dead_letters": totals.dead_letters,
                "late_rows": totals.late_rows,
            }
            write_batch_metrics("ohlcv", batch_id, counts, self.config)
        self.on_batch(batch_id, totals)
        if totals.windows or totals.dead_letters or totals.late:
            seconds = totals.seconds
            log.info(
                "batch %d: computed in %.2f s; %d windows (MongoDB %s, InfluxDB %s), "
                "%d dead letters, %d late rows%s",
                batch_id,
                seconds["compute"],
                totals.windows,
                _rate(totals.windows, seconds.get("mongo", 0.0)),
                _rate(totals.windows, seconds.get("influx", 0.0)),
                totals.dead_letters,
                totals.late_rows,
                "".join(
                    f"; late {symbol}: {late.rows} rows {late.first_event_ms}..{late.last_event_ms}"
                    for symbol, late in sorted(totals.late.items())
                ),
            )

    def _write(self, batch: DataFrame, batch_id: int, totals: BatchTotals) -> dict[str, float]:
        """Every sink at once; seconds per sink. The first failure is raised once all ended."""
        writes: dict[str, Callable[[], None]] = {}
        if totals.windows:
            aggregates = aggregates_of(batch)
            if "mongo" in self.config.sinks:
                writes["mongo"] = lambda: write_mongo(aggregates, batch_id, self.config)
            if "influx" in self.config.sinks:
                writes["influx"] = lambda: write_influx(aggregates, batch_id, self.config)
        if totals.dead_letters:
            dead = dead_letters_of(batch)
            writes["dead_letters"] = lambda: write_dead_letters(dead, batch_id, self.config)

        def timed(write: Callable[[], None]) -> float:
            started = time.monotonic()
            write()
            return time.monotonic() - started

        futures: dict[str, Future[float]] = {
            name: self.pool.submit(timed, write) for name, write in writes.items()
        }
        seconds, errors = {}, []
        for name, future in futures.items():
            try:
                seconds[name] = future.result()
            except Exception as error:  # re-raised below, after every sink has ended
                errors.append(error)
        if errors:
            raise errors[0]
        return seconds
