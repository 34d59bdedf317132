"""The one settings source: environment variables (and `.env`), read by the CLI, the local stack,
the Spark job's command line and the Dagster definitions alike. docker compose sets the same names.

Also the rules that derive names from settings (the dead-letter topic, the checkpoint and heartbeat
paths): each is defined here once and called everywhere."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from dotenv import dotenv_values

from crypto_pipeline.candle_rules import DEFAULT_FUTURE_TOLERANCE_S

REPO_ROOT = Path(__file__).resolve().parent.parent
# The shipped sample (3 symbols x 2 days of 1-minute candles), relative to REPO_ROOT.
SAMPLE_FILE = "data/sample_klines_1m.csv.gz"

# name -> default. The docker compose file must use exactly these names (checked by a test).
DEFAULTS: dict[str, str] = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPIC": "crypto.klines",
    # A loopback address is served by the local stack's FerretDB (with SCRAM authentication when
    # the URI holds a user and password); any other host is an external server.
    "MONGO_URI": "mongodb://127.0.0.1:27017/",
    "MONGO_DATABASE": "crypto",
    "MONGO_COLLECTION": "realtime",
    "INFLUXDB_URL": "http://127.0.0.1:8086",
    # The local InfluxDB 1.8 runs without auth on loopback and ignores the token; InfluxDB 2.x
    # (docker compose) needs a real one, given in the environment or .env.
    "INFLUXDB_TOKEN": "local:local",
    "INFLUXDB_ORG": "-",
    "INFLUXDB_BUCKET": "crypto/autogen",
    "INFLUXDB_MEASUREMENT": "ohlcv",
    # A candle dated later than the clock plus this many seconds is a dead letter (at both
    # stages): it would freeze its symbol's watermark (crypto_pipeline/candle_rules.py).
    "FUTURE_EVENT_TOLERANCE_S": str(DEFAULT_FUTURE_TOLERANCE_S),
    # Where `crypto-pipeline live` connects (websocket) and refills gaps (REST). Empty: the
    # exchange's real endpoints; a testnet, a proxy or `crypto-pipeline exchange-sim` otherwise.
    "LIVE_WS_URL": "",
    "LIVE_REST_URL": "",
    "SPARK_MASTER": "local[*]",
    # The address a cluster's executors reach the Spark driver at: loopback on one machine, the
    # driver's host name on a network (docker compose: dagster-code, where runs execute).
    "SPARK_DRIVER_HOST": "127.0.0.1",
    # The Dagster UI, on 127.0.0.1 (docker compose publishes it on the same port).
    "DAGSTER_PORT": "3001",
    # The candles API and chart page (`crypto-pipeline serve`). Any host but loopback needs
    # API_TOKEN, which every request then carries.
    "API_HOST": "127.0.0.1",
    "API_PORT": "3002",
    "API_TOKEN": "",
    # Files dropped here are replayed by the Dagster sensor.
    "INCOMING_DIR": str(REPO_ROOT / "data" / "incoming"),
    # Spark checkpoints and the stream's heartbeat; on the local stack also the servers' data,
    # logs and PID files.
    "STACK_DIR": str(REPO_ROOT / ".stack"),
    "STACK_CACHE_DIR": str(Path.home() / ".cache" / "crypto-pipeline"),
    "STACK_KAFKA_CONTROLLER_PORT": "9093",
    "STACK_INFLUXDB_RPC_PORT": "8089",
    # A Spark standalone cluster in the local stack: a master and this many workers (0: none;
    # `stack up --spark-workers N` sets it for one command). Jobs use it with
    # SPARK_MASTER=spark://127.0.0.1:<master port>.
    "STACK_SPARK_WORKERS": "0",
    # Kafka nodes the local stack starts: 1, or 3 for replicated topics (replication factor 3,
    # min.insync.replicas 2); list every node in KAFKA_BOOTSTRAP_SERVERS then (9092,9094,9096).
    "STACK_KAFKA_BROKERS": "1",
    "STACK_SPARK_MASTER_PORT": "7077",
    "STACK_SPARK_MASTER_UI_PORT": "8090",
}

# Ports and sizes of the servers the local stack starts; docker compose has its own services.
LOCAL_STACK_ONLY = frozenset(
    {
        "STACK_KAFKA_CONTROLLER_PORT",
        "STACK_INFLUXDB_RPC_PORT",
        "STACK_SPARK_WORKERS",
        "STACK_KAFKA_BROKERS",
        "STACK_SPARK_MASTER_PORT",
        "STACK_SPARK_MASTER_UI_PORT",
    }
)
# Never in a command line, a log line or the Dagster UI.
SECRETS = frozenset({"MONGO_URI", "INFLUXDB_TOKEN", "API_TOKEN"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names it."""


