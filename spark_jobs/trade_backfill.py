"""Repairs of candles from trades: the windows over the late ledger's entries (or over a range)
recomputed from every trade the trades topic holds.

- The topic is read once, up to the end offsets noted at the start; each valid trade counts once
  (a batch `dropDuplicates` of its identity: exact, whatever the stream's dedupe horizon); the
  executors' steps (spark_jobs/trade_seconds.py) make the one-second partials, which come to the
  driver.
- Only windows that are closed by what was read and for the stream are written: ending at or
  before their series' newest trade minus the watermark, and at or before the stream's own
  watermark (its newest state). An open window is the stream's: it still counts late and re-sent
  trades there, and would write it again from its state. An entry is repaired once every window
  over its range is written; until then it stays open for the next backfill. An entry of which
  nothing could be recomputed (the topic no longer holds its trades) is unrepairable.
- A topic that has lost records to retention cannot give its windows back whole: nothing is
  written, the entries are marked unrepairable with that reason, and the stored windows keep
  their values.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from crypto_pipeline.clients import offset_range
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.formats.late_ledger import LateEntry
from crypto_pipeline.formats.window_values import SERIES_SEPARATOR
from crypto_pipeline.windows import interval_ms
from spark_jobs.backfill import EVERY_SYMBOL, BackfillSummary, Ranges, requested_ranges
from spark_jobs.batches import sink_writes, write_riding_out_outages
from spark_jobs.interface.config import JobConfig
from spark_jobs.open_windows import window_lengths
from spark_jobs.session import kafka_source
from spark_jobs.sinks import late_ledger_collection
from spark_jobs.state_store import STATE
from spark_jobs.trade_job import checked_records
from spark_jobs.trade_seconds import OUTPUT_DDL, task_partials_of
from spark_jobs.trade_windows import PARTIAL_NAMES, TradeStateStore, merged_windows, window_rows

log = logging.getLogger("spark_jobs")


def read_partials(spark: SparkSession, config: JobConfig, ends: dict[int, int]) -> pd.DataFrame:
    """Every valid trade of the topic up to `ends`, each key once, as one-second partials."""
    ending = {config.kafka.topic: {str(p): offset for p, offset in ends.items()}}
    records = (
        kafka_source(spark.read, config)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", json.dumps(ending))
        .load()
    )
    output = (
        checked_records(records, config)
        .where(F.col("kind") == "trade")
        .dropDuplicates(["copy_key"])
        .mapInArrow(task_partials_of(), OUTPUT_DDL)
        .select(*PARTIAL_NAMES)
    )
    return output.toArrow().to_pandas()


def in_ranges(series: pd.Series, start: pd.Series, size_ms: int, ranges: Ranges) -> pd.Series:
    """Windows (series, start) that overlap their series' ranges (a range's key may be a series,
    a symbol on every exchange, or every symbol)."""
    keep = pd.Series(False, index=series.index)
    if series.empty:
        return keep
    symbol = series.str.partition(SERIES_SEPARATOR)[2]
    for key, spans in ranges.items():
        own = (series == key) | (symbol == key) | (key == EVERY_SYMBOL)
        for first, end in spans:
            keep |= own & (start < end) & (start + size_ms > first)
    return keep


def run_trade_backfill(spark: SparkSession, config: JobConfig) -> BackfillSummary:
    started_at = datetime.now(tz=UTC)  # ledger entries recorded later may be past the read
    ledger = late_ledger_collection(config) if "mongo" in config.sinks else None
    entries: list[LateEntry] = []
    if config.backfill_late is not None and ledger is not None:
        entries = late_ledger.open_entries(
            ledger,
            config.kafka.topic,
            recorded_before=started_at,
            with_unrepairable=config.backfill_late == "all",
        )
    ranges = (
        late_ledger.repair_ranges(entries)
        if config.backfill_late is not None
        else requested_ranges(config)
    )
    summary = BackfillSummary(ranges)
    if not ranges:
        log.info("backfill: nothing to repair on %s", config.kafka.topic)
        return summary
    earliest, ends = offset_range(config.kafka.bootstrap_servers, config.kafka.topic)
    lost = {partition: offset for partition, offset in earliest.items() if offset > 0}
    if lost:
        reason = (
            f"the trades topic has lost records to retention (partition {min(lost)} starts at "
            f"offset {lost[min(lost)]}): windows recomputed from it could lack trades, so the "
            "stored ones are kept"
        )
        summary.unrepairable = {entry.id: reason for entry in entries}
        if ledger is not None:
            late_ledger.decide(ledger, [], summary.unrepairable)
        log.warning("backfill of %s: %s", config.kafka.topic, reason)
        return summary

    started = time.monotonic()
    partials = read_partials(spark, config, ends)
    series = partials.exchange + SERIES_SEPARATOR + partials.symbol
    closed_until = closed_before(config, partials.groupby(series).last_ms.max())
    summary.candles = int(partials.trades.sum())
    summary.seconds["read"] = time.monotonic() - started
    computed, still_open = [], []
    for length in window_lengths(config.windows):
        size = length.size_ms
        wanted = in_ranges(series, partials.second_ms - partials.second_ms % size, size, ranges)
        windows = window_rows(merged_windows(partials[wanted], size), length.label, size)
        closed = windows.window_end_ms <= windows.symbol.map(closed_until)
        computed.append(windows[closed])
        still_open.append(windows[~closed])
        summary.windows[length.label] = int(closed.sum())
    with_open = pd.concat(still_open, ignore_index=True)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sink") as pool:
        written = pd.concat(computed, ignore_index=True)
        writes = sink_writes(config, written, frontiers=True)
        write_riding_out_outages(pool, writes, config.sink_outage_patience_s)
    summary.seconds["total"] = time.monotonic() - started

    if ledger is not None and entries:
        repaired = []
        for entry in entries:
            if overlaps(entry, with_open):
                continue  # the stream still holds one of its windows: a later backfill
            if overlaps(entry, written):
                repaired.append(entry.id)
            else:
                summary.unrepairable[entry.id] = (
                    "the topic holds none of its trades any more: nothing was recomputed"
                )
        late_ledger.decide(ledger, repaired, summary.unrepairable)
        summary.repaired_entries = len(repaired)
    log.info(
        "backfill of %s: %d trades read, windows written %s, %d still open (the stream's), %d "
        "ledger entries repaired",
        config.kafka.topic,
        summary.candles,
        summary.windows,
        len(with_open),
        summary.repaired_entries,
    )
    return summary


def closed_before(config: JobConfig, newest_ms: pd.Series) -> pd.Series:
    """Per series, where its closed windows end at the latest: its newest trade in the topic minus
    the watermark, and no later than the stream's own watermark (its newest state), so that no
    window the stream still holds open is written (the stream would write it again, from its
    state, after a restart)."""
    closed = newest_ms - interval_ms(config.watermark)
    stream = TradeStateStore(Path(config.checkpoint_dir) / STATE).load(sys.maxsize).marks
    for name, (watermark_ms, _) in stream.items():
        if name in closed.index:
            closed[name] = min(closed[name], watermark_ms)
    return closed


def overlaps(entry: LateEntry, windows: pd.DataFrame) -> bool:
    return bool(
        (
            (windows.symbol == entry.series)
            & (windows.window_start_ms <= entry.last_event_ms)
            & (windows.window_end_ms > entry.first_event_ms)
        ).any()
    )
