"""The local stack and Spark, started once per test session and stopped if this session started
them. Every integration test talks to real servers over sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

import local_stack as stack
from crypto_pipeline.settings import Settings
from spark_jobs.interface.config import JobConfig
from spark_jobs.session import build_spark_session


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def local_stack(settings: Settings) -> Iterator[Settings]:
    started_here = not stack.is_running(settings)
    stack.up(settings)
    yield settings
    if started_here:
        stack.down(settings)


@pytest.fixture(scope="session")
def spark(local_stack: Settings) -> Iterator[SparkSession]:
    session = build_spark_session(JobConfig.from_settings(local_stack), "crypto-pipeline-tests")
    try:
        yield session
    finally:
        session.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