def dead_letter_topic(topic: str) -> str:
    """Where rejected records of `topic` go, with their reason."""
    return f"{topic}.dlq"


def candles_topic(topic: str) -> str:
    """Where the Spark job on `topic` publishes every window it writes (log-compacted, keyed by
    the window's id): the candles as a stream (crypto_pipeline/formats/candle_update.py)."""
    return f"{topic}.candles"


def trades_topic(topic: str) -> str:
    """Where a live feed sends the trades of the exchanges whose candles go to `topic`."""
    return f"{topic}.trades"


def trade_candles(name: str) -> str:
    """Where candles built from trades are kept beside the kline-built ones in `name` (a MongoDB
    collection or an InfluxDB measurement): apart, so that neither overwrites the other."""
    return f"{name}_from_trades"


def checkpoint_dir(state_dir: Path, topic: str) -> Path:
    """The Spark job's checkpoints for one topic."""
    return state_dir / "checkpoints" / topic


def stream_status_file(state_dir: Path, topic: str) -> Path:
    """The heartbeat the continuous job on `topic` writes."""
    return state_dir / "streaming" / f"{topic}.json"


def live_status_file(state_dir: Path, exchange: str, topic: str) -> Path:
    """The heartbeat a live feed of `exchange` into `topic` writes."""
    return state_dir / "live" / f"{exchange}-{topic}.json"


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by `***`, for logs and messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


@dataclass(frozen=True)
class KafkaTarget:
    """The brokers and the market-data topic."""

    bootstrap_servers: str
    topic: str

    @property
    def dlq_topic(self) -> str:
        return dead_letter_topic(self.topic)

    @property
    def candles_topic(self) -> str:
        return candles_topic(self.topic)


@dataclass(frozen=True)
class MongoTarget:
    """The collection of the aggregates. `repr` never shows the URI's password."""

    uri: str = field(repr=False)
    database: str
    collection: str

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self.uri)

    @property
    def late_collection(self) -> str:
        """The ledger of late candles (crypto_pipeline/formats/late_ledger.py), beside the
        aggregates."""
        return f"{self.collection}_late"

    @property
    def writers_collection(self) -> str:
        """The write lease of the aggregates (spark_jobs/window_versions.py), beside them."""
        return f"{self.collection}_writers"

    @property
    def username(self) -> str | None:
        name = urlsplit(self.uri).username
        return None if name is None else unquote(name)

    @property
    def password(self) -> str | None:
        password = urlsplit(self.uri).password
        return None if password is None else unquote(password)

    @property
    def auth_source(self) -> str:
        """The database the user is defined in, as MongoDB drivers choose it."""
        parts = urlsplit(self.uri)
        chosen = parse_qs(parts.query).get("authSource")
        return chosen[0] if chosen else parts.path.strip("/") or "admin"

    @property
    def host(self) -> str:
        return urlsplit(self.uri).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.uri).port or 27017


FEEDS_SUFFIX = "_feeds"


@dataclass(frozen=True)
class InfluxTarget:
    """The measurement of the aggregates, through the 2.x API (1.8: bucket = "db/rp")."""

    url: str
    token: str = field(repr=False)
    org: str
    bucket: str
    measurement: str

    @property
    def database(self) -> str:
        return self.bucket.split("/")[0]

    @property
    def batches_measurement(self) -> str:
        """One point per micro-batch of the Spark job (what the pipeline dashboard charts)."""
        return f"{self.measurement}_batches"

    @property
    def feeds_measurement(self) -> str:
        """The live feeds' health, a point per feed every few seconds (crypto_pipeline/live)."""
        return f"{self.measurement}{FEEDS_SUFFIX}"


