"""Streaming progress: a query listener that logs each micro-batch and keeps totals, reported to
Dagster through Pipes when the job runs under Dagster, else only logged."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener

from spark_jobs.batches import BatchTotals, LateRange
from spark_jobs.interface.heartbeat import write_heartbeat

log = logging.getLogger("spark_jobs")


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class StreamTotals:
    batches: int = 0
    input_rows: int = 0
    batch_durations_ms: list[int] = field(default_factory=list)
    last_rows_per_s: float = 0.0
    end_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    # Wall-clock span of the batches that read rows: first start to last end (epoch ms).
    first_batch_start_ms: int | None = None
    last_batch_end_ms: int | None = None
    # From the foreachBatch: what was written, rejected and dropped, and what the state holds.
    windows: int = 0
    dead_letters: int = 0
    late: dict[str, LateRange] = field(default_factory=dict)
    state_symbols: int = 0
    state_candles: int = 0
    state_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class ProgressTracker(StreamingQueryListener):
    """Totals of the query, from Spark's progress events and from each micro-batch's writer
    (thread-safe); the heartbeat file for the Dagster health sensor."""

    def __init__(
        self, reporter: Any, status_file: Path | None = None, watermark_ms: int = 0
    ) -> None:
        self.reporter = reporter
        self.status_file = status_file
        self.watermark_ms = watermark_ms
        self.totals = StreamTotals()
        self.last_progress_at = time.time()
        self._applied: set[int] = set()
        self.outcome: str | None = None
        self._lock = threading.Lock()

    def onQueryStarted(self, event: Any) -> None:
        self.reporter.log.info(f"query {event.name} started (id {event.id})")

    def onQueryProgress(self, event: Any) -> None:
        self._apply(event.progress)

    def catch_up(self, recent_progress: list[Any]) -> None:
        """Apply the progress of batches whose event has not reached the listener yet (Spark
        delivers them asynchronously, possibly after the query has terminated)."""
        for progress in recent_progress:
            self._apply(progress)

    def _apply(self, progress: Any) -> None:
        duration_ms = int(progress.durationMs.get("triggerExecution", 0))
        with self._lock:
            if progress.batchId in self._applied:
                return
            self._applied.add(progress.batchId)
            totals = self.totals
            totals.batches += 1
            totals.input_rows += progress.numInputRows
            totals.batch_durations_ms.append(duration_ms)
            if progress.numInputRows:  # empty trigger batches report 0 rows/s
                totals.last_rows_per_s = float(progress.processedRowsPerSecond or 0.0)
                started = _iso_ms(progress.timestamp)
                if totals.first_batch_start_ms is None or started < totals.first_batch_start_ms:
                    totals.first_batch_start_ms = started
                ended = started + duration_ms
                totals.last_batch_end_ms = max(totals.last_batch_end_ms or 0, ended)
            for source in progress.sources:
                if source.endOffset:
                    totals.end_offsets = json.loads(source.endOffset)
            self.last_progress_at = time.time()
            self._write_status()
        if progress.numInputRows:
            # Where a batch's time went besides foreachBatch (addBatch): offsets, planning, logs.
            parts = ", ".join(
                f"{name} {ms}"
                for name, ms in progress.durationMs.items()
                if name != "triggerExecution"
            )
            self.reporter.log.info(
                f"{progress.name} batch {progress.batchId}: {progress.numInputRows} rows, "
                f"{progress.processedRowsPerSecond or 0:.0f} rows/s, {duration_ms} ms ({parts})"
            )

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        if event.exception:
            self.reporter.log.error(f"query {event.id} failed: {event.exception}")

    def record_batch(self, batch_id: int, batch: BatchTotals) -> None:
        with self._lock:
            totals = self.totals
            totals.windows += batch.windows
            totals.dead_letters += batch.dead_letters
            for symbol, late in batch.late.items():
                if symbol in totals.late:
                    totals.late[symbol].add(late)
                else:
                    totals.late[symbol] = LateRange(**asdict(late))
            totals.state_symbols = batch.state_symbols
            totals.state_candles = batch.state_candles
            totals.state_bytes = batch.state_bytes
            for stage, seconds in batch.seconds.items():
                totals.seconds[stage] = totals.seconds.get(stage, 0.0) + seconds

    def _write_status(self) -> None:
        """Heartbeat for the Dagster health sensor (spark_jobs/interface/heartbeat.py)."""
        if self.status_file is None:
            return
        write_heartbeat(
            self.status_file,
            last_progress_at=self.last_progress_at,
            watermark_ms=self.watermark_ms,
            processed_offsets=self.totals.end_offsets,
            late_rows=self._late(),
            state=self._state(),
            outcome=self.outcome,
        )

    def mark_started(self) -> None:
        """A heartbeat before the first batch: a new run replaces the last run's outcome."""
        with self._lock:
            self._write_status()

    def mark_ended(self, outcome: str) -> None:
        """The job ends: "stopped" (asked to, or available-now done) or "failed". A heartbeat
        without an outcome whose process is gone is a crash (the restart sensor's cue)."""
        with self._lock:
            self.outcome = outcome
            self._write_status()

    def _late(self) -> dict[str, dict[str, int]]:
        return {symbol: asdict(late) for symbol, late in sorted(self.totals.late.items())}

    def _state(self) -> dict[str, int]:
        totals = self.totals
        return {
            "symbols": totals.state_symbols,
            "candles": totals.state_candles,
            "bytes": totals.state_bytes,
        }

    def summary(self) -> dict[str, Any]:
        """Metadata for the Dagster materializations (JSON-friendly)."""
        with self._lock:
            totals = self.totals
            durations = totals.batch_durations_ms
            span_ms = (totals.last_batch_end_ms or 0) - (totals.first_batch_start_ms or 0)
            return {
                "input_rows": totals.input_rows,
                "rows_per_s": round(totals.last_rows_per_s, 1),
                "batches": totals.batches,
                "max_batch_ms": max(durations, default=0),
                "mean_batch_ms": round(sum(durations) / max(len(durations), 1), 1),
                "processing_seconds": round(span_ms / 1000, 3),
                "windows_written": totals.windows,
                "dead_letters": totals.dead_letters,
                "late_rows": sum(late.rows for late in totals.late.values()),
                "late_rows_by_symbol": self._late(),
                "state": self._state(),
                "seconds_per_stage": {k: round(v, 3) for k, v in sorted(totals.seconds.items())},
                "kafka_end_offsets": totals.end_offsets,
            }


class LogReporter:
    """Stands in for the Pipes context when the job runs outside Dagster."""

    def __init__(self) -> None:
        self.log = log

    def report_asset_materialization(
        self, metadata: dict[str, Any] | None = None, asset_key: str | None = None
    ) -> None:
        self.log.info(f"{asset_key}: {json.dumps(metadata, default=str)}")

    def report_custom_message(self, payload: Any) -> None:
        pass  # already logged as the job summary

    def close(self) -> None:
        pass


def open_reporter() -> Any:
    """The Dagster Pipes context if Dagster launched us, else a logging stand-in."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        return open_dagster_pipes()
    return LogReporter()
