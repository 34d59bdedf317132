"""The batch side of the job: windows recomputed from everything in the topic, for repairs.

The live stream drops a candle that arrives after its symbol's watermark (it counts it and
records it in the late ledger, crypto_pipeline/late_ledger.py). A backfill reads the whole topic
once as a batch, keeps the candles of the given symbols in the range, and recomputes, for each
window length, every window that overlaps [start, end) from all its candles: the same parsing and
validation (spark_jobs/transform.py) and the same windowed step (spark_jobs/open_windows.py, from
an empty state, so nothing is late), upserted into both sinks like a micro-batch. Then the ledger
entries it covered are marked repaired.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from crypto_pipeline import late_ledger
from crypto_pipeline.replay.formats import ms_to_iso
from spark_jobs.batches import sink_writes, write_concurrently
from spark_jobs.config import JobConfig, window_ms
from spark_jobs.open_windows import CANDLE_COLUMNS, WindowLength, advance_all
from spark_jobs.sinks import late_ledger_collection
from spark_jobs.transform import keyed_records, parse_messages

log = logging.getLogger("spark_jobs")


@dataclass
class BackfillSummary:
    symbols: list[str]
    start_ms: int
    end_ms: int
    candles: int = 0
    windows: dict[str, int] = field(default_factory=dict)
    repaired_entries: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "backfill_symbols": self.symbols,
            "backfill_start": ms_to_iso(self.start_ms),
            "backfill_end": ms_to_iso(self.end_ms),
            "backfill_candles": self.candles,
            "backfill_windows": self.windows,
            "late_entries_repaired": self.repaired_entries,
            "backfill_seconds": self.seconds,
        }


def covering_range(start_ms: int, end_ms: int, size_ms: int) -> tuple[int, int]:
    """[start, end) widened to whole windows of this length (aligned to the epoch)."""
    return start_ms - start_ms % size_ms, -(-end_ms // size_ms) * size_ms


def read_candles(
    spark: SparkSession, config: JobConfig, start_ms: int, end_ms: int
) -> pd.DataFrame:
    """The valid candles of the backfill's symbols in [start, end), from the whole topic."""
    records = keyed_records(
        parse_messages(
            spark.read.format("kafka")
            .option("kafka.bootstrap.servers", config.kafka.bootstrap_servers)
            .option("subscribe", config.kafka.topic)
            .option("startingOffsets", "earliest")
            .option("endingOffsets", "latest")
            .option("failOnDataLoss", "true")
            .load()
        )
    )
    wanted = (
        F.col("symbol").isNotNull()
        & (F.col("event_time_ms") >= start_ms)
        & (F.col("event_time_ms") < end_ms)
    )
    if config.backfill_symbols is not None:
        wanted &= F.col("symbol").isin(list(config.backfill_symbols))
    return records.where(wanted).select("symbol", *CANDLE_COLUMNS).toPandas()


def run_backfill(spark: SparkSession, config: JobConfig) -> BackfillSummary:
    assert config.backfill_start_ms is not None and config.backfill_end_ms is not None
    start_ms, end_ms = config.backfill_start_ms, config.backfill_end_ms
    windows = [WindowLength(label, window_ms(label)) for label in config.windows]
    ranges = {w.label: covering_range(start_ms, end_ms, w.size_ms) for w in windows}
    read_from = min(first for first, _ in ranges.values())
    read_to = max(last for _, last in ranges.values())
    # Ledger entries recorded from here on may be past what the read below sees.
    started_at = datetime.now(tz=UTC)

    started = time.monotonic()
    candles = read_candles(spark, config, read_from, read_to)
    summary = BackfillSummary(
        sorted(candles["symbol"].unique())
        if config.backfill_symbols is None
        else list(config.backfill_symbols),
        start_ms,
        end_ms,
        candles=len(candles),
    )
    summary.seconds["read"] = time.monotonic() - started

    started = time.monotonic()
    aggregates = []
    for window in windows:
        first, last = ranges[window.label]
        in_range = candles[(candles["event_time_ms"] >= first) & (candles["event_time_ms"] < last)]
        # From an empty state nothing is late: every window is computed from all its candles.
        step = advance_all({}, in_range, [window], delay_ms=0)
        summary.windows[window.label] = len(step.aggregates)
        aggregates.append(step.aggregates)
    computed = pd.concat(aggregates, ignore_index=True)
    summary.seconds["windows"] = time.monotonic() - started

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sink") as pool:
        summary.seconds.update(write_concurrently(pool, sink_writes(config, computed)))
    if "mongo" in config.sinks:
        summary.repaired_entries = late_ledger.mark_repaired(
            late_ledger_collection(config),
            config.kafka.topic,
            config.backfill_symbols,
            start_ms,
            end_ms,
            started_at,
        )
    log.info(
        "backfill of %s %s..%s: %d candles, windows %s, %d late entries repaired",
        ",".join(summary.symbols) or "(no symbol)",
        ms_to_iso(start_ms),
        ms_to_iso(end_ms),
        summary.candles,
        summary.windows,
        summary.repaired_entries,
    )
    return summary
