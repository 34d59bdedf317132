from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._config import validate_config
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from crypto_assets.definitions import build_definitions, resources_from_settings
from crypto_assets.definitions import defs as load_definitions
from crypto_pipeline.settings import SECRETS, Settings

defs = load_definitions()


def test_every_job_sensor_and_asset_resolves() -> None:
    assert defs.resolve_job_def("replay_job").name == "replay_job"
    assert defs.resolve_job_def("streaming_job").name == "streaming_job"
    assert defs.resolve_sensor_def("incoming_files_sensor").job_name == "replay_job"
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} == {
        "kafka_klines",
        "mongo_realtime",
        "influx_ohlcv",
        "mongo_trade_candles",
        "influx_trade_candles",
    }


def test_sink_assets_depend_on_the_topic() -> None:
    graph = defs.resolve_asset_graph()
    for name in ("mongo_realtime", "influx_ohlcv", "mongo_trade_candles", "influx_trade_candles"):
        parents = graph.get(dg.AssetKey(name)).parent_keys
        assert parents == {dg.AssetKey("kafka_klines")}


JOBS = (
    "replay_job",
    "ohlcv_job",
    "streaming_job",
    "reconciliation_job",
    "freshness_job",
    "trade_freshness_job",
    "trade_candles_job",
    "trade_streaming_job",
)


@pytest.mark.parametrize("name", JOBS)
def test_every_job_launches_from_the_ui_with_its_default_config(name: str) -> None:
    job = defs.resolve_job_def(name)
    result = validate_config(job.run_config_schema.config_type, job.run_config or {})
    assert result.success, result.errors


def test_every_check_covers_both_sinks_and_agreement_blocks() -> None:
    graph = defs.resolve_asset_graph()
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert checks == {
        (asset, name)
        for asset in ("mongo_realtime", "influx_ohlcv")
        for name in (
            "sinks_agree",
            "matches_source",
            "nothing_left_behind",
            "late_rows_repaired",
            "no_gaps",
            "fresh",
        )
    } | {
        (asset, name)
        for asset in ("mongo_trade_candles", "influx_trade_candles")
        for name in (
            "sinks_agree",
            "matches_source",
            "nothing_left_behind",
            "late_rows_repaired",
            "fresh",
        )
    }
    blocking = {key.name for key in graph.asset_check_keys if graph.get_check_spec(key).blocking}
    assert blocking == {"sinks_agree"}


def test_replays_trigger_the_job_and_reconciliation_runs_nightly() -> None:
    replayed = defs.resolve_sensor_def("replay_done_sensor")
    assert {job.name for job in replayed.jobs} == {"ohlcv_job", "trade_candles_job"}
    health = defs.resolve_sensor_def("streaming_health_sensor")
    assert {job.name for job in health.jobs} == {"freshness_job", "trade_freshness_job"}
    schedule = defs.resolve_schedule_def("nightly_reconciliation")
    assert schedule.job_name == "reconciliation_job"
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.execution_timezone == "UTC"


def test_secrets_from_dotenv_are_env_vars_and_never_in_what_the_ui_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's own example: MONGO_URI with a password, and an InfluxDB token, only in
    `.env`. The resources hold them as EnvVars, and the repository snapshot the webserver
    serves holds neither value (it held both in plain text before)."""
    password, token = "dotenv-Pa55word", "dotenv-token-0123456789"
    for name in SECRETS:  # absent during the test, as they were before it afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"MONGO_URI=mongodb://pipeline:{password}@127.0.0.1:27017/?authSource=admin\n"
        f"INFLUXDB_TOKEN={token}\n"
    )
    settings = Settings.from_env({}, dotenv_path=dotenv)
    assert password in settings.mongo.uri and settings.influx.token == token
    resources = resources_from_settings(settings, {})
    assert isinstance(resources["mongo"].uri, dg.EnvVar)
    assert isinstance(resources["influx"].token, dg.EnvVar)
    # What Dagster resolves at run time is the value from .env.
    assert resources["mongo"].uri.get_value() == settings.mongo.uri

    repository = build_definitions(resources).get_repository_def()
    served = serialize_value(RepositorySnap.from_def(repository))
    assert "MONGO_URI" in served
    assert password not in served and token not in served
