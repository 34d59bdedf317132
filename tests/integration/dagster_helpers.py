"""Dagster resources bound to a test's own topic, database and measurement; the Dagster services
on their own instance; polling."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_assets.aggregation.launcher import with_spark_job
from crypto_assets.resources import (
    InfluxResource,
    KafkaResource,
    LiveFeedResource,
    MongoResource,
    SparkResource,
)
from crypto_cli.dagster_services import DagsterServices, prepare_dagster_home
from crypto_pipeline.build_cache import spark_connectors_dir
from crypto_pipeline.settings import Settings
from tests.integration.conftest import free_port


def resources_for(
    settings: Settings,
    name: str,
    state_dir: Path,
    mongo_uri: str | None = None,
    spark_master: str = "local[2]",
) -> dict[str, Any]:
    """Topic, Mongo database and Influx measurement all named `name`; checkpoints and heartbeats
    under `state_dir`."""
    influx = settings.influx
    return with_spark_job(
        {
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
                master=spark_master,
                driver_host=settings.spark_driver_host,
                connectors_dir=str(spark_connectors_dir(settings.cache_dir)),
                state_dir=str(state_dir),
            ),
            "live_feed": LiveFeedResource(state_dir=str(state_dir)),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        }
    )


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str = "condition") -> Any:
    """Poll every 2 s; the first truthy result, or fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(2)
    raise AssertionError(f"{what} not met within {timeout_s:.0f} s")


@contextmanager
def dagster_services(settings: Settings, root: Path) -> Iterator[tuple[DagsterServices, str]]:
    """Code server, webserver and daemon on a free port, with their own instance, topic,
    database, measurement (all named as the yielded name) and an empty incoming folder; stopped
    by pid at the end."""
    name = f"t_dagster_{uuid.uuid4().hex[:8]}"
    (root / "incoming").mkdir()
    overrides = {
        "DAGSTER_HOME": str(root / "dagster_home"),
        "KAFKA_TOPIC": name,
        "MONGO_DATABASE": name,
        "INFLUXDB_MEASUREMENT": name,
        "INCOMING_DIR": str(root / "incoming"),
    }
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    services = DagsterServices(prepare_dagster_home(settings), free_port())
    try:
        services.start()
        yield services, name
    finally:
        services.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def backfills_requested(result: Any) -> list[str]:
    """The sources (candles, trades) of the backfills a late_rows_sensor evaluation requests."""
    if isinstance(result, dg.SkipReason):
        return []
    return [request.run_config["ops"]["backfill_windows"]["config"]["source"] for request in result]
