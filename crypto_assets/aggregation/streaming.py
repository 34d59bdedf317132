"""The continuous OHLCV job as a supervised Dagster run: it lives as long as the stream, logs the
job's progress, and stops the job cleanly when the run is terminated from the UI."""

import dagster as dg
from pydantic import Field

from crypto_assets.aggregation.ohlcv_sinks import SparkJobConfig, job_config, refuse_if_streaming
from crypto_assets.jobs import SPARK_JOB_TAG
from crypto_assets.resources import InfluxResource, KafkaResource, MongoResource, SparkResource
from spark_jobs.interface.config import DEFAULT_CONTINUOUS_TRIGGER


class StreamingConfig(SparkJobConfig):
    trigger: str = Field(
        default=DEFAULT_CONTINUOUS_TRIGGER, description="processing-time trigger interval"
    )


@dg.op(description="Run the OHLCV job continuously until the run is terminated.")
def run_streaming_ohlcv(
    context: dg.OpExecutionContext,
    config: StreamingConfig,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
    spark: SparkResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> None:
    refuse_if_streaming(spark, kafka.topic)
    status_file = str(spark.status_file(kafka.topic))
    job = job_config(config, config.trigger, kafka, mongo, influx, spark, status_file)
    command = spark.driver_command(job)
    context.log.info(" ".join(command))  # no secret: those travel in the environment
    # Blocks while the stream runs; on termination Dagster interrupts this op and the client
    # stops the job, which stops its queries on SIGTERM/SIGINT.
    pipes_subprocess_client.run(command=command, context=context, env=spark.environment(job))


@dg.job(
    tags={SPARK_JOB_TAG: "streaming"},
    description="The continuous Spark job (processing-time trigger), supervised by Dagster.",
)
def streaming_job() -> None:
    run_streaming_ohlcv()
