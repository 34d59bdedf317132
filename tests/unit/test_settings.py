from __future__ import annotations

import pytest

from crypto_pipeline.readback import flux_string
from crypto_pipeline.settings import (
    MongoTarget,
    Settings,
    SettingsError,
    loopback_port,
    redact_uri,
)


@pytest.mark.parametrize(
    ("host_port", "port"),
    [("127.0.0.1:9092", 9092), ("localhost:27018", 27018)],
)
def test_loopback_port(host_port: str, port: int) -> None:
    assert loopback_port(host_port, "X") == port


@pytest.mark.parametrize("host_port", ["kafka:9092", "0.0.0.0:9092", "127.0.0.1"])
def test_non_loopback_address_is_refused_with_the_setting_named(host_port: str) -> None:
    with pytest.raises(ValueError, match="KAFKA_BOOTSTRAP_SERVERS"):
        loopback_port(host_port, "KAFKA_BOOTSTRAP_SERVERS")


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings.from_env({"STACK_DIR": "/tmp/state"})
    assert settings.mongo.uri == "mongodb://127.0.0.1:27017/"
    assert settings.serves_mongo
    assert settings.kafka.dlq_topic == "crypto.klines.dlq"
    assert str(settings.stack_dir) == "/tmp/state"


def test_a_loopback_mongo_uri_with_credentials_is_served_with_authentication() -> None:
    uri = "mongodb://app:p%40ss@127.0.0.1:27555/crypto?authSource=admin"
    mongo = Settings.from_env({"MONGO_URI": uri}).mongo
    assert (mongo.username, mongo.password, mongo.auth_source, mongo.port) == (
        "app",
        "p@ss",
        "admin",
        27555,
    )
    assert MongoTarget("mongodb://u:p@127.0.0.1/crypto", "d", "c").auth_source == "crypto"
    assert MongoTarget("mongodb://u:p@127.0.0.1/", "d", "c").auth_source == "admin"


def test_a_mongo_uri_elsewhere_is_an_external_server() -> None:
    settings = Settings.from_env({"MONGO_URI": "mongodb://user:pw@mongo:27017/?authSource=admin"})
    assert not settings.serves_mongo
    assert settings.mongo.uri == "mongodb://user:pw@mongo:27017/?authSource=admin"


def test_influx_bucket_names_the_database() -> None:
    assert Settings.from_env({"INFLUXDB_BUCKET": "market/autogen"}).influx.database == "market"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MONGO_URI": "127.0.0.1:27017"}, "MONGO_URI must start with mongodb://"),
        ({"DAGSTER_PORT": "http"}, "DAGSTER_PORT='http' must be a port number"),
    ],
)
def test_unusable_settings_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://app:s3cret@mongo:27017/crypto", "mongodb://app:***@mongo:27017/crypto"),
        ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
        ("mongodb://app@h/?authSource=x", "mongodb://app@h/?authSource=x"),
    ],
)
def test_uris_are_shown_without_their_password(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_targets_never_show_their_secrets() -> None:
    settings = Settings.from_env(
        {"MONGO_URI": "mongodb://app:s3cret@mongo:27017/", "INFLUXDB_TOKEN": "t0ken"}
    )
    assert "s3cret" not in repr(settings)
    assert "t0ken" not in repr(settings)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("crypto/autogen", '"crypto/autogen"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("${secret}", '"\\${secret}"'),
    ],
)
def test_values_become_flux_string_literals(value: str, literal: str) -> None:
    assert flux_string(value) == literal
