"""The aggregates in both sinks, materialized together by the Spark job run through Dagster Pipes
(available-now: process what is in Kafka, then stop)."""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from crypto_assets.aggregation.late_repair import repair_late_rows
from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.resources import InfluxResource, KafkaResource, MongoResource, SparkResource
from spark_jobs.interface.config import (
    AVAILABLE_NOW,
    DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    DEFAULT_WATERMARK,
    DEFAULT_WINDOWS,
    JobConfig,
)
from spark_jobs.interface.heartbeat import running_stream_pid

MONGO_ASSET = dg.AssetKey("mongo_realtime")
INFLUX_ASSET = dg.AssetKey("influx_ohlcv")


class SparkJobConfig(dg.Config):
    """Streaming settings of the OHLCV job (run config); connections come from the resources."""

    windows: str = Field(
        default=",".join(DEFAULT_WINDOWS), description="window lengths, comma-separated"
    )
    watermark: str = Field(default=DEFAULT_WATERMARK, description="how late an event may arrive")
    max_offsets_per_trigger: int = Field(
        default=DEFAULT_MAX_OFFSETS_PER_TRIGGER, description="rows per micro-batch at most"
    )
    checkpoint_dir: str | None = Field(
        default=None, description="default: <state dir of the spark resource>/checkpoints/<topic>"
    )


def job_config(
    config: SparkJobConfig,
    trigger: str,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
    spark: SparkResource,
    status_file: str | None = None,
) -> JobConfig:
    """The Spark job's configuration, built from the resources and the run config only."""
    return JobConfig(
        kafka=kafka.target,
        mongo=mongo.target,
        influx=influx.target,
        checkpoint_dir=config.checkpoint_dir or str(spark.checkpoint_dir(kafka.topic)),
        spark_master=spark.master,
        spark_jars_dir=spark.connectors_dir,
        spark_driver_host=spark.driver_host,
        windows=tuple(w.strip() for w in config.windows.split(",") if w.strip()),
        watermark=config.watermark,
        trigger=trigger,
        max_offsets_per_trigger=config.max_offsets_per_trigger,
        status_file=status_file,
        future_tolerance_s=kafka.future_tolerance_s,
    )


def refuse_if_streaming(spark: SparkResource, topic: str) -> None:
    """Two jobs on the same checkpoints would corrupt them: one Spark job per topic at a time."""
    stream_pid = running_stream_pid(spark.status_file(topic))
    if stream_pid is not None:
        raise dg.Failure(
            f"the continuous job (pid {stream_pid}) is processing {topic} with the same "
            "checkpoints; stop streaming_job first"
        )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            MONGO_ASSET,
            deps=[kafka_klines],
            kinds={"spark", "mongodb"},
            description="OHLCV aggregates per (symbol, window, window_start) in MongoDB.",
        ),
        dg.AssetSpec(
            INFLUX_ASSET,
            deps=[kafka_klines],
            kinds={"spark", "influxdb"},
            description="OHLCV points in InfluxDB (tags symbol, window).",
        ),
    ],
    group_name="aggregates",
)
def ohlcv_sinks(
    context: dg.AssetExecutionContext,
    config: SparkJobConfig,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
    spark: SparkResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    refuse_if_streaming(spark, kafka.topic)
    job = job_config(config, AVAILABLE_NOW, kafka, mongo, influx, spark)
    command = spark.submit_command(job)
    context.log.info(" ".join(command))  # no secret: those travel in the environment
    results = pipes_subprocess_client.run(
        command=command, context=context, env=spark.environment(job)
    ).get_results()
    # Rows the run dropped as late (or earlier runs did) are repaired before the checks run.
    repair = repair_late_rows(context, pipes_subprocess_client, job, mongo, spark)
    for result in results:
        if isinstance(result, dg.MaterializeResult) and repair:
            metadata = {**(result.metadata or {}), "late_repair": dg.MetadataValue.json(repair)}
            result = dg.MaterializeResult(asset_key=result.asset_key, metadata=metadata)
        yield result
