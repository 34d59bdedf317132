"""The single entry point of the Dagster code location (`workspace.yaml` loads `defs`).

The only place in `crypto_assets` that reads the settings: it fills the resources, which are the
single source of truth for everything else. Loaded lazily (`@dg.definitions`): importing this
module does nothing."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg

from crypto_assets.aggregation.ohlcv_sinks import ohlcv_sinks
from crypto_assets.aggregation.repairs import backfill_job, late_rows_sensor
from crypto_assets.aggregation.streaming import streaming_job
from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.jobs import (
    freshness_job,
    nightly_reconciliation,
    ohlcv_job,
    reconciliation_job,
    replay_job,
)
from crypto_assets.quality.checks import (
    fresh,
    late_rows_repaired,
    matches_source,
    nothing_left_behind,
    sinks_agree,
)
from crypto_assets.resources import (
    IncomingFilesResource,
    InfluxResource,
    KafkaResource,
    MongoResource,
    SparkResource,
)
from crypto_assets.sensors import (
    incoming_files_sensor,
    replay_done_sensor,
    streaming_health_sensor,
    streaming_restart_sensor,
)
from crypto_pipeline.build_cache import spark_connectors_dir
from crypto_pipeline.settings import Settings


def build_definitions(resources: Mapping[str, Any]) -> dg.Definitions:
    """Everything in this code location, bound to the given resources (tests bind their own)."""
    return dg.Definitions(
        assets=[kafka_klines, ohlcv_sinks],
        asset_checks=[sinks_agree, matches_source, nothing_left_behind, late_rows_repaired, fresh],
        jobs=[
            replay_job,
            ohlcv_job,
            streaming_job,
            backfill_job,
            reconciliation_job,
            freshness_job,
        ],
        schedules=[nightly_reconciliation],
        sensors=[
            incoming_files_sensor,
            replay_done_sensor,
            streaming_health_sensor,
            streaming_restart_sensor,
            late_rows_sensor,
        ],
        resources=resources,
    )


def resources_from_settings(settings: Settings, environ: Mapping[str, str]) -> dict[str, Any]:
    """The resources of this deployment. Every secret is passed as `dg.EnvVar`, so the UI shows
    the variable's name, never its value: one that came from `.env` (or a default) rather than
    the environment is first exported to this process's environment, where Dagster resolves it
    (the run workers load these definitions too)."""

    def secret(name: str, value: str) -> dg.EnvVar:
        if not environ.get(name):
            os.environ[name] = value
        return dg.EnvVar(name)

    return {
        "kafka": KafkaResource(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            topic=settings.kafka.topic,
            future_tolerance_s=settings.future_event_tolerance_s,
        ),
        "mongo": MongoResource(
            uri=secret("MONGO_URI", settings.mongo.uri),
            database=settings.mongo.database,
            collection=settings.mongo.collection,
        ),
        "influx": InfluxResource(
            url=settings.influx.url,
            token=secret("INFLUXDB_TOKEN", settings.influx.token),
            org=settings.influx.org,
            bucket=settings.influx.bucket,
            measurement=settings.influx.measurement,
        ),
        "spark": SparkResource(
            master=settings.spark_master,
            driver_host=settings.spark_driver_host,
            connectors_dir=str(spark_connectors_dir(settings.cache_dir)),
            state_dir=str(settings.stack_dir),
        ),
        "incoming": IncomingFilesResource(folder=str(settings.incoming_dir)),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


@dg.definitions
def defs() -> dg.Definitions:
    # Dagster's own Pipes client calls a deprecated and a preview API of Dagster: nothing to do.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"dagster\._core\.pipes")
    warnings.filterwarnings("ignore", category=dg.PreviewWarning, module=r"dagster\._core\.pipes")
    return build_definitions(resources_from_settings(Settings.from_env(), os.environ))
