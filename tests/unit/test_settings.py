from __future__ import annotations

import pytest

from crypto_pipeline.settings import Settings, loopback_port


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


def test_mongo_uri_unset_means_local_ferretdb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGO_URI", "")
    monkeypatch.setenv("STACK_MONGO_PORT", "27555")
    settings = Settings.from_env()
    assert settings.mongo_uri == "mongodb://127.0.0.1:27555/"
    assert not settings.mongo_is_external


def test_mongo_uri_set_means_external_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGO_URI", "mongodb://user:pw@mongo:27017/?authSource=admin")
    settings = Settings.from_env()
    assert settings.mongo_is_external
    assert settings.mongo_uri == "mongodb://user:pw@mongo:27017/?authSource=admin"


def test_influx_bucket_names_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUXDB_BUCKET", "market/autogen")
    assert Settings.from_env().influxdb_database == "market"
