"""Dagster resources bound to a test's own topic, database and measurement, and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from crypto_assets.resources import (
    InfluxResource,
    KafkaResource,
    MongoResource,
    SparkSubmitResource,
)
from crypto_pipeline.settings import Settings


def resources_for(settings: Settings, name: str) -> dict[str, Any]:
    """Topic, Mongo database and Influx measurement all named `name`."""
    return {
        "kafka": KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers, topic=name),
        "mongo": MongoResource(database=name, collection=settings.mongo_collection),
        "influx": InfluxResource(
            url=settings.influxdb_url,
            token=settings.influxdb_token,
            org=settings.influxdb_org,
            bucket=settings.influxdb_bucket,
            measurement=name,
        ),
        "spark_submit": SparkSubmitResource(master="local[2]"),
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
