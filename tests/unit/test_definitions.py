from __future__ import annotations

import dagster as dg

from crypto_assets.definitions import defs


def test_every_job_sensor_and_asset_resolves() -> None:
    assert defs.resolve_job_def("replay_job").name == "replay_job"
    assert defs.resolve_job_def("streaming_job").name == "streaming_job"
    assert defs.resolve_sensor_def("incoming_files_sensor").job_name == "replay_job"
    assert defs.resolve_sensor_def("streaming_health_sensor").name == "streaming_health_sensor"
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} == {
        "kafka_klines",
        "mongo_realtime",
        "influx_ohlcv",
    }


def test_sink_assets_depend_on_the_topic() -> None:
    graph = defs.resolve_asset_graph()
    for name in ("mongo_realtime", "influx_ohlcv"):
        parents = graph.get(dg.AssetKey(name)).parent_keys
        assert parents == {dg.AssetKey("kafka_klines")}


def test_replay_job_default_config_is_valid() -> None:
    job = defs.resolve_job_def("replay_job")
    assert job.run_config_schema.config_type is not None
    from dagster._config import validate_config

    result = validate_config(job.run_config_schema.config_type, job.run_config or {})
    assert result.success, result.errors
