"""Dagster resources bound to a test's own topic, database and measurement, and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_assets.resources import InfluxResource, KafkaResource, MongoResource, SparkResource
from crypto_pipeline.build_cache import spark_connectors_dir
from crypto_pipeline.settings import Settings


def resources_for(
    settings: Settings, name: str, state_dir: Path, mongo_uri: str | None = None
) -> dict[str, Any]:
    """Topic, Mongo database and Influx measurement all named `name`; checkpoints and heartbeats
    under `state_dir`."""
    influx = settings.influx
    return {
        "kafka": KafkaResource(bootstrap_servers=settings.kafka.bootstrap_servers, topic=name),
        "mongo": MongoResource(
            uri=mongo_uri or settings.mongo.uri,
            database=name,
            collection=settings.mongo.collection,
        ),
        "influx": InfluxResource(
            url=influx.url,
            token=influx.token,
            org=influx.org,
            bucket=influx.bucket,
            measurement=name,
        ),
        "spark": SparkResource(
            master="local[2]",
            connectors_dir=str(spark_connectors_dir(settings.cache_dir)),
            state_dir=str(state_dir),
        ),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str = "condition") -> Any:
    """Poll every 2 s; the first truthy result, or fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(2)
    raise AssertionError(f"{what} not met within {timeout_s:.0f} s")
