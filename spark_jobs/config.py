"""Explicit streaming settings of the OHLCV job: source, windows, watermark, trigger, checkpoint,
sinks. Defaults come from the environment settings; `main` lets the command line override them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crypto_pipeline.settings import Settings

WINDOW_LABEL = re.compile(r"^(?P<count>\d+)(?P<unit>[mhd])$")
UNIT_NAMES = {"m": "minutes", "h": "hours", "d": "days"}
UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
DEFAULT_WINDOWS = ("5m", "1h", "4h")
SINKS = ("mongo", "influx", "noop")


def window_duration(label: str) -> str:
    """'5m' -> '5 minutes', the form Spark's window() takes."""
    match = WINDOW_LABEL.match(label)
    if match is None:
        raise ValueError(f"window {label!r} must look like 5m, 1h or 1d")
    return f"{match.group('count')} {UNIT_NAMES[match.group('unit')]}"


def window_ms(label: str) -> int:
    match = WINDOW_LABEL.match(label)
    if match is None:
        raise ValueError(f"window {label!r} must look like 5m, 1h or 1d")
    return int(match.group("count")) * UNIT_MS[match.group("unit")]


@dataclass(frozen=True)
class JobConfig:
    bootstrap_servers: str
    topic: str
    checkpoint_dir: str
    mongo_uri: str
    mongo_database: str
    mongo_collection: str
    influx_url: str
    influx_token: str
    influx_org: str
    influx_bucket: str
    windows: tuple[str, ...] = DEFAULT_WINDOWS
    watermark: str = "30 minutes"
    # "available-now" processes what is in Kafka and stops; anything else is a processing-time
    # interval such as "1 second".
    trigger: str = "available-now"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    sinks: tuple[str, ...] = ("mongo", "influx")
    influx_batch_lines: int = 5_000
    # Parallel connector writers for MongoDB ("replace" mode).
    mongo_writers: int = 4
    # "replace": the connector's replace-upsert (MongoDB); "insert-or-replace": bulk insert,
    # existing ids deleted and inserted again, from one writer (FerretDB on the local stack).
    mongo_write_mode: str = "replace"
    measurement: str = "ohlcv"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> JobConfig:
        values: dict[str, object] = {
            "bootstrap_servers": settings.kafka_bootstrap_servers,
            "topic": settings.kafka_topic,
            "checkpoint_dir": str(settings.stack_dir / "checkpoints" / settings.kafka_topic),
            "mongo_uri": settings.mongo_uri,
            "mongo_database": settings.mongo_database,
            "mongo_collection": settings.mongo_collection,
            "mongo_write_mode": "replace" if settings.mongo_is_external else "insert-or-replace",
            "influx_url": settings.influxdb_url,
            "influx_token": settings.influxdb_token,
            "influx_org": settings.influxdb_org,
            "influx_bucket": settings.influxdb_bucket,
            "measurement": settings.influxdb_measurement,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)  # type: ignore[arg-type]
        for label in config.windows:
            window_duration(label)
        unknown = set(config.sinks) - set(SINKS)
        if unknown:
            raise ValueError(f"unknown sinks {sorted(unknown)}; choose from {SINKS}")
        return config
