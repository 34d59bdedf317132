"""The continuous jobs' health (the candle job's and the trades job's), observed on their sink
assets (state, last progress, Kafka lag), and their freshness checked while they run."""

import time

import dagster as dg

from crypto_assets.aggregation.ohlcv_sinks import INFLUX_ASSET, MONGO_ASSET
from crypto_assets.aggregation.trade_candles import INFLUX_TRADE_ASSET, MONGO_TRADE_ASSET
from crypto_assets.quality.checks import fresh
from crypto_assets.quality.trade_checks import trade_fresh
from crypto_assets.resources import KafkaResource, SparkResource
from crypto_pipeline.settings import trades_topic
from spark_jobs.interface.heartbeat import read_status, streaming_health

freshness_job = dg.define_asset_job(
    "freshness_job",
    selection=dg.AssetSelection.checks(fresh),
    description="How far the sinks trail the newest event in Kafka.",
)
trade_freshness_job = dg.define_asset_job(
    "trade_freshness_job",
    selection=dg.AssetSelection.checks(trade_fresh),
    description="How far the trade-built candles' sinks trail the newest trade in Kafka.",
)

FRESHNESS_CHECK_EVERY_S = 120


@dg.sensor(
    jobs=[freshness_job, trade_freshness_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Health of the continuous Spark jobs (candles, and trades): state (running, "
    "stopped, failed, crashed), last progress, Kafka lag; recorded as observations of their sink "
    f"assets. While a job runs, its `fresh` check every {FRESHNESS_CHECK_EVERY_S} s.",
)
def streaming_health_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, spark: SparkResource
) -> dg.SensorResult:
    streams = (
        (kafka.topic, (MONGO_ASSET, INFLUX_ASSET), freshness_job.name),
        (
            trades_topic(kafka.topic),
            (MONGO_TRADE_ASSET, INFLUX_TRADE_ASSET),
            trade_freshness_job.name,
        ),
    )
    now = time.time()
    due = now - float(context.cursor or 0) >= FRESHNESS_CHECK_EVERY_S
    observations, requests = [], []
    for topic, assets, freshness in streams:
        status = read_status(spark.status_file(topic))
        if status is None:
            continue
        health = streaming_health(status, topic, kafka.end_offsets(topic), now)
        failed = health["state"] in ("failed", "crashed")
        log = context.log.warning if failed else context.log.info
        log(f"streaming job health ({topic}): {health}")
        observations += [dg.AssetObservation(asset_key=key, metadata=health) for key in assets]
        if due and health["alive"]:
            requests.append(dg.RunRequest(job_name=freshness))
    if not observations:
        topics = " or ".join(topic for topic, _, _ in streams)
        return dg.SensorResult(skip_reason=f"no streaming job has run for {topics}")
    return dg.SensorResult(
        asset_events=observations,
        run_requests=requests,
        cursor=str(now) if requests else context.cursor,
    )
