"""Dagster resources: one typed class per external system. Inside Dagster they are the single
source of truth: `definitions.py` fills them from the settings, and everything else (the Spark
job's configuration included) is built from them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from crypto_pipeline.candle_rules import DEFAULT_FUTURE_TOLERANCE_S
from crypto_pipeline.clients import end_offsets, read_latest_by_key, read_messages, read_records
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.formats.window_values import Aggregates
from crypto_pipeline.readback import (
    newest_influx_event_ms,
    newest_mongo_event_ms,
    read_influx,
    read_mongo,
)
from crypto_pipeline.settings import (
    InfluxTarget,
    KafkaTarget,
    MongoTarget,
    checkpoint_dir,
    live_status_file,
    stream_status_file,
)


class KafkaResource(dg.ConfigurableResource):
    """Kafka brokers and the market-data topic. Clients are created per call, with the timeouts
    of `crypto_pipeline.clients`."""

    bootstrap_servers: str
    topic: str
    partitions: int = 3
    retention_hours: int | None = None
    # Candles dated later than the clock plus this are dead letters (crypto_pipeline/candle_rules).
    future_tolerance_s: int = DEFAULT_FUTURE_TOLERANCE_S

    @property
    def target(self) -> KafkaTarget:
        return KafkaTarget(self.bootstrap_servers, self.topic)

    @property
    def retention_ms(self) -> int | None:
        return None if self.retention_hours is None else self.retention_hours * 3_600_000

    def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        return end_offsets(self.bootstrap_servers, topic or self.topic)

    def read_messages(self, topic: str | None = None, last_only: bool = False) -> list[bytes]:
        return read_messages(self.bootstrap_servers, topic or self.topic, last_only=last_only)

    def read_records(self) -> list[tuple[bytes, int]]:
        """(value, Kafka timestamp in ms) of every message in the topic now."""
        return read_records(self.bootstrap_servers, self.topic)

    def read_dead_letters(self, dlq_topic: str | None = None) -> list[bytes]:
        """One per rejected input: a dead letter sent again under its key counts once."""
        topic = dlq_topic or self.target.dlq_topic
        return list(read_latest_by_key(self.bootstrap_servers, topic).values())


class MongoResource(dg.ConfigurableResource):
    """The MongoDB-compatible store of the aggregates (FerretDB on the local stack). The URI may
    hold credentials: it is given as `dg.EnvVar("MONGO_URI")` when set in the environment."""

    uri: str
    database: str
    collection: str

    @property
    def target(self) -> MongoTarget:
        return MongoTarget(self.uri, self.database, self.collection)

    def read_aggregates(self) -> tuple[Aggregates, list[str]]:
        """Every aggregate document, and the `_id`s that do not match their own key."""
        return read_mongo(self.target)

    def newest_event_ms(self) -> int | None:
        return newest_mongo_event_ms(self.target)

    def open_late_entries(
        self, topic: str, with_unrepairable: bool = True
    ) -> list[late_ledger.LateEntry]:
        """What the live job could not make whole on this topic and no backfill has repaired
        yet (with or without the entries a backfill found unrepairable)."""
        return late_ledger.open_entries_in(self.target, topic, with_unrepairable)


class InfluxResource(dg.ConfigurableResource):
    """InfluxDB holding the aggregates' measurement, through the 2.x API (url, token, org,
    bucket)."""

    url: str
    token: str
    org: str
    bucket: str
    measurement: str

    @property
    def target(self) -> InfluxTarget:
        return InfluxTarget(self.url, self.token, self.org, self.bucket, self.measurement)

    def read_aggregates(self) -> Aggregates:
        return read_influx(self.target)

    def newest_event_ms(self) -> int | None:
        return newest_influx_event_ms(self.target)


class SparkResource(dg.ConfigurableResource):
    """Where and how the OHLCV Spark job runs: the Spark master, the connector jars, and the state
    directory (checkpoints per topic, the continuous job's heartbeat)."""

    master: str
    driver_host: str
    connectors_dir: str
    state_dir: str

    def checkpoint_dir(self, topic: str) -> Path:
        return checkpoint_dir(Path(self.state_dir), topic)

    def status_file(self, topic: str) -> Path:
        return stream_status_file(Path(self.state_dir), topic)


class IncomingFilesResource(dg.ConfigurableResource):
    """The folder whose CSV files the replay sensor replays."""

    folder: str

    @property
    def path(self) -> Path:
        return Path(self.folder)


class LiveFeedResource(dg.ConfigurableResource):
    """Where feeds connect (empty: each exchange's real endpoints) and keep their heartbeats."""

    ws_url: str = ""
    rest_url: str = ""
    state_dir: str

    def status_file(self, exchange: str, topic: str) -> Path:
        return live_status_file(Path(self.state_dir), exchange, topic)

    def environment(self, kafka: KafkaResource, influx: InfluxResource) -> dict[str, str]:
        """The settings a feed process reads (crypto_pipeline/settings.py), from the resources;
        InfluxDB's for its health points."""
        return {
            "INFLUXDB_URL": influx.url,
            "INFLUXDB_TOKEN": influx.token,
            "INFLUXDB_ORG": influx.org,
            "INFLUXDB_BUCKET": influx.bucket,
            "INFLUXDB_MEASUREMENT": influx.measurement,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_TOPIC": kafka.topic,
            "FUTURE_EVENT_TOLERANCE_S": str(kafka.future_tolerance_s),
            "STACK_DIR": self.state_dir,
            "LIVE_WS_URL": self.ws_url,
            "LIVE_REST_URL": self.rest_url,
        }
