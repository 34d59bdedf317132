"""The continuous OHLCV job as a supervised Dagster run: it lives as long as the stream, logs the
job's progress, and stops the job cleanly when the run is terminated from the UI."""

import dagster as dg
from pydantic import Field

from crypto_assets.assets.aggregates import (
    SparkJobConfig,
    job_arguments,
    job_environment,
    refuse_if_streaming,
)
from crypto_assets.job_state import status_file
from crypto_assets.jobs import SPARK_JOB_TAG
from crypto_assets.resources import (
    InfluxResource,
    KafkaResource,
    MongoResource,
    SparkSubmitResource,
)


class StreamingConfig(SparkJobConfig):
    trigger: str = Field(default="5 seconds", description="processing-time trigger interval")


@dg.op(description="Run the OHLCV job continuously until the run is terminated.")
def run_streaming_ohlcv(
    context: dg.OpExecutionContext,
    config: StreamingConfig,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
    spark_submit: SparkSubmitResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> None:
    refuse_if_streaming(kafka.topic)
    args = job_arguments(config, config.trigger, kafka, mongo, influx)
    args += ["--status-file", str(status_file(kafka.topic))]
    command = spark_submit.driver_command(args)
    context.log.info(" ".join(command))
    env = job_environment(spark_submit, kafka, mongo, influx)
    # Blocks while the stream runs; on termination Dagster interrupts this op and the client
    # stops the job, which stops its queries on SIGTERM/SIGINT.
    pipes_subprocess_client.run(command=command, context=context, env=env)


@dg.job(
    tags={SPARK_JOB_TAG: "streaming"},
    description="The continuous Spark job (processing-time trigger), supervised by Dagster.",
)
def streaming_job() -> None:
    run_streaming_ohlcv()
