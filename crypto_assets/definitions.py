"""The single entry point of the Dagster code location (`workspace.yaml` loads `defs`).

The only place in `crypto_assets` that reads the settings: it fills the resources, which are the
single source of truth for everything else. Loaded lazily (`@dg.definitions`): importing this
module does nothing."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import dagster as dg

from crypto_assets import aggregation, ingestion, quality
from crypto_assets.aggregation.launcher import with_spark_job
from crypto_assets.resources import (
    IncomingFilesResource,
    InfluxResource,
    KafkaResource,
    LiveFeedResource,
    MongoResource,
    SparkResource,
)
from crypto_pipeline.build_cache import spark_connectors_dir
from crypto_pipeline.settings import Settings


def build_definitions(resources: Mapping[str, Any]) -> dg.Definitions:
    """Everything in this code location (each feature's definitions, merged), bound to the given
    resources (tests bind their own)."""
    return dg.Definitions.merge(
        ingestion.defs, aggregation.defs, quality.defs, dg.Definitions(resources=resources)
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

    resources: dict[str, Any] = {
        "kafka": KafkaResource(
            **asdict(settings.kafka), future_tolerance_s=settings.future_event_tolerance_s
        ),
        "mongo": MongoResource(
            **{**asdict(settings.mongo), "uri": secret("MONGO_URI", settings.mongo.uri)}
        ),
        "influx": InfluxResource(
            **{**asdict(settings.influx), "token": secret("INFLUXDB_TOKEN", settings.influx.token)}
        ),
        "spark": SparkResource(
            master=settings.spark_master,
            driver_host=settings.spark_driver_host,
            connectors_dir=str(spark_connectors_dir(settings.cache_dir)),
            state_dir=str(settings.stack_dir),
        ),
        "incoming": IncomingFilesResource(folder=str(settings.incoming_dir)),
        "live_feed": LiveFeedResource(
            ws_url=settings.live_ws_url,
            rest_url=settings.live_rest_url,
            state_dir=str(settings.stack_dir),
        ),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    return with_spark_job(resources)


@dg.definitions
def defs() -> dg.Definitions:
    # Dagster's own Pipes client calls a deprecated and a preview API of Dagster: nothing to do.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"dagster\._core\.pipes")
    warnings.filterwarnings("ignore", category=dg.PreviewWarning, module=r"dagster\._core\.pipes")
    return build_definitions(resources_from_settings(Settings.from_env(), os.environ))
