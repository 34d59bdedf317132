"""`crypto-pipeline backfill`: the Spark job's batch side (spark_jobs/backfill.py) from the
command line, over a range given by hand or over what the late ledger holds as unrepaired."""

from __future__ import annotations

import dataclasses
import os
import subprocess

from crypto_pipeline.console import say
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.replay.input_files import ms_to_iso
from crypto_pipeline.settings import KafkaTarget, Settings
from spark_jobs.interface.config import JobConfig, split_names


def backfill(
    settings: Settings,
    topic: str | None,
    symbols: frozenset[str] | None,
    start_ms: int | None,
    end_ms: int | None,
    late: bool,
    windows: str | None,
) -> int:
    job = JobConfig.from_settings(
        settings, kafka=KafkaTarget(settings.kafka.bootstrap_servers, topic or settings.kafka.topic)
    )
    if windows:
        job = dataclasses.replace(job, windows=split_names(windows))
    if late:
        if start_ms is not None or end_ms is not None or symbols:
            raise ValueError("--late repairs the late ledger: give no --symbols, --start or --end")
        entries = late_ledger.open_entries_in(settings.mongo, job.kafka.topic)
        if not entries:
            say(f"no late rows to repair on {job.kafka.topic}")
            return 0
        say(f"{sum(e.rows for e in entries):,} late rows to repair")
        job = dataclasses.replace(job, backfill_late="all")
    elif start_ms is None or end_ms is None:
        raise ValueError("give --start and --end (or --late)")
    else:
        job = dataclasses.replace(
            job,
            backfill_symbols=tuple(sorted(symbols)) if symbols else None,
            backfill_start_ms=start_ms,
            backfill_end_ms=end_ms,
        )
    scope = (
        "the late ledger"
        if late
        else f"{', '.join(job.backfill_symbols or ('every symbol',))}, "
        f"{ms_to_iso(start_ms)} .. {ms_to_iso(end_ms)}"  # type: ignore[arg-type]
    )
    say(f"backfill of {scope} on {job.kafka.topic} (Spark job) ...")
    finished = subprocess.run(job.driver_command(), env={**os.environ, **job.to_env()})
    if finished.returncode != 0:
        raise ValueError(f"the backfill failed (exit {finished.returncode}); its log is above")
    entries = late_ledger.open_entries_in(settings.mongo, job.kafka.topic) if late else []
    unrepairable = [e for e in entries if e.unrepairable]
    if unrepairable:
        raise ValueError(
            f"{len(unrepairable)} late-ledger entries cannot be repaired from what "
            f"{job.kafka.topic} holds; e.g. {unrepairable[0].unrepairable}"
        )
    return 0
