"""The local stack and Spark, started once per test session and stopped if this session started
them. Every integration test talks to real servers over sockets.

Under pytest-xdist each worker is a session of its own: the first worker to get the lock starts
the stack and leaves a mark, and the controller stops it at the end (tests/conftest.py)."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pyspark.sql import SparkSession

import local_stack as stack
from crypto_pipeline.settings import Settings
from spark_jobs.interface.config import JobConfig
from spark_jobs.session import build_spark_session
from tests.conftest import started_by_tests_mark


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@contextmanager
def stack_lock(settings: Settings) -> Iterator[None]:
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.stack_dir / "tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def local_stack(settings: Settings) -> Iterator[Settings]:
    under_xdist = "PYTEST_XDIST_WORKER" in os.environ
    with stack_lock(settings):
        started_here = not stack.is_running(settings)
        stack.up(settings)
        if started_here and under_xdist:
            started_by_tests_mark(settings.stack_dir).touch()
    yield settings
    if started_here and not under_xdist:
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
