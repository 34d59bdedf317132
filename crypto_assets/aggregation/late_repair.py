"""Late rows repaired: the Spark job's batch side (spark_jobs/backfill.py) launched through
Pipes over what the late ledger holds as unrepaired (crypto_pipeline/formats/late_ledger.py).
Used by the `ohlcv_sinks` asset after its run and by `backfill_job` (crypto_assets/aggregation/repairs.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg

from crypto_assets.resources import MongoResource, SparkResource
from spark_jobs.interface.config import AVAILABLE_NOW, JobConfig


def launch_backfill(
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    spark: SparkResource,
    job: JobConfig,
) -> dict[str, Any]:
    """Run the backfill and return its summary (sent as a Pipes custom message)."""
    command = spark.submit_command(job)
    context.log.info(" ".join(command))  # no secret: those travel in the environment
    invocation = pipes_subprocess_client.run(
        command=command, context=context, env=spark.environment(job)
    )
    messages = invocation.get_custom_messages()
    if not messages:
        raise dg.Failure("the backfill ended without its summary")
    return dict(messages[-1])


def repair_late_rows(
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    job: JobConfig,
    mongo: MongoResource,
    spark: SparkResource,
) -> dict[str, Any]:
    """Backfill the late ledger's open entries for the job's topic, per symbol and range (those a
    backfill found unrepairable wait for a person); {} if there is nothing to repair."""
    entries = mongo.open_late_entries(job.kafka.topic, with_unrepairable=False)
    if not entries:
        return {}
    symbols = sorted({e.symbol for e in entries})
    context.log.warning(
        f"{sum(e.rows for e in entries):,} late rows of {', '.join(symbols)} are not in the "
        "sinks yet: backfilling them"
    )
    backfill = dataclasses.replace(job, trigger=AVAILABLE_NOW, backfill_late="new")
    return launch_backfill(context, pipes_subprocess_client, spark, backfill)
