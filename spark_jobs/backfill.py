"""The batch side of the job: windows recomputed from everything the topic holds, for repairs.

The live stream drops a candle that arrives after its symbol's watermark (it counts it and records
it in the late ledger, crypto_pipeline/formats/late_ledger.py). A backfill recomputes, per
symbol and range (given by hand, or the open entries of the ledger recorded before it started),
every window that overlaps the range from all its candles: the same parsing and validation
(spark_jobs/transform.py) and the same windowed step (spark_jobs/open_windows.py, from an empty
state, so nothing is late).

- It reads the topic once, up to the end offsets it noted at its start, and goes through the
  range in chunks of whole windows (at most CHUNK_ROWS candles on the driver at a time, whatever
  the range).
- Each chunk is written in a turn of the write lease, only where the stored window is not newer
  (spark_jobs/window_versions.py): a backfill racing the stream never replaces a window the
  stream has completed since the backfill read the topic.
- It knows what the topic still holds: a ledger entry whose late candles are below a partition's
  earliest offset (deleted by retention), or whose window holds input the topic no longer has
  (its recomputation is refused as a conflict), is marked unrepairable with the reason, not
  repaired; such windows keep their stored values. The others are marked repaired.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crypto_pipeline.clients import offset_range
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.formats.late_ledger import LateEntry
from crypto_pipeline.formats.window_values import SERIES_SEPARATOR
from crypto_pipeline.replay.row_fields import ms_to_iso
from spark_jobs.batches import (
    GuardedWindows,
    is_outage,
    refused_entries,
    sink_writes,
    write_riding_out_outages,
)
from spark_jobs.interface.config import JobConfig
from spark_jobs.open_windows import CANDLE_COLUMNS, WindowLength, advance_all, window_lengths
from spark_jobs.session import kafka_source
from spark_jobs.sinks import late_ledger_collection
from spark_jobs.transform import keyed_records, parse_messages
from spark_jobs.window_versions import writing_turn

log = logging.getLogger("spark_jobs")

# Candles on the driver at a time, at most (a chunk is never smaller than one longest window).
CHUNK_ROWS = 500_000
EVERY_SYMBOL = ""  # the scope's key for "all symbols"

# A series or a symbol on every exchange (series_selector), or EVERY_SYMBOL -> [start, end) in ms
Ranges = dict[str, list[tuple[int, int]]]


@dataclass
class BackfillSummary:
    ranges: Ranges
    candles: int = 0
    windows: dict[str, int] = field(default_factory=dict)
    stale_windows: int = 0
    refused_windows: int = 0
    repaired_entries: int = 0
    unrepairable: dict[str, str] = field(default_factory=dict)  # ledger entry id -> why
    seconds: dict[str, float] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "backfill_ranges": {
                symbol or "every symbol": [f"{ms_to_iso(a)} .. {ms_to_iso(b)}" for a, b in spans]
                for symbol, spans in sorted(self.ranges.items())
            },
            "backfill_candles": self.candles,
            "backfill_windows": self.windows,
            "stale_windows": self.stale_windows,
            "refused_windows": self.refused_windows,
            "late_entries_repaired": self.repaired_entries,
            "late_entries_unrepairable": self.unrepairable,
            "backfill_seconds": self.seconds,
        }


def covering_range(start_ms: int, end_ms: int, size_ms: int) -> tuple[int, int]:
    """[start, end) widened to whole windows of this length (aligned to the epoch)."""
    return start_ms - start_ms % size_ms, -(-end_ms // size_ms) * size_ms


def chunk_span_ms(windows: Sequence[WindowLength]) -> int:
    """The shortest span that every window length divides: chunks of it hold whole windows."""
    return math.lcm(*(w.size_ms for w in windows))


def requested_ranges(config: JobConfig) -> Ranges:
    assert config.backfill_start_ms is not None and config.backfill_end_ms is not None
    span = (config.backfill_start_ms, config.backfill_end_ms)
    return {s: [span] for s in config.backfill_symbols or (EVERY_SYMBOL,)}


def widened(ranges: Ranges, span_ms: int) -> Ranges:
    """Each symbol's ranges widened to whole chunk spans, overlapping ones merged."""
    result: Ranges = {}
    for symbol, spans in ranges.items():
        merged: list[tuple[int, int]] = []
        for start, end in sorted(covering_range(a, b, span_ms) for a, b in spans):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        result[symbol] = merged
    return result


