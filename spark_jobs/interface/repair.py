"""Repair planning, for every launcher: which backfill of the Spark job repairs what (the late
ledger's open entries, or a range given by hand), and what to say of it and of what it could not
repair. The job's batch side (spark_jobs/backfill.py) carries the plan out."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from crypto_pipeline.formats.late_ledger import LateEntry
from crypto_pipeline.formats.window_values import series_selector
from crypto_pipeline.replay.row_fields import ms_to_iso
from spark_jobs.interface.config import AVAILABLE_NOW, JobConfig


def late_rows_backfill(
    job: JobConfig, entries: Sequence[LateEntry], retry_unrepairable: bool
) -> JobConfig | None:
    """The backfill of the ledger's open `entries` of the job's topic, per symbol and range;
    None if there are none. Entries a backfill found unrepairable wait for a person unless
    `retry_unrepairable` (after the source of their range was replayed again): give them only
    then."""
    if not entries:
        return None
    late = "all" if retry_unrepairable else "new"
    return dataclasses.replace(job, trigger=AVAILABLE_NOW, backfill_late=late)


def range_backfill(
    job: JobConfig, symbols: Iterable[str] | None, start_ms: int, end_ms: int
) -> JobConfig:
    """The backfill of the windows of `symbols` (None or none: every symbol; `SYMBOL` on every
    exchange, `exchange:SYMBOL` on one) that overlap [start_ms, end_ms) in event time,
    recomputed from the whole topic."""
    chosen = tuple(sorted({series_selector(s) for s in symbols or () if s.strip()}))
    return dataclasses.replace(
        job,
        trigger=AVAILABLE_NOW,
        backfill_symbols=chosen or None,
        backfill_start_ms=start_ms,
        backfill_end_ms=end_ms,
    )


def describe_late(entries: Sequence[LateEntry]) -> str:
    series = sorted({e.series for e in entries})
    return f"{sum(e.rows for e in entries):,} late rows of {', '.join(series)}"


def describe_backfill(job: JobConfig) -> str:
    if job.backfill_late is not None:
        return f"backfill of the late ledger on {job.kafka.topic}"
    symbols = ", ".join(job.backfill_symbols or ("every symbol",))
    span = f"{ms_to_iso(job.backfill_start_ms)} .. {ms_to_iso(job.backfill_end_ms)}"
    return f"backfill of {symbols}, {span} on {job.kafka.topic}"


def unrepairable_error(entries: Sequence[LateEntry], topic: str) -> str | None:
    """What a person must know of the entries no backfill can repair, or None."""
    unrepairable = [e for e in entries if e.unrepairable]
    if not unrepairable:
        return None
    return (
        f"{len(unrepairable)} late-ledger entries cannot be repaired from what {topic} holds; "
        f"e.g. {unrepairable[0].unrepairable}"
    )
