"""`crypto-pipeline backfill`: the Spark job's batch side (spark_jobs/backfill.py) from the
command line, over a range given by hand or over what the late ledger holds as unrepaired."""

from __future__ import annotations

import dataclasses
import subprocess

from crypto_pipeline.console import say
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.settings import KafkaTarget, Settings
from spark_jobs.interface import launch, repair
from spark_jobs.interface.config import JobConfig, split_names


def backfill(
    settings: Settings,
    topic: str | None,
    symbols: frozenset[str] | None,
    start_ms: int | None,
    end_ms: int | None,
    late: bool,
    windows: str | None,
    source: str,
) -> int:
    job = JobConfig.from_settings(
        settings,
        kafka=KafkaTarget(settings.kafka.bootstrap_servers, topic or settings.kafka.topic),
        source=source,
    )
    if windows:
        job = dataclasses.replace(job, windows=split_names(windows))
    if late:
        if start_ms is not None or end_ms is not None or symbols:
            raise ValueError("--late repairs the late ledger: give no --symbols, --start or --end")
        entries = late_ledger.open_entries_in(job.mongo, job.kafka.topic)
        backfill = repair.late_rows_backfill(job, entries, retry_unrepairable=True)
        if backfill is None:
            say(f"no late rows to repair on {job.kafka.topic}")
            return 0
        say(f"{repair.describe_late(entries)} to repair")
    elif start_ms is None or end_ms is None:
        raise ValueError("give --start and --end (or --late)")
    else:
        backfill = repair.range_backfill(job, symbols, start_ms, end_ms)
    say(f"{repair.describe_backfill(backfill)} (Spark job) ...")
    finished = subprocess.run(
        launch.driver_command(backfill), env=launch.process_environment(backfill)
    )
    if finished.returncode != 0:
        raise ValueError(f"the backfill failed (exit {finished.returncode}); its log is above")
    if late:
        error = repair.unrepairable_error(
            late_ledger.open_entries_in(job.mongo, job.kafka.topic), job.kafka.topic
        )
        if error:
            raise ValueError(error)
    return 0
