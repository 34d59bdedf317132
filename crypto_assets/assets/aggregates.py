"""The aggregates in both sinks, materialized together by the Spark job run through Dagster Pipes
(available-now: process what is in Kafka, then stop)."""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from crypto_assets.assets.market_data import kafka_klines
from crypto_assets.job_state import default_checkpoint_dir, running_stream_pid
from crypto_assets.resources import (
    InfluxResource,
    KafkaResource,
    MongoResource,
    SparkSubmitResource,
)

MONGO_ASSET = dg.AssetKey("mongo_realtime")
INFLUX_ASSET = dg.AssetKey("influx_ohlcv")


class SparkJobConfig(dg.Config):
    """Streaming settings of the OHLCV job; empty values take the job's defaults."""

    windows: str = Field(default="5m,1h,4h", description="window lengths, comma-separated")
    watermark: str = Field(default="30 minutes", description="how late an event may arrive")
    max_offsets_per_trigger: int | None = Field(default=None, description="micro-batch cap")
    checkpoint_dir: str | None = Field(
        default=None, description="default: <STACK_DIR>/checkpoints/<topic>"
    )


def job_arguments(
    config: SparkJobConfig,
    trigger: str,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
) -> list[str]:
    args = [
        "--trigger",
        trigger,
        "--topic",
        kafka.topic,
        "--windows",
        config.windows,
        "--watermark",
        config.watermark,
        "--mongo-database",
        mongo.database,
        "--mongo-collection",
        mongo.collection,
        "--influx-bucket",
        influx.bucket,
        "--measurement",
        influx.measurement,
        "--checkpoint-dir",
        config.checkpoint_dir or str(default_checkpoint_dir(kafka.topic)),
    ]
    if config.max_offsets_per_trigger:
        args += ["--max-offsets-per-trigger", str(config.max_offsets_per_trigger)]
    return args


def job_environment(
    spark_submit: SparkSubmitResource,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
) -> dict[str, str]:
    """The job reads its connections from the same settings the resources were given."""
    return {
        **spark_submit.env(),
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "MONGO_URI": mongo.uri,
        "INFLUXDB_URL": influx.url,
        "INFLUXDB_TOKEN": influx.token,
        "INFLUXDB_ORG": influx.org,
    }


def refuse_if_streaming(topic: str) -> None:
    """Two jobs on the same checkpoints would corrupt them: one Spark job per topic at a time."""
    stream_pid = running_stream_pid(topic)
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
            description="OHLCV aggregates per (symbol, window, window_start) in crypto.realtime.",
        ),
        dg.AssetSpec(
            INFLUX_ASSET,
            deps=[kafka_klines],
            kinds={"spark", "influxdb"},
            description="OHLCV points in the ohlcv measurement (tags symbol, window).",
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
    spark_submit: SparkSubmitResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    refuse_if_streaming(kafka.topic)
    command = spark_submit.command(job_arguments(config, "available-now", kafka, mongo, influx))
    context.log.info(" ".join(command))
    env = job_environment(spark_submit, kafka, mongo, influx)
    yield from pipes_subprocess_client.run(command=command, context=context, env=env).get_results()
