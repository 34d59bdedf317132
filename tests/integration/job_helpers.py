"""Replays and Spark job runs on a test's own topic, database and measurement (all named `name`),
through the job's contract (JobConfig: arguments plus secrets in the environment)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

from crypto_pipeline.replay.producer import ReplayOptions, ReplaySummary, replay
from crypto_pipeline.settings import InfluxTarget, KafkaTarget, MongoTarget, Settings
from spark_jobs.interface import launch
from spark_jobs.interface.config import JobConfig


def replay_file(settings: Settings, path: Path, topic: str, **options: Any) -> ReplaySummary:
    return replay(
        ReplayOptions(path=path, topic=topic, **options),
        settings.kafka.bootstrap_servers,
        show_progress=False,
    )


def mongo_of(settings: Settings, name: str) -> MongoTarget:
    return dataclasses.replace(settings.mongo, database=name)


def influx_of(settings: Settings, name: str) -> InfluxTarget:
    return dataclasses.replace(settings.influx, measurement=name)


def job_for(settings: Settings, name: str, checkpoint: Path, **overrides: Any) -> JobConfig:
    return JobConfig.from_settings(
        settings,
        kafka=KafkaTarget(settings.kafka.bootstrap_servers, name),
        mongo=mongo_of(settings, name),
        influx=influx_of(settings, name),
        checkpoint_dir=str(checkpoint),
        **overrides,
    )


def run_job(job: JobConfig, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    """The job as it is launched: its own process, until it exits."""
    return subprocess.run(
        launch.driver_command(job),
        env=launch.process_environment(job),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def start_job(job: JobConfig, **popen: Any) -> subprocess.Popen[bytes]:
    """The job in the background (its output discarded unless `popen` says otherwise)."""
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    return subprocess.Popen(
        launch.driver_command(job), env=launch.process_environment(job), **popen
    )
