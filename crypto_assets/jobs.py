"""Jobs launchable from the Dagster UI, each with a default config that works on the local stack,
and the nightly reconciliation schedule."""

import dagster as dg

from crypto_assets.aggregation.ohlcv_sinks import ohlcv_sinks
from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.quality.checks import (
    fresh,
    late_rows_repaired,
    matches_source,
    nothing_left_behind,
    sinks_agree,
)
from crypto_pipeline.settings import SAMPLE_FILE

# Runs that drive the Spark job carry this tag; the instance allows one such run at a time, since
# the available-now and the continuous job share the checkpoints of a topic.
SPARK_JOB_TAG = "crypto/spark-job"

REPLAY_DEFAULT_CONFIG = {"ops": {"kafka_klines": {"config": {"path": SAMPLE_FILE}}}}

replay_job = dg.define_asset_job(
    "replay_job",
    selection=[kafka_klines],
    config=REPLAY_DEFAULT_CONFIG,
    description="Replay a CSV file into the Kafka topic (default: the shipped sample, max speed).",
)

ohlcv_job = dg.define_asset_job(
    "ohlcv_job",
    selection=dg.AssetSelection.assets(ohlcv_sinks),
    tags={SPARK_JOB_TAG: "ohlcv"},
    description="Run the Spark job available-now (everything new in Kafka into both sinks), "
    "then every check of both sinks.",
)

reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.checks(
        sinks_agree, matches_source, nothing_left_behind, late_rows_repaired
    ),
    description="Full reconciliation: both sinks against each other and against the source.",
)

freshness_job = dg.define_asset_job(
    "freshness_job",
    selection=dg.AssetSelection.checks(fresh),
    description="How far the sinks trail the newest event in Kafka.",
)

nightly_reconciliation = dg.ScheduleDefinition(
    name="nightly_reconciliation",
    job=reconciliation_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 03:00 UTC: reconcile both sinks with each other and the source.",
)
