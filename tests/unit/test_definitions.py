from __future__ import annotations

from crypto_assets.definitions import defs


def test_every_job_sensor_and_asset_resolves() -> None:
    assert defs.resolve_job_def("replay_job").name == "replay_job"
    assert defs.resolve_sensor_def("incoming_files_sensor").job_name == "replay_job"
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} >= {"kafka_klines"}


def test_replay_job_default_config_is_valid() -> None:
    job = defs.resolve_job_def("replay_job")
    assert job.run_config_schema.config_type is not None
    from dagster._config import validate_config

    result = validate_config(job.run_config_schema.config_type, job.run_config or {})
    assert result.success, result.errors
