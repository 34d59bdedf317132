"""Candles built from trades in both sinks, apart from the kline-built ones: the Spark job with
`--source trades` (available-now) through Dagster Pipes, run by `trade_candles_job` and after each
replay of a trade file; the late ledger's entries repaired before the checks."""

from collections.abc import Iterator

import dagster as dg

from crypto_assets.aggregation.launcher import SparkJobLauncher, TradeJobConfig, refuse_if_streaming
from crypto_assets.aggregation.ohlcv_sinks import REPLAY_RUN_TAG, ohlcv_job
from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.resources import KafkaResource, SparkResource
from crypto_pipeline.settings import trades_topic
from spark_jobs.interface import summary
from spark_jobs.interface.config import TRADES
from spark_jobs.interface.heartbeat import running_stream_pid

MONGO_TRADE_ASSET = dg.AssetKey(summary.MONGO_TRADE_ASSET)
INFLUX_TRADE_ASSET = dg.AssetKey(summary.INFLUX_TRADE_ASSET)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            MONGO_TRADE_ASSET,
            deps=[kafka_klines],
            kinds={"spark", "mongodb"},
            description="Candles built from trades per (exchange, symbol, window, window_start) "
            "in MongoDB (<collection>_from_trades), with taker-buy and taker-sell volume.",
        ),
        dg.AssetSpec(
            INFLUX_TRADE_ASSET,
            deps=[kafka_klines],
            kinds={"spark", "influxdb"},
            description="Candles built from trades in InfluxDB (<measurement>_from_trades).",
        ),
    ],
    group_name="aggregates",
)
def trade_candles(
    context: dg.AssetExecutionContext,
    config: TradeJobConfig,
    spark_job: SparkJobLauncher,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    job = spark_job.job_config(config, source=TRADES)
    refuse_if_streaming(spark_job.spark, job.kafka.topic)
    yield from spark_job.materialize(context, pipes_subprocess_client, job)


# The trades job's runs: one at a time (they share the trades topic's checkpoint), beside the
# candle job's (crypto/spark-job), whose checkpoint is another.
TRADES_JOB_TAG = "crypto/spark-trades-job"

trade_candles_job = dg.define_asset_job(
    "trade_candles_job",
    selection=dg.AssetSelection.assets(trade_candles),
    tags={TRADES_JOB_TAG: "trades"},
    description="Run the trades job available-now (every new trade in <topic>.trades into "
    "candles in both sinks), then the checks of the trade-built candles.",
)


@dg.asset_sensor(
    asset_key=kafka_klines.key,
    jobs=[ohlcv_job, trade_candles_job],
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each replay, runs the Spark job available-now and the checks: the candle "
    "job after a replay of candles (unless the continuous job is running: it processes the "
    "replay itself), the trades job after a replay of trades.",
)
def replay_done_sensor(
    context: dg.SensorEvaluationContext,
    asset_event: dg.EventLogEntry,
    kafka: KafkaResource,
    spark: SparkResource,
) -> dg.RunRequest | dg.SkipReason:
    tags = {REPLAY_RUN_TAG: asset_event.run_id}
    materialization = asset_event.asset_materialization
    replayed = materialization.metadata.get("topic") if materialization else None
    if replayed is not None and replayed.value == trades_topic(kafka.topic):
        trades_pid = running_stream_pid(spark.status_file(replayed.value))
        if trades_pid is not None:
            return dg.SkipReason(f"the continuous trades job (pid {trades_pid}) processes it")
        return dg.RunRequest(
            run_key=f"replay:{asset_event.run_id}", job_name=trade_candles_job.name, tags=tags
        )
    stream_pid = running_stream_pid(spark.status_file(kafka.topic))
    if stream_pid is not None:
        return dg.SkipReason(f"the continuous job (pid {stream_pid}) processes {kafka.topic}")
    return dg.RunRequest(run_key=f"replay:{asset_event.run_id}", job_name=ohlcv_job.name, tags=tags)
