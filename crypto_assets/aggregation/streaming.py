"""The continuous OHLCV job as a supervised Dagster run: it lives as long as the stream, logs the
job's progress, and stops the job cleanly when the run is terminated from the UI."""

import dagster as dg
from pydantic import Field

from crypto_assets.aggregation.launcher import (
    SparkJobConfig,
    SparkJobLauncher,
    TradeJobConfig,
)
from crypto_assets.aggregation.ohlcv_sinks import SPARK_JOB_TAG
from crypto_assets.aggregation.trade_candles import TRADES_JOB_TAG
from crypto_assets.resources import KafkaResource, SparkResource
from crypto_assets.supervision import RESTARTS, restart_of_failed_run
from crypto_pipeline.settings import trades_topic
from spark_jobs.interface.config import DEFAULT_CONTINUOUS_TRIGGER, TRADES
from spark_jobs.interface.heartbeat import running_stream_pid


class StreamingConfig(SparkJobConfig):
    trigger: str = Field(
        default=DEFAULT_CONTINUOUS_TRIGGER, description="processing-time trigger interval"
    )


@dg.op(description="Run the OHLCV job continuously until the run is terminated.")
def run_streaming_ohlcv(
    context: dg.OpExecutionContext,
    config: StreamingConfig,
    spark_job: SparkJobLauncher,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> None:
    spark_job.stream(context, pipes_subprocess_client, config, config.trigger)


@dg.job(
    tags={SPARK_JOB_TAG: "streaming"},
    description="The continuous Spark job (processing-time trigger), supervised by Dagster.",
)
def streaming_job() -> None:
    run_streaming_ohlcv()


class TradeStreamingConfig(TradeJobConfig):
    trigger: str = Field(
        default=DEFAULT_CONTINUOUS_TRIGGER, description="processing-time trigger interval"
    )


@dg.op(description="Run the trades job (candles from trades) continuously until terminated.")
def run_streaming_trades(
    context: dg.OpExecutionContext,
    config: TradeStreamingConfig,
    spark_job: SparkJobLauncher,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> None:
    spark_job.stream(context, pipes_subprocess_client, config, config.trigger, TRADES)


@dg.job(
    tags={TRADES_JOB_TAG: "streaming"},
    description="The continuous trades job: candles from <topic>.trades, supervised by Dagster.",
)
def trade_streaming_job() -> None:
    run_streaming_trades()


@dg.sensor(
    job=streaming_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Restarts the continuous job, with the same config, when its last run failed "
    "(the job crashed, a sink stayed down past its retries, its run worker died) and no stream "
    f"runs; gives up after {RESTARTS} failed runs in a row. A stopped run (terminated "
    "from the UI) is never restarted.",
)
def streaming_restart_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, spark: SparkResource
) -> dg.RunRequest | dg.SkipReason:
    return restart_unless_running(context, spark, kafka.topic, streaming_job, "streaming")


@dg.sensor(
    job=trade_streaming_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Restarts the continuous trades job, as streaming_restart_sensor does the "
    f"candle job: after a failed run, with the same config, at most {RESTARTS} times in a row.",
)
def trade_streaming_restart_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, spark: SparkResource
) -> dg.RunRequest | dg.SkipReason:
    topic = trades_topic(kafka.topic)
    return restart_unless_running(context, spark, topic, trade_streaming_job, "trades streaming")


def restart_unless_running(
    context: dg.SensorEvaluationContext,
    spark: SparkResource,
    topic: str,
    job: dg.JobDefinition,
    what: str,
) -> dg.RunRequest | dg.SkipReason:
    """A restart of the job's last run if it failed and no stream on `topic` is running."""
    stream_pid = running_stream_pid(spark.status_file(topic))
    if stream_pid is not None:
        return dg.SkipReason(f"the {what} job (pid {stream_pid}) is running")
    runs = context.instance.get_runs(dg.RunsFilter(job_name=job.name), limit=RESTARTS)
    return restart_of_failed_run(context, list(runs), what)