@dataclass(frozen=True)
class Settings:
    kafka: KafkaTarget
    mongo: MongoTarget
    influx: InfluxTarget
    spark_master: str
    spark_driver_host: str
    dagster_port: int
    incoming_dir: Path
    stack_dir: Path
    cache_dir: Path
    kafka_controller_port: int
    influxdb_rpc_port: int
    spark_workers: int = 0
    kafka_brokers: int = 1
    future_event_tolerance_s: int = DEFAULT_FUTURE_TOLERANCE_S
    spark_master_port: int = 7077
    spark_master_ui_port: int = 8090
    live_ws_url: str = ""
    live_rest_url: str = ""
    api_host: str = "127.0.0.1"
    api_port: int = 3002
    api_token: str = field(default="", repr=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv_path: Path = REPO_ROOT / ".env"
    ) -> Settings:
        """The settings from `environ` (default: this process's environment), then `.env` (in
        the repository root), then the defaults. Nothing is written back to the environment."""
        values = {
            **dotenv_values(dotenv_path),
            **(os.environ if environ is None else environ),
        }

        def get(name: str) -> str:
            return values.get(name) or DEFAULTS[name]

        def number(name: str, what: str = "a port number") -> int:
            text = get(name)
            if not text.isdigit():
                raise SettingsError(f"{name}={text!r} must be {what}")
            return int(text)

        mongo_uri = get("MONGO_URI")
        if not mongo_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise SettingsError("MONGO_URI must start with mongodb:// or mongodb+srv://")
        return cls(
            kafka=KafkaTarget(get("KAFKA_BOOTSTRAP_SERVERS"), get("KAFKA_TOPIC")),
            mongo=MongoTarget(mongo_uri, get("MONGO_DATABASE"), get("MONGO_COLLECTION")),
            influx=InfluxTarget(
                url=get("INFLUXDB_URL"),
                token=get("INFLUXDB_TOKEN"),
                org=get("INFLUXDB_ORG"),
                bucket=get("INFLUXDB_BUCKET"),
                measurement=get("INFLUXDB_MEASUREMENT"),
            ),
            spark_master=get("SPARK_MASTER"),
            spark_driver_host=get("SPARK_DRIVER_HOST"),
            dagster_port=number("DAGSTER_PORT"),
            incoming_dir=Path(get("INCOMING_DIR")).resolve(),
            stack_dir=Path(get("STACK_DIR")).resolve(),
            cache_dir=Path(get("STACK_CACHE_DIR")).resolve(),
            kafka_controller_port=number("STACK_KAFKA_CONTROLLER_PORT"),
            influxdb_rpc_port=number("STACK_INFLUXDB_RPC_PORT"),
            spark_workers=number("STACK_SPARK_WORKERS", "a number of workers"),
            kafka_brokers=number("STACK_KAFKA_BROKERS", "a number of brokers"),
            future_event_tolerance_s=number("FUTURE_EVENT_TOLERANCE_S", "a number of seconds"),
            spark_master_port=number("STACK_SPARK_MASTER_PORT"),
            spark_master_ui_port=number("STACK_SPARK_MASTER_UI_PORT"),
            live_ws_url=get("LIVE_WS_URL"),
            live_rest_url=get("LIVE_REST_URL"),
            api_host=get("API_HOST"),
            api_port=number("API_PORT"),
            api_token=values.get("API_TOKEN") or "",
        )

    @property
    def stack_spark_master(self) -> str:
        """The SPARK_MASTER of the local stack's standalone cluster."""
        return f"spark://127.0.0.1:{self.spark_master_port}"

    @property
    def kafka_port(self) -> int:
        first = self.kafka.bootstrap_servers.split(",")[0]
        return loopback_port(first, "KAFKA_BOOTSTRAP_SERVERS")

    @property
    def serves_mongo(self) -> bool:
        """Whether the local stack runs the MongoDB-compatible server (MONGO_URI on loopback)."""
        return self.mongo.host in LOOPBACK_HOSTS

    @property
    def influxdb_port(self) -> int:
        return loopback_port(urlsplit(self.influx.url).netloc, "INFLUXDB_URL")


def loopback_port(host_port: str, setting: str) -> int:
    """The port of a `host:port` that the local stack serves; it only ever binds 127.0.0.1."""
    host, _, port = host_port.rpartition(":")
    if host not in LOOPBACK_HOSTS or not port.isdigit():
        raise SettingsError(
            f"{setting}={host_port!r}: the local stack serves only 127.0.0.1:<port>; "
            "point the setting there or do not start the local stack"
        )
    return int(port)