def read_candles(
    spark: SparkSession, config: JobConfig, ends: dict[int, int], ranges: Ranges
) -> DataFrame:
    """The valid candles of the ranges (already widened), from the topic up to `ends`."""
    ending = {config.kafka.topic: {str(p): offset for p, offset in ends.items()}}
    records = keyed_records(
        parse_messages(
            kafka_source(spark.read, config)
            .option("startingOffsets", "earliest")
            .option("endingOffsets", json.dumps(ending))
            .load(),
            config.future_tolerance_ms,
        )
    ).where(F.col("symbol").isNotNull())
    time = F.col("event_time_ms")
    if EVERY_SYMBOL in ranges:
        wanted = F.lit(False)
        for start, end in ranges[EVERY_SYMBOL]:
            wanted |= (time >= start) & (time < end)
        selected = records.where(wanted)
    else:
        bounds = spark.createDataFrame(
            [(s, a, b) for s, spans in ranges.items() for a, b in spans],
            "range_symbol string, range_start long, range_end long",
        )
        selected = records.join(
            F.broadcast(bounds),
            # A range's key is a series, or a symbol on every exchange (series_selector).
            (
                (records["symbol"] == bounds["range_symbol"])
                | (
                    F.substring_index(records["symbol"], SERIES_SEPARATOR, -1)
                    == bounds["range_symbol"]
                )
            )
            & (time >= bounds["range_start"])
            & (time < bounds["range_end"]),
        )
    return selected.select("symbol", *CANDLE_COLUMNS)


def chunks(bucket_rows: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Consecutive buckets (number, rows) grouped into [first, last] runs of at most `limit`
    rows (a bucket larger than that is a chunk of its own)."""
    result: list[tuple[int, int]] = []
    rows = 0
    for bucket, count in sorted(bucket_rows):
        if result and rows + count <= limit:
            result[-1] = (result[-1][0], bucket)
            rows += count
        else:
            result.append((bucket, bucket))
            rows = count
    return result


def windows_in_scope(
    candles: pd.DataFrame, windows: Sequence[WindowLength], ranges: Ranges
) -> pd.DataFrame:
    """Every window of every length that overlaps its symbol's ranges, from all its candles."""
    computed = []
    series = candles["symbol"]
    symbols = series.str.partition(SERIES_SEPARATOR)[2]  # a range's key may name a symbol alone
    for window in windows:
        starts = candles["event_time_ms"] - candles["event_time_ms"] % window.size_ms
        keep = pd.Series(False, index=candles.index)
        for symbol, spans in ranges.items():
            own = (
                pd.Series(True, index=candles.index)
                if symbol == EVERY_SYMBOL
                else (series == symbol) | (symbols == symbol)
            )
            for start, end in spans:
                keep |= own & (starts < end) & (starts + window.size_ms > start)
        # From an empty state nothing is late: every window is computed from all its candles.
        computed.append(advance_all({}, candles[keep], [window], delay_ms=0).aggregates)
    return pd.concat(computed, ignore_index=True)


WINDOW_KEY = ("symbol", "window", "window_start_ms", "window_end_ms")


def _frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({name: [] for name in WINDOW_KEY})
    )


def none_recomputed(entry: LateEntry, computed: pd.DataFrame) -> str | None:
    """Why nothing of the entry's range could be recomputed, if nothing could."""
    own = computed[
        (computed["symbol"] == entry.series)
        & (computed["window_start_ms"] <= entry.last_event_ms)
        & (computed["window_end_ms"] > entry.first_event_ms)
    ]
    if len(own):
        return None
    return "the topic holds none of its candles any more (retention): nothing was recomputed"


def deleted_by_retention(entry: LateEntry, earliest: dict[int, int]) -> str | None:
    """Why the entry's late candles are gone from the topic, if they are."""
    for partition, (lowest, _) in entry.offsets.items():
        kept_from = earliest.get(int(partition), 0)
        if lowest < kept_from:
            return (
                f"its late candles (partition {partition} from offset {lowest}) were deleted by "
                f"the topic's retention (the partition starts at offset {kept_from})"
            )
    return None


def refused_reason(entry: LateEntry, refused: pd.DataFrame) -> str | None:
    """Why a window of the entry could not be recomputed whole, if one could not."""
    own = refused[
        (refused["symbol"] == entry.series)
        & (refused["window_start_ms"] <= entry.last_event_ms)
        & (refused["window_end_ms"] > entry.first_event_ms)
    ]
    if own.empty:
        return None
    first = own.iloc[0]
    start = ms_to_iso(int(first["window_start_ms"]))
    return (
        f"{len(own)} windows (first {first['window']} at {start}) "
        "hold candles the topic no longer has (retention): their stored values are kept; "
        "replay the source of that range, then `crypto-pipeline backfill --late`"
    )


