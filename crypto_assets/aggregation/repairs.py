"""Repairs of late data: the Spark job's batch side (spark_jobs/backfill.py) launched through
Pipes, after an available-now run that dropped late candles (from the `ohlcv_sinks` asset), from
the sensor that watches the late ledger while the continuous job runs, or by hand from the UI
(`backfill_job`). A backfill shares no checkpoint with the stream, so it may run beside it."""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from crypto_assets.aggregation.launcher import SparkJobConfig, SparkJobLauncher
from crypto_assets.resources import InfluxResource, KafkaResource, MongoResource
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.replay.row_fields import iso_to_ms
from spark_jobs.interface import repair
from spark_jobs.interface.config import CANDLES, TRADES, trade_targets


class BackfillConfig(SparkJobConfig):
    """Leave start and end empty to repair the late ledger's open entries (per symbol and range;
    those a backfill found unrepairable too when `retry_unrepairable`)."""

    source: str = Field(default=CANDLES, description=f"{CANDLES} or {TRADES}: which job's windows")
    windows: str = Field(default="", description="window lengths; empty: the source's default")
    symbols: str = Field(default="", description="comma-separated; empty: every symbol")
    start: str = Field(default="", description="ISO-8601 event time (inclusive)")
    end: str = Field(default="", description="ISO-8601 event time (exclusive)")
    retry_unrepairable: bool = Field(
        default=False,
        description="with no range: also retry entries found unrepairable (after the source of "
        "their range was replayed again)",
    )


@dg.op(description="Recompute the windows of a range of event time from the whole topic.")
def backfill_windows(
    context: dg.OpExecutionContext,
    config: BackfillConfig,
    spark_job: SparkJobLauncher,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> None:
    job = spark_job.job_config(config, source=config.source)
    if not config.start and not config.end:
        summary = spark_job.repair_late_rows(
            context, pipes_subprocess_client, job, config.retry_unrepairable
        )
        context.log.info(f"backfill: {summary or 'nothing to repair'}")
        if summary.get("late_entries_unrepairable"):
            # Not a failed run (the sensor would stop repairing new entries): the
            # late_rows_repaired check shows them as ERROR until a person acts.
            context.log.warning(f"unrepairable: {summary['late_entries_unrepairable']}")
        return
    if not (config.start and config.end):
        raise dg.Failure("give both start and end, or neither (repair the late ledger)")
    backfill = repair.range_backfill(
        job, config.symbols.split(","), iso_to_ms(config.start), iso_to_ms(config.end)
    )
    summary = spark_job.backfill(context, pipes_subprocess_client, backfill)
    context.log.info(f"backfill: {summary}")


@dg.job(description="Backfill: windows recomputed from the topic (default: repair late rows).")
def backfill_job() -> None:
    backfill_windows()


# The sensor gives up after this many backfill runs in a row have failed (each is an alert in the
# UI); a successful run, from the UI or the CLI, lets it try again.
BACKFILL_ATTEMPTS = 3
RUNNING = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


@dg.sensor(
    job=backfill_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Repairs late rows: a backfill per ledger (the candle job's, the trades job's) "
    "that holds open entries (not found unrepairable) when no backfill is running; gives up after "
    f"{BACKFILL_ATTEMPTS} failed backfills in a row.",
)
def late_rows_sensor(
    context: dg.SensorEvaluationContext,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
) -> list[dg.RunRequest] | dg.SkipReason:
    trades, trade_mongo, _ = trade_targets(kafka.target, mongo.target, influx.target)
    ledgers = {
        CANDLES: late_ledger.open_entries_in(mongo.target, kafka.topic, with_unrepairable=False),
        TRADES: late_ledger.open_entries_in(trade_mongo, trades.topic, with_unrepairable=False),
    }
    if not any(ledgers.values()):
        return dg.SkipReason(f"no late rows to repair on {kafka.topic} or {trades.topic}")
    recent = context.instance.get_runs(
        dg.RunsFilter(job_name=backfill_job.name), limit=BACKFILL_ATTEMPTS
    )
    if recent and recent[0].status in RUNNING:
        return dg.SkipReason("a backfill is running")
    if len(recent) == BACKFILL_ATTEMPTS and all(
        run.status == dg.DagsterRunStatus.FAILURE for run in recent
    ):
        context.log.warning(
            f"{BACKFILL_ATTEMPTS} backfills failed in a row; not trying again until one succeeds "
            "(backfill_job from the UI, or `crypto-pipeline backfill --late`)"
        )
        return dg.SkipReason(f"{BACKFILL_ATTEMPTS} backfills failed in a row")
    return [
        dg.RunRequest(
            run_key=f"late:{source}:{datetime.now(tz=UTC):%Y%m%dT%H%M%S}",
            run_config={"ops": {"backfill_windows": {"config": {"source": source}}}},
            tags={"crypto/late-rows": str(sum(e.rows for e in entries))},
        )
        for source, entries in ledgers.items()
        if entries
    ]
