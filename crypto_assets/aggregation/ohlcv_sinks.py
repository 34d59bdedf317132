"""The aggregates in both sinks, materialized together by the Spark job run through Dagster Pipes
(available-now: process what is in Kafka, then stop), by `ohlcv_job` and after each replay."""

from collections.abc import Iterator

import dagster as dg

from crypto_assets.aggregation.launcher import (
    SparkJobConfig,
    SparkJobLauncher,
    refuse_if_streaming,
)
from crypto_assets.ingestion.market_data import kafka_klines
from spark_jobs.interface import summary

MONGO_ASSET = dg.AssetKey(summary.MONGO_ASSET)
INFLUX_ASSET = dg.AssetKey(summary.INFLUX_ASSET)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            MONGO_ASSET,
            deps=[kafka_klines],
            kinds={"spark", "mongodb"},
            description="OHLCV aggregates per (exchange, symbol, window, window_start) in MongoDB.",
        ),
        dg.AssetSpec(
            INFLUX_ASSET,
            deps=[kafka_klines],
            kinds={"spark", "influxdb"},
            description="OHLCV points in InfluxDB (tags exchange, symbol, window).",
        ),
    ],
    group_name="aggregates",
)
def ohlcv_sinks(
    context: dg.AssetExecutionContext,
    config: SparkJobConfig,
    spark_job: SparkJobLauncher,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    refuse_if_streaming(spark_job.spark, spark_job.topic)
    yield from spark_job.materialize(context, pipes_subprocess_client, spark_job.job_config(config))


# Runs that drive the Spark job carry this tag; the instance allows one such run at a time, since
# the available-now and the continuous job share the checkpoints of a topic.
SPARK_JOB_TAG = "crypto/spark-job"

ohlcv_job = dg.define_asset_job(
    "ohlcv_job",
    selection=dg.AssetSelection.assets(ohlcv_sinks),
    tags={SPARK_JOB_TAG: "ohlcv"},
    description="Run the Spark job available-now (everything new in Kafka into both sinks), "
    "then every check of both sinks.",
)


# Tag on the Spark runs a replay triggered: which replay run they aggregate.
REPLAY_RUN_TAG = "crypto/replay-run-id"
