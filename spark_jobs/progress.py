"""Streaming progress: a query listener that logs each micro-batch and keeps totals, reported to
Dagster through Pipes when the job runs under Dagster, else only logged."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener

log = logging.getLogger("spark_jobs")


@dataclass
class QueryTotals:
    batches: int = 0
    input_rows: int = 0
    dropped_by_watermark: int = 0
    batch_durations_ms: list[int] = field(default_factory=list)
    last_rows_per_s: float = 0.0
    end_offsets: dict[str, dict[str, int]] = field(default_factory=dict)


class ProgressTracker(StreamingQueryListener):
    """Totals per query name, updated from Spark's progress events (thread-safe)."""

    def __init__(self, reporter: Any, status_file: Path | None = None) -> None:
        self.reporter = reporter
        self.status_file = status_file
        self.totals: dict[str, QueryTotals] = {}
        self.dead_letters = 0
        self.last_progress_at = time.time()
        self._lock = threading.Lock()

    def onQueryStarted(self, event: Any) -> None:
        self.reporter.log.info(f"query {event.name} started (id {event.id})")

    def onQueryProgress(self, event: Any) -> None:
        progress = event.progress
        dropped = sum(op.numRowsDroppedByWatermark for op in progress.stateOperators)
        with self._lock:
            totals = self.totals.setdefault(progress.name, QueryTotals())
            totals.batches += 1
            totals.input_rows += progress.numInputRows
            totals.dropped_by_watermark += dropped
            totals.batch_durations_ms.append(int(progress.durationMs.get("triggerExecution", 0)))
            if progress.numInputRows:  # empty trigger batches report 0 rows/s
                totals.last_rows_per_s = float(progress.processedRowsPerSecond or 0.0)
            for source in progress.sources:
                if source.endOffset:
                    totals.end_offsets = json.loads(source.endOffset)
            self.last_progress_at = time.time()
            self._write_status()
        if progress.numInputRows or dropped:
            self.reporter.log.info(
                f"{progress.name} batch {progress.batchId}: {progress.numInputRows} rows, "
                f"{progress.processedRowsPerSecond or 0:.0f} rows/s, "
                f"{progress.durationMs.get('triggerExecution', 0)} ms, "
                f"{dropped} dropped by watermark"
            )

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        if event.exception:
            self.reporter.log.error(f"query {event.id} failed: {event.exception}")

    def _write_status(self) -> None:
        """Heartbeat for the Dagster health sensor: our pid, the last progress time and the
        Kafka offsets each query has processed (written atomically)."""
        if self.status_file is None:
            return
        status = {
            "pid": os.getpid(),
            "last_progress_at": self.last_progress_at,
            "processed_offsets": {name: t.end_offsets for name, t in self.totals.items()},
        }
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.status_file.with_suffix(".tmp")
        partial.write_text(json.dumps(status))
        partial.replace(self.status_file)

    def add_dead_letters(self, count: int) -> None:
        with self._lock:
            self.dead_letters += count

    def summary(self) -> dict[str, Any]:
        """Metadata for the Dagster materializations (JSON-friendly)."""
        with self._lock:
            per_query = {
                name: {
                    "batches": t.batches,
                    "input_rows": t.input_rows,
                    "dropped_by_watermark": t.dropped_by_watermark,
                    "max_batch_ms": max(t.batch_durations_ms, default=0),
                    "mean_batch_ms": round(
                        sum(t.batch_durations_ms) / max(len(t.batch_durations_ms), 1), 1
                    ),
                }
                for name, t in sorted(self.totals.items())
            }
            aggregates = [t for name, t in self.totals.items() if name.startswith("ohlcv_")]
            first = aggregates[0] if aggregates else QueryTotals()
            return {
                "input_rows": first.input_rows,
                "rows_per_s": round(first.last_rows_per_s, 1),
                "dropped_by_watermark": sum(t.dropped_by_watermark for t in aggregates),
                "dead_letters": self.dead_letters,
                "kafka_end_offsets": first.end_offsets,
                "queries": per_query,
            }


class LogReporter:
    """Stands in for the Pipes context when the job runs outside Dagster."""

    def __init__(self) -> None:
        self.log = log

    def report_asset_materialization(
        self, metadata: dict[str, Any] | None = None, asset_key: str | None = None
    ) -> None:
        self.log.info(f"{asset_key}: {json.dumps(metadata, default=str)}")

    def close(self) -> None:
        pass


def open_reporter() -> Any:
    """The Dagster Pipes context if Dagster launched us, else a logging stand-in."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        return open_dagster_pipes()
    return LogReporter()
