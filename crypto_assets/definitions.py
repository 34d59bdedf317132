"""The single entry point of the Dagster code location (`workspace.yaml` loads `defs`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg

from crypto_assets.assets.aggregates import ohlcv_sinks
from crypto_assets.assets.market_data import kafka_klines
from crypto_assets.checks import fresh, matches_source, nothing_left_behind, sinks_agree
from crypto_assets.jobs import (
    freshness_job,
    nightly_reconciliation,
    ohlcv_job,
    reconciliation_job,
    replay_job,
)
from crypto_assets.resources import (
    InfluxResource,
    KafkaResource,
    MongoResource,
    SparkSubmitResource,
    pyspark_resource,
)
from crypto_assets.sensors import (
    incoming_files_sensor,
    replay_done_sensor,
    streaming_health_sensor,
)
from crypto_assets.streaming import streaming_job
from crypto_pipeline.settings import Settings, export_defaults


def build_definitions(resources: Mapping[str, Any]) -> dg.Definitions:
    """Everything in this code location, bound to the given resources (tests bind their own)."""
    return dg.Definitions(
        assets=[kafka_klines, ohlcv_sinks],
        asset_checks=[sinks_agree, matches_source, nothing_left_behind, fresh],
        jobs=[replay_job, ohlcv_job, streaming_job, reconciliation_job, freshness_job],
        schedules=[nightly_reconciliation],
        sensors=[incoming_files_sensor, replay_done_sensor, streaming_health_sensor],
        resources=resources,
    )


export_defaults()
# Dagster's own Pipes client calls a deprecated and a preview API of Dagster; nothing to act on.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"dagster\._core\.pipes")
warnings.filterwarnings("ignore", category=dg.PreviewWarning, module=r"dagster\._core\.pipes")

defs = build_definitions(
    {
        "kafka": KafkaResource(
            bootstrap_servers=dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS"),
            topic=dg.EnvVar("KAFKA_TOPIC"),
        ),
        # MONGO_URI is read at run time: unset means the local stack's FerretDB.
        "mongo": MongoResource(
            database=dg.EnvVar("MONGO_DATABASE"), collection=dg.EnvVar("MONGO_COLLECTION")
        ),
        "influx": InfluxResource(
            url=dg.EnvVar("INFLUXDB_URL"),
            token=dg.EnvVar("INFLUXDB_TOKEN"),
            org=dg.EnvVar("INFLUXDB_ORG"),
            bucket=dg.EnvVar("INFLUXDB_BUCKET"),
            measurement=dg.EnvVar("INFLUXDB_MEASUREMENT"),
        ),
        "spark_submit": SparkSubmitResource(master=dg.EnvVar("SPARK_MASTER")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "pyspark": pyspark_resource(Settings.from_env()),
    }
)
