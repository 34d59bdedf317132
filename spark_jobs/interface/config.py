"""The Spark job's configuration: the one contract between whoever launches the job (Dagster, the
CLI, the benchmarks, the tests) and the job itself.

`JobConfig.to_args()` gives the command line and `JobConfig.to_env()` the two secrets (MongoDB URI,
InfluxDB token), which travel only in the environment under their settings' names;
`JobConfig.from_args(argv, environ)` is the job's reading of them. The job takes nothing else
from its host: an option without a default that is left out, or a missing secret, is an error.
Launchers build the config from the settings (`JobConfig.from_settings`) or from Dagster's
resources.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crypto_pipeline.build_cache import spark_connectors_dir
from crypto_pipeline.candle_rules import DEFAULT_FUTURE_TOLERANCE_S
from crypto_pipeline.settings import (
    InfluxTarget,
    KafkaTarget,
    MongoTarget,
    Settings,
    checkpoint_dir,
    trade_candles,
    trades_topic,
)
from crypto_pipeline.windows import UNIT_MS, interval_ms, window_ms

DEFAULT_WINDOWS = ("5m", "1h", "4h")
DEFAULT_TRADE_WINDOWS = ("1s", "1m", "5m", "1h")
DEFAULT_WATERMARK = "30 minutes"
# What the job aggregates: candles into longer candles, or trades into candles.
CANDLES, TRADES = "candles", "trades"
# Trades: how long (processing time) a trade's key is remembered to count its copies once.
DEFAULT_DEDUPE_HORIZON = "10 minutes"
# "available-now" processes what is in Kafka and stops; anything else is a processing-time
# interval such as "1 second".
AVAILABLE_NOW = "available-now"
DEFAULT_CONTINUOUS_TRIGGER = "5 seconds"
# Rows per micro-batch at most: a batch's rows all come to the driver.
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 1_000_000
# Where the windows go: MongoDB, InfluxDB and the candles topic (`<topic>.candles`).
WINDOW_SINKS = ("mongo", "influx", "candles")
SINK_NAMES = (*WINDOW_SINKS, "noop")
BACKFILL_LATE = ("new", "all")


@dataclass(frozen=True)
class JobConfig:
    kafka: KafkaTarget
    mongo: MongoTarget
    influx: InfluxTarget
    checkpoint_dir: str
    spark_master: str
    spark_jars_dir: str
    spark_driver_host: str
    source: str = CANDLES
    windows: tuple[str, ...] = DEFAULT_WINDOWS
    watermark: str = DEFAULT_WATERMARK
    dedupe_horizon: str = DEFAULT_DEDUPE_HORIZON
    trigger: str = AVAILABLE_NOW
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = DEFAULT_MAX_OFFSETS_PER_TRIGGER
    sinks: tuple[str, ...] = WINDOW_SINKS
    # Heartbeat of a continuous run, for the Dagster health sensor.
    status_file: str | None = None
    # Bulk writes of replace-upserts sent to MongoDB at the same time.
    mongo_writers: int = 4
    # A sink (or the dead-letter topic's broker) unreachable for up to this long holds the batch,
    # its writes retried; longer, the batch fails, the job exits and the restart sensor restarts it.
    sink_outage_patience_s: int = 300
    # A candle dated later than its Kafka timestamp plus this is a dead letter (candle_rules).
    future_tolerance_s: int = DEFAULT_FUTURE_TOLERANCE_S
    # A backfill instead of the stream (spark_jobs/backfill.py): the windows of these symbols
    # (None: all) that overlap [start, end) in event time (epoch ms), from the whole topic.
    backfill_symbols: tuple[str, ...] | None = None
    backfill_start_ms: int | None = None
    backfill_end_ms: int | None = None
    # Or a backfill of the late ledger's open entries, per symbol and range: "new" (those no
    # backfill found unrepairable: what Dagster runs) or "all" (a person's retry).
    backfill_late: str | None = None

    def __post_init__(self) -> None:
        if self.source not in (CANDLES, TRADES):
            raise ValueError(f"--source takes {CANDLES} or {TRADES}, not {self.source!r}")
        if interval_ms(self.dedupe_horizon) <= 0:
            raise ValueError(
                "the dedupe horizon must be longer than 0 (copies are dropped within it)"
            )
        for label in self.windows:
            if window_ms(label) < UNIT_MS["m"] and self.source == CANDLES:
                raise ValueError(
                    f"window {label!r}: candles from candles are a minute or longer "
                    "(windows in seconds are for candles from trades)"
                )
        interval_ms(self.watermark)
        if self.continuous:
            interval_ms(self.trigger)
        unknown = set(self.sinks) - set(SINK_NAMES)
        if unknown:
            raise ValueError(f"unknown sinks {sorted(unknown)}; choose from {SINK_NAMES}")
        if not self.mongo.uri:
            raise ValueError("the MongoDB URI is empty")
        if (self.backfill_start_ms is None) != (self.backfill_end_ms is None):
            raise ValueError("a backfill needs both its start and its end")
        if self.backfill_end_ms is not None and self.backfill_start_ms >= self.backfill_end_ms:  # type: ignore[operator]
            raise ValueError("a backfill's start must be before its end")
        if self.backfill_late not in (None, *BACKFILL_LATE):
            raise ValueError(f"--backfill-late takes one of {BACKFILL_LATE}")
        if self.backfill_late is not None and self.backfill_end_ms is not None:
            raise ValueError("a backfill repairs the late ledger or a range, not both")

    @property
    def is_backfill(self) -> bool:
        return self.backfill_end_ms is not None or self.backfill_late is not None

    @property
    def future_tolerance_ms(self) -> int:
        return self.future_tolerance_s * 1000

    @property
    def continuous(self) -> bool:
        return self.trigger != AVAILABLE_NOW

    def to_args(self) -> list[str]:
        """Every setting but the secrets, as command-line options."""
        flat = _flatten(self)
        args: list[str] = []
        for option in OPTIONS:
            value = flat[option.field]
            if value is not None:
                args += [option.flag, option.render(value)]
        return args

    def to_env(self) -> dict[str, str]:
        """The secrets, under the names of their settings."""
        flat = _flatten(self)
        return {name: str(flat[field]) for field, name in SECRET_ENV.items()}

    @classmethod
    def from_args(cls, argv: Sequence[str] | None, environ: Mapping[str, str]) -> JobConfig:
        """The config on the command line, the secrets from `environ`; an incomplete one is
        refused (argparse's usage error: exit 2)."""
        parser = argparse.ArgumentParser(
            prog="spark_jobs.main", description="The OHLCV job: Kafka -> MongoDB + InfluxDB."
        )
        for option in OPTIONS:
            required = option.field in REQUIRED_FIELDS
            parser.add_argument(option.flag, dest=option.field, help=option.help, required=required)
        given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
        # The token may be empty (InfluxDB 1.8 without authentication), the MongoDB URI not.
        missing = [
            name
            for name in SECRET_ENV.values()
            if environ.get(name) is None or (name == "MONGO_URI" and not environ[name])
        ]
        if missing:
            parser.error(f"set {' and '.join(missing)} in the environment (secrets travel there)")
        flat = {
            option.field: option.parse(given[option.field])
            for option in OPTIONS
            if option.field in given
        }
        flat |= {field: environ[name] for field, name in SECRET_ENV.items()}
        return _unflatten(flat)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> JobConfig:
        """The job on the settings' servers and topic, with the defaults for everything else; the
        checkpoint follows the topic (an overridden one too) unless given."""
        kafka = overrides.pop("kafka", settings.kafka)
        mongo = overrides.pop("mongo", settings.mongo)
        influx = overrides.pop("influx", settings.influx)
        trades: dict[str, Any] = {}
        if overrides.get("source") == TRADES:
            kafka, mongo, influx = trade_targets(kafka, mongo, influx)
            trades = {"windows": DEFAULT_TRADE_WINDOWS}
        values: dict[str, Any] = {
            **trades,
            "kafka": kafka,
            "mongo": mongo,
            "influx": influx,
            "checkpoint_dir": str(checkpoint_dir(settings.stack_dir, kafka.topic)),
            "spark_master": settings.spark_master,
            "spark_jars_dir": str(spark_connectors_dir(settings.cache_dir)),
            "spark_driver_host": settings.spark_driver_host,
            "future_tolerance_s": settings.future_event_tolerance_s,
        }
        return cls(**{**values, **overrides})


def trade_targets(
    kafka: KafkaTarget, mongo: MongoTarget, influx: InfluxTarget
) -> tuple[KafkaTarget, MongoTarget, InfluxTarget]:
    """Where the trades job reads and writes, from the candle job's targets: the topic's trades,
    and candles kept apart from the kline-built ones."""
    return (
        dataclasses.replace(kafka, topic=trades_topic(kafka.topic)),
        dataclasses.replace(mongo, collection=trade_candles(mongo.collection)),
        dataclasses.replace(influx, measurement=trade_candles(influx.measurement)),
    )


@dataclass(frozen=True)
class Option:
    flag: str
    field: str  # dotted for a target's field: "kafka.topic"
    help: str
    parse: Callable[[str], Any] = str
    render: Callable[[Any], str] = str


def split_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _joined(names: tuple[str, ...]) -> str:
    return ",".join(names)


OPTIONS = (
    Option("--bootstrap-servers", "kafka.bootstrap_servers", "Kafka brokers"),
    Option("--topic", "kafka.topic", "market-data topic (dead letters: <topic>.dlq)"),
    Option("--mongo-database", "mongo.database", "MongoDB database of the aggregates"),
    Option("--mongo-collection", "mongo.collection", "MongoDB collection of the aggregates"),
    Option("--influx-url", "influx.url", "InfluxDB URL"),
    Option("--influx-org", "influx.org", "InfluxDB organization"),
    Option("--influx-bucket", "influx.bucket", 'InfluxDB bucket ("db/rp" on 1.8)'),
    Option("--measurement", "influx.measurement", "InfluxDB measurement of the aggregates"),
    Option("--checkpoint-dir", "checkpoint_dir", "the query's checkpoint and the windows' state"),
    Option("--spark-master", "spark_master", "e.g. local[*] or spark://host:7077"),
    Option("--spark-jars-dir", "spark_jars_dir", "folder of the connector jars"),
    Option("--spark-driver-host", "spark_driver_host", "where executors reach the driver"),
    Option("--source", "source", f"{CANDLES} (candles into longer ones) or {TRADES}"),
    Option(
        "--windows",
        "windows",
        "comma-separated window lengths, e.g. 5m,1h,4h",
        split_names,
        _joined,
    ),
    Option("--watermark", "watermark", 'how late an event may arrive, e.g. "30 minutes"'),
    Option(
        "--dedupe-horizon",
        "dedupe_horizon",
        'trades: how long a trade key is remembered, e.g. "10 minutes"',
    ),
    Option("--trigger", "trigger", '"available-now" or an interval such as "1 second"'),
    Option("--starting-offsets", "starting_offsets", "earliest or latest (new checkpoints)"),
    Option("--max-offsets-per-trigger", "max_offsets_per_trigger", "micro-batch cap", int),
    Option(
        "--sinks",
        "sinks",
        "comma-separated: mongo,influx,candles (default) or noop",
        split_names,
        _joined,
    ),
    Option("--status-file", "status_file", "heartbeat JSON for the health sensor"),
    Option("--mongo-writers", "mongo_writers", "parallel MongoDB writers", int),
    Option(
        "--sink-outage-patience-s",
        "sink_outage_patience_s",
        "seconds a batch rides out an unreachable sink before it fails",
        int,
    ),
    Option(
        "--future-tolerance-s",
        "future_tolerance_s",
        "seconds a candle may be dated after its Kafka timestamp (later: a dead letter)",
        int,
    ),
    Option(
        "--backfill-symbols",
        "backfill_symbols",
        "backfill: symbols (default all)",
        split_names,
        _joined,
    ),
    Option("--backfill-start-ms", "backfill_start_ms", "backfill: event-time start (ms)", int),
    Option("--backfill-end-ms", "backfill_end_ms", "backfill: event-time end (ms, exclusive)", int),
    Option(
        "--backfill-late",
        "backfill_late",
        "backfill the late ledger: new (skip entries found unrepairable) or all",
    ),
)
SECRET_ENV = {"mongo.uri": "MONGO_URI", "influx.token": "INFLUXDB_TOKEN"}
TARGETS = {"kafka": KafkaTarget, "mongo": MongoTarget, "influx": InfluxTarget}
# Options the job cannot run without: every target's fields, and the fields without a default.
REQUIRED_FIELDS = frozenset(
    {f"{name}.{field.name}" for name, kind in TARGETS.items() for field in dataclasses.fields(kind)}
    | {
        field.name
        for field in dataclasses.fields(JobConfig)
        if field.name not in TARGETS and field.default is dataclasses.MISSING
    }
) - set(SECRET_ENV)


def _flatten(config: JobConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in dataclasses.asdict(config).items():
        if name in TARGETS:
            flat.update({f"{name}.{key}": item for key, item in value.items()})
        else:
            flat[name] = value
    return flat


def _unflatten(flat: dict[str, Any]) -> JobConfig:
    plain = {k: v for k, v in flat.items() if "." not in k}
    targets = {
        name: {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(f"{name}.")}
        for name in TARGETS
    }
    return JobConfig(
        kafka=KafkaTarget(**targets["kafka"]),
        mongo=MongoTarget(**targets["mongo"]),
        influx=InfluxTarget(**targets["influx"]),
        **plain,
    )
