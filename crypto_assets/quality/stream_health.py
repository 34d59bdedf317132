"""The continuous job's health, observed on both sink assets (state, last progress, Kafka lag),
and its freshness checked while it runs."""

import time

import dagster as dg

from crypto_assets.aggregation.ohlcv_sinks import INFLUX_ASSET, MONGO_ASSET
from crypto_assets.quality.checks import fresh
from crypto_assets.resources import KafkaResource, SparkResource
from spark_jobs.interface.heartbeat import read_status, streaming_health

freshness_job = dg.define_asset_job(
    "freshness_job",
    selection=dg.AssetSelection.checks(fresh),
    description="How far the sinks trail the newest event in Kafka.",
)

FRESHNESS_CHECK_EVERY_S = 120


@dg.sensor(
    job=freshness_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Health of the continuous Spark job: state (running, stopped, failed, crashed), "
    f"last progress, Kafka lag; recorded as observations of both sink assets. While it runs, the "
    f"`fresh` check every {FRESHNESS_CHECK_EVERY_S} s.",
)
def streaming_health_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, spark: SparkResource
) -> dg.SensorResult:
    status = read_status(spark.status_file(kafka.topic))
    if status is None:
        return dg.SensorResult(skip_reason=f"no streaming job has run for {kafka.topic}")
    now = time.time()
    health = streaming_health(status, kafka.topic, kafka.end_offsets(), now)
    log = context.log.warning if health["state"] in ("failed", "crashed") else context.log.info
    log(f"streaming job health: {health}")
    due = health["alive"] and now - float(context.cursor or 0) >= FRESHNESS_CHECK_EVERY_S
    return dg.SensorResult(
        asset_events=[
            dg.AssetObservation(asset_key=key, metadata=health)
            for key in (MONGO_ASSET, INFLUX_ASSET)
        ],
        run_requests=[dg.RunRequest()] if due else [],
        cursor=str(now) if due else context.cursor,
    )
