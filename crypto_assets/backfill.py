"""Repairs of late data: the Spark job's batch side (spark_jobs/backfill.py) launched through
Pipes, after an available-now run that dropped late candles (from the `ohlcv_sinks` asset), from
the sensor that watches the late ledger while the continuous job runs, or by hand from the UI
(`backfill_job`). A backfill shares no checkpoint with the stream, so it may run beside it."""

import dataclasses
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from crypto_assets.assets.aggregates import SparkJobConfig, job_config
from crypto_assets.late_repair import launch_backfill, repair_late_rows
from crypto_assets.resources import InfluxResource, KafkaResource, MongoResource, SparkResource
from crypto_pipeline.replay.formats import iso_to_ms
from spark_jobs.config import AVAILABLE_NOW


class BackfillConfig(SparkJobConfig):
    """Leave start and end empty to repair every unrepaired entry of the late ledger."""

    symbols: str = Field(default="", description="comma-separated; empty: every symbol")
    start: str = Field(default="", description="ISO-8601 event time (inclusive)")
    end: str = Field(default="", description="ISO-8601 event time (exclusive)")


@dg.op(description="Recompute the windows of a range of event time from the whole topic.")
def backfill_windows(
    context: dg.OpExecutionContext,
    config: BackfillConfig,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
    spark: SparkResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> None:
    job = job_config(config, AVAILABLE_NOW, kafka, mongo, influx, spark)
    if not config.start and not config.end:
        summary = repair_late_rows(context, pipes_subprocess_client, job, mongo, spark)
        context.log.info(f"backfill: {summary or 'nothing to repair'}")
        return
    if not (config.start and config.end):
        raise dg.Failure("give both start and end, or neither (repair the late ledger)")
    symbols = tuple(s.strip().upper() for s in config.symbols.split(",") if s.strip())
    backfill = dataclasses.replace(
        job,
        backfill_symbols=symbols or None,
        backfill_start_ms=iso_to_ms(config.start),
        backfill_end_ms=iso_to_ms(config.end),
    )
    summary = launch_backfill(context, pipes_subprocess_client, spark, backfill)
    context.log.info(f"backfill: {summary}")


@dg.job(description="Backfill: windows recomputed from the topic (default: repair late rows).")
def backfill_job() -> None:
    backfill_windows()


@dg.sensor(
    job=backfill_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Repairs late rows: a backfill when the late ledger holds unrepaired entries and "
    "no backfill is running.",
)
def late_rows_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, mongo: MongoResource
) -> dg.RunRequest | dg.SkipReason:
    entries = mongo.unrepaired_late(kafka.topic)
    if not entries:
        return dg.SkipReason(f"no unrepaired late rows on {kafka.topic}")
    active = context.instance.get_run_records(
        dg.RunsFilter(
            job_name=backfill_job.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    )
    if active:
        return dg.SkipReason("a backfill is running")
    return dg.RunRequest(
        run_key=f"late:{datetime.now(tz=UTC):%Y%m%dT%H%M%S}",
        tags={"crypto/late-rows": str(sum(e.rows for e in entries))},
    )
