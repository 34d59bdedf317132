"""The deployment's wiring end to end: settings -> `definitions.py` resources -> the Spark job's
contract. `ohlcv_job` runs through Dagster with MONGO_URI holding a user and password and pointing
at a server that is not the default address (a second FerretDB that requires them); the documents
land there, every check passes, and the password appears in no log."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

import local_stack as stack
from crypto_assets.definitions import build_definitions, resources_from_settings
from crypto_pipeline.clients import mongo_client
from crypto_pipeline.settings import Settings
from tests.integration.conftest import free_port

PASSWORD = "pipeline-Pa55word"


@pytest.fixture
def authenticated_mongo(
    local_stack: Settings, tmp_path: Path, unique_name: str
) -> Iterator[dict[str, str]]:
    """The settings of this deployment: a FerretDB of its own with authentication on a free port,
    the session's Kafka and InfluxDB, this test's names."""
    environ = {
        **os.environ,
        "MONGO_URI": f"mongodb://pipeline:{PASSWORD}@127.0.0.1:{free_port()}/?authSource=admin",
        "STACK_DIR": str(tmp_path / "state"),
        "STACK_CACHE_DIR": str(local_stack.cache_dir),
        "KAFKA_TOPIC": unique_name,
        "MONGO_DATABASE": unique_name,
        "INFLUXDB_MEASUREMENT": unique_name,
        "INCOMING_DIR": str(tmp_path / "incoming"),
    }
    settings = Settings.from_env(environ)
    stack.up(settings, only={"ferretdb"})
    try:
        yield environ
    finally:
        stack.down(settings, only={"ferretdb"})


def test_ohlcv_job_writes_to_the_mongo_uri_with_credentials_from_the_settings(
    authenticated_mongo: dict[str, str], monkeypatch: pytest.MonkeyPatch, unique_name: str
) -> None:
    for name in ("MONGO_URI", "STACK_DIR", "KAFKA_TOPIC", "MONGO_DATABASE", "INFLUXDB_MEASUREMENT"):
        monkeypatch.setenv(name, authenticated_mongo[name])  # what the resources' EnvVar reads
    settings = Settings.from_env(authenticated_mongo)
    resources = resources_from_settings(settings, authenticated_mongo)
    assert isinstance(resources["mongo"].uri, dg.EnvVar)  # the UI shows the name, not the URI
    defs = build_definitions(resources)

    with dg.DagsterInstance.ephemeral() as instance:
        replayed = defs.resolve_job_def("replay_job").execute_in_process(instance=instance)
        assert replayed.success
        result = defs.resolve_job_def("ohlcv_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]

    assert result.success
    failed = {
        (e.asset_key.to_user_string(), e.check_name): e.description
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }
    assert failed == {}
    with mongo_client(settings.mongo.uri) as client:
        assert client[unique_name][settings.mongo.collection].count_documents({}) == 1908
    with mongo_client(Settings.from_env({}).mongo.uri) as default_server:
        assert unique_name not in default_server.list_database_names()
    assert any("spark-submit" in message for message in logs)
    assert not [message for message in logs if PASSWORD in message]
