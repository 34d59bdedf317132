"""Dagster resources: one typed class per external system, wired to the environment settings."""

from __future__ import annotations

import dataclasses
import glob
import sys
from pathlib import Path

import dagster as dg
from dagster_pyspark import PySparkResource

from crypto_pipeline.clients import end_offsets, read_messages
from crypto_pipeline.readback import (
    Aggregates,
    newest_influx_event_ms,
    newest_mongo_event_ms,
    read_influx,
    read_mongo,
)
from crypto_pipeline.settings import REPO_ROOT, Settings
from crypto_pipeline.spark import spark_conf
from crypto_pipeline.stack.artifacts import spark_jars_glob


class KafkaResource(dg.ConfigurableResource):
    """Kafka brokers and the market-data topic. Used by everything in Dagster that talks to Kafka;
    clients are created per call, with the timeouts of `crypto_pipeline.clients`."""

    bootstrap_servers: str
    topic: str
    partitions: int = 3
    retention_hours: int | None = None

    def settings(self) -> Settings:
        return dataclasses.replace(
            Settings.from_env(),
            kafka_bootstrap_servers=self.bootstrap_servers,
            kafka_topic=self.topic,
        )

    @property
    def retention_ms(self) -> int | None:
        return None if self.retention_hours is None else self.retention_hours * 3_600_000

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        return end_offsets(self.settings(), topic or self.topic)

    def read_messages(self, topic: str | None = None, last_only: bool = False) -> list[bytes]:
        return read_messages(self.settings(), topic or self.topic, last_only=last_only)


class MongoResource(dg.ConfigurableResource):
    """The MongoDB-compatible store of the aggregates (FerretDB on the local stack).
    An empty `uri` means the one from the settings: MONGO_URI, or the local stack's FerretDB."""

    uri: str = ""
    database: str
    collection: str

    def resolved_uri(self) -> str:
        return self.uri or Settings.from_env().mongo_uri

    def read_aggregates(self) -> tuple[Aggregates, list[str]]:
        """Every aggregate document, and the `_id`s that do not match their own key."""
        return read_mongo(self.resolved_uri(), self.database, self.collection)

    def newest_event_ms(self) -> int | None:
        return newest_mongo_event_ms(self.resolved_uri(), self.database, self.collection)


class InfluxResource(dg.ConfigurableResource):
    """InfluxDB holding the `ohlcv` measurement, through the 2.x API (url, token, org, bucket)."""

    url: str
    token: str
    org: str
    bucket: str
    measurement: str

    def settings(self) -> Settings:
        return dataclasses.replace(
            Settings.from_env(),
            influxdb_url=self.url,
            influxdb_token=self.token,
            influxdb_org=self.org,
            influxdb_bucket=self.bucket,
            influxdb_measurement=self.measurement,
        )

    def read_aggregates(self) -> Aggregates:
        return read_influx(self.settings(), self.measurement)

    def newest_event_ms(self) -> int | None:
        return newest_influx_event_ms(self.settings(), self.measurement)


class SparkSubmitResource(dg.ConfigurableResource):
    """Launches the streaming job (`spark_jobs/main.py`) with `spark-submit`, the connector jars
    and this environment's Python, on any Spark master."""

    master: str

    def command(self, job_args: list[str]) -> list[str]:
        settings = Settings.from_env()
        jars = sorted(glob.glob(spark_jars_glob(settings)))
        if not jars:
            raise dg.Failure("Spark connector jars are missing: run `crypto-pipeline stack up`")
        spark_submit = Path(sys.executable).parent / "spark-submit"
        return [
            str(spark_submit),
            "--master",
            self.master,
            "--jars",
            ",".join(jars),
            "--conf",
            "spark.driver.host=127.0.0.1",
            "--conf",
            "spark.driver.bindAddress=127.0.0.1",
            # Spark's own INFO lines drown the job's progress in the run log.
            "--conf",
            "spark.log.level=WARN",
            str(REPO_ROOT / "spark_jobs" / "main.py"),
            *job_args,
        ]

    def driver_command(self, job_args: list[str]) -> list[str]:
        """The job with its driver as the top process (Spark started through pyspark, the same
        master and jars): a supervised stream whose SIGINT/SIGTERM stops its queries cleanly.
        Under spark-submit the signal would reach the JVM first and kill the driver mid-batch."""
        return [sys.executable, "-m", "spark_jobs.main", *job_args]

    def env(self) -> dict[str, str]:
        return {
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_MASTER": self.master,
            "PYTHONPATH": str(REPO_ROOT),
        }


def pyspark_resource(settings: Settings) -> PySparkResource:
    """In-process Spark for batch work (reconciliation, ad-hoc reads), with the connector jars."""
    return PySparkResource(spark_config=spark_conf(settings))