def run_backfill(spark: SparkSession, config: JobConfig) -> BackfillSummary:
    started_at = datetime.now(tz=UTC)  # ledger entries recorded later may be past the read
    windows = window_lengths(config.windows)
    guarded = "mongo" in config.sinks
    entries: list[LateEntry] = []
    if config.backfill_late is not None:
        if guarded:
            entries = late_ledger.open_entries(
                late_ledger_collection(config),
                config.kafka.topic,
                recorded_before=started_at,
                with_unrepairable=config.backfill_late == "all",
            )
        ranges: Ranges = late_ledger.repair_ranges(entries)
    else:
        ranges = requested_ranges(config)
    summary = BackfillSummary(ranges)
    if not ranges:
        log.info("backfill: nothing to repair on %s", config.kafka.topic)
        return summary

    started = time.monotonic()
    earliest, ends = offset_range(config.kafka.bootstrap_servers, config.kafka.topic)
    span = chunk_span_ms(windows)
    candles = read_candles(spark, config, ends, widened(ranges, span))
    candles = candles.withColumn("chunk", F.floor(F.col("event_time_ms") / span)).persist()
    bucket_rows = [
        (int(r["chunk"]), int(r["count"])) for r in candles.groupBy("chunk").count().collect()
    ]
    summary.candles = sum(count for _, count in bucket_rows)
    summary.seconds["read"] = time.monotonic() - started
    planned = chunks(bucket_rows, CHUNK_ROWS)
    log.info(
        "backfill: %d candles to recompute in %d chunks (read in %.1f s)",
        summary.candles,
        len(planned),
        summary.seconds["read"],
    )

    guard = GuardedWindows(config, f"backfill {uuid.uuid4().hex[:8]}")
    patience_s = config.sink_outage_patience_s
    refused, recomputed = [], []  # windows refused as conflicts; keys of every window computed
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sink") as pool:
        for number, (first, last) in enumerate(planned, start=1):
            started = time.monotonic()
            part = candles.where(F.col("chunk").between(first, last)).drop("chunk").toPandas()
            computed = windows_in_scope(part, windows, ranges)
            log.info(
                "backfill: chunk %d of %d, %d candles: %d windows computed; writing",
                number,
                len(planned),
                len(part),
                len(computed),
            )
            recomputed.append(computed[list(WINDOW_KEY)])
            for label, count in computed["window"].value_counts().items():
                summary.windows[str(label)] = summary.windows.get(str(label), 0) + int(count)
            summary.seconds["windows"] = summary.seconds.get("windows", 0.0) + (
                time.monotonic() - started
            )
            if not guarded:
                write_riding_out_outages(pool, sink_writes(config, computed), patience_s)
                continue
            with writing_turn(guard.lease, patience_s, is_outage):
                admission = guard.admit(computed)
                writes = sink_writes(config, admission.admitted, unstored=admission.unstored)
                write_riding_out_outages(pool, writes, patience_s)
                guard.written(admission.admitted)
            summary.stale_windows += admission.stale
            summary.refused_windows += len(admission.conflicts)
            refused.append(admission.conflicts[list(WINDOW_KEY)])
    candles.unpersist()

    conflicts, computed_keys = _frame(refused), _frame(recomputed)
    ledger = late_ledger_collection(config) if guarded else None
    if ledger is not None and entries:
        repaired = []
        for entry in entries:
            reason = (
                deleted_by_retention(entry, earliest)
                or refused_reason(entry, conflicts)
                or none_recomputed(entry, computed_keys)
            )
            if reason is None:
                repaired.append(entry.id)
            else:
                summary.unrepairable[entry.id] = reason
        late_ledger.decide(ledger, repaired, summary.unrepairable)
        summary.repaired_entries = len(repaired)
    elif ledger is not None and len(conflicts):  # a backfill of a range: its conflicts listed
        found = refused_entries(conflicts.assign(rows=0))
        topic, writer = config.kafka.topic, guard.lease.writer
        late_ledger.record(ledger, topic, writer, 0, found)
        summary.unrepairable = {
            late_ledger.entry_id(topic, writer, 0, e): str(refused_reason(e, conflicts))
            for e in found
        }
        late_ledger.decide(ledger, [], summary.unrepairable)
    log.info(
        "backfill of %s: %d candles, windows %s (%d stale, %d refused), %d ledger entries "
        "repaired, %d unrepairable%s",
        ", ".join(sorted(s or "every symbol" for s in ranges)),
        summary.candles,
        summary.windows,
        summary.stale_windows,
        summary.refused_windows,
        summary.repaired_entries,
        len(summary.unrepairable),
        "".join(f"; {i}: {reason}" for i, reason in summary.unrepairable.items()),
    )
    return summary
