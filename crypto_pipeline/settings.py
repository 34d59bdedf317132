"""The one settings source: environment variables (and `.env`), read by the CLI, the local stack,
the Spark job and the Dagster resources alike. docker compose sets the same names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from dotenv import load_dotenv

REPO_ROOT = Path(__file__).resolve().parent.parent
# The shipped sample (3 symbols x 2 days of 1-minute candles), relative to REPO_ROOT.
SAMPLE_FILE = "data/sample_klines_1m.csv.gz"

# name -> default. The docker compose file must use exactly these names (checked by a test).
DEFAULTS: dict[str, str] = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPIC": "crypto.klines",
    # Unset: the local stack starts FerretDB on 127.0.0.1:STACK_MONGO_PORT. Set: that server is
    # used and the stack starts no MongoDB-compatible server.
    "MONGO_URI": "",
    "MONGO_DATABASE": "crypto",
    "MONGO_COLLECTION": "realtime",
    "INFLUXDB_URL": "http://127.0.0.1:8086",
    # The local InfluxDB 1.8 runs without auth on loopback and ignores the token; InfluxDB 2.x
    # (docker compose) needs a real one, given in the environment or .env.
    "INFLUXDB_TOKEN": "local:local",
    "INFLUXDB_ORG": "-",
    "INFLUXDB_BUCKET": "crypto/autogen",
    "INFLUXDB_MEASUREMENT": "ohlcv",
    "SPARK_MASTER": "local[*]",
    # The Dagster UI, on 127.0.0.1 (docker compose publishes it on the same port).
    "DAGSTER_PORT": "3001",
    # Files dropped here are replayed by the Dagster sensor.
    "INCOMING_DIR": str(REPO_ROOT / "data" / "incoming"),
    "STACK_DIR": str(REPO_ROOT / ".stack"),
    "STACK_CACHE_DIR": str(Path.home() / ".cache" / "crypto-pipeline"),
    "STACK_MONGO_PORT": "27017",
    "STACK_KAFKA_CONTROLLER_PORT": "9093",
    "STACK_INFLUXDB_RPC_PORT": "8089",
}


# Ports of the servers the local stack starts; docker compose has its own services instead.
LOCAL_STACK_ONLY = frozenset(
    {"STACK_MONGO_PORT", "STACK_KAFKA_CONTROLLER_PORT", "STACK_INFLUXDB_RPC_PORT"}
)


def load_env_file() -> None:
    """Read `.env` from the repository root; real environment variables win."""
    load_dotenv(REPO_ROOT / ".env", override=False)


def env(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


def export_defaults() -> None:
    """Put every setting into the environment (keeping values already there), so that Dagster's
    `EnvVar` resolves on the local stack without a .env file."""
    load_env_file()
    for name, default in DEFAULTS.items():
        if not os.environ.get(name) and default:
            os.environ[name] = default


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str
    kafka_topic: str
    mongo_uri: str
    mongo_is_external: bool
    mongo_database: str
    mongo_collection: str
    influxdb_url: str
    influxdb_token: str
    influxdb_org: str
    influxdb_bucket: str
    influxdb_measurement: str
    spark_master: str
    dagster_port: int
    incoming_dir: Path
    stack_dir: Path
    cache_dir: Path
    kafka_controller_port: int
    influxdb_rpc_port: int

    @classmethod
    def from_env(cls) -> Settings:
        load_env_file()
        mongo_uri = env("MONGO_URI")
        return cls(
            kafka_bootstrap_servers=env("KAFKA_BOOTSTRAP_SERVERS"),
            kafka_topic=env("KAFKA_TOPIC"),
            mongo_uri=mongo_uri or f"mongodb://127.0.0.1:{int(env('STACK_MONGO_PORT'))}/",
            mongo_is_external=bool(mongo_uri),
            mongo_database=env("MONGO_DATABASE"),
            mongo_collection=env("MONGO_COLLECTION"),
            influxdb_url=env("INFLUXDB_URL"),
            influxdb_token=env("INFLUXDB_TOKEN"),
            influxdb_org=env("INFLUXDB_ORG"),
            influxdb_bucket=env("INFLUXDB_BUCKET"),
            influxdb_measurement=env("INFLUXDB_MEASUREMENT"),
            spark_master=env("SPARK_MASTER"),
            dagster_port=int(env("DAGSTER_PORT")),
            incoming_dir=Path(env("INCOMING_DIR")).resolve(),
            stack_dir=Path(env("STACK_DIR")).resolve(),
            cache_dir=Path(env("STACK_CACHE_DIR")).resolve(),
            kafka_controller_port=int(env("STACK_KAFKA_CONTROLLER_PORT")),
            influxdb_rpc_port=int(env("STACK_INFLUXDB_RPC_PORT")),
        )

    @property
    def kafka_port(self) -> int:
        return loopback_port(self.kafka_bootstrap_servers.split(",")[0], "KAFKA_BOOTSTRAP_SERVERS")

    @property
    def mongo_port(self) -> int:
        return loopback_port(urlparse(self.mongo_uri).netloc, "MONGO_URI")

    @property
    def influxdb_port(self) -> int:
        return loopback_port(urlparse(self.influxdb_url).netloc, "INFLUXDB_URL")

    @property
    def influxdb_database(self) -> str:
        return self.influxdb_bucket.split("/")[0]


def loopback_port(host_port: str, setting: str) -> int:
    """The port of a `host:port` that the local stack serves; it only ever binds 127.0.0.1."""
    host, _, port = host_port.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise ValueError(
            f"{setting}={host_port!r}: the local stack serves only 127.0.0.1:<port>; "
            "point the setting there or do not start the local stack"
        )
    return int(port)
