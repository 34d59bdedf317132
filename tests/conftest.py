"""Fixtures shared by all tests."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from crypto_pipeline.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# make test runs the modules on pytest-xdist workers. The fault tests stop and kill their stack's
# servers, so workers cannot share one: worker gwN (N >= 1) gets a stack of its own, in
# <STACK_DIR>-gwN, on every port shifted by N times this.
WORKER_PORT_OFFSET = 100


def worker_environment(worker: str, settings: Settings) -> dict[str, str]:
    """The settings that give xdist worker `worker` a stack of its own (none for gw0)."""
    offset = WORKER_PORT_OFFSET * int(worker.removeprefix("gw"))
    if offset == 0:
        return {}

    def shifted(host_port: str) -> str:
        host, _, port = host_port.rpartition(":")
        return f"{host}:{int(port) + offset}"

    def shifted_url(url: str) -> str:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=shifted(parts.netloc)))

    ports = {
        "DAGSTER_PORT": settings.dagster_port,
        "API_PORT": settings.api_port,
        "STACK_KAFKA_CONTROLLER_PORT": settings.kafka_controller_port,
        "STACK_INFLUXDB_RPC_PORT": settings.influxdb_rpc_port,
        "STACK_SPARK_MASTER_PORT": settings.spark_master_port,
        "STACK_SPARK_MASTER_UI_PORT": settings.spark_master_ui_port,
    }
    brokers = settings.kafka.bootstrap_servers.split(",")
    return {
        "STACK_DIR": f"{settings.stack_dir}-{worker}",
        "KAFKA_BOOTSTRAP_SERVERS": ",".join(shifted(broker) for broker in brokers),
        "MONGO_URI": shifted_url(settings.mongo.uri),
        "INFLUXDB_URL": shifted_url(settings.influx.url),
        **{name: str(port + offset) for name, port in ports.items()},
    }


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # before any fixture or subprocess reads the settings
        os.environ.update(worker_environment(worker, Settings.from_env()))


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, for topics, databases, buckets and measurements."""
    test = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    return f"t_{test}_{uuid.uuid4().hex[:8]}"


# The fault suite (tests marked `fault`): one row of docs/reliability.md per scenario, printed at
# the end of the session, and a time budget (make test must stay under 35 minutes on 2 cores).
# The rows travel in the test reports' user_properties, which xdist sends to the controller.
FAULT_ROWS: list[str] = []
FAULT_BUDGET_S = 600.0
_fault_seconds: list[float] = []
_rows_of_this_test: list[str] = []


def record_fault(
    scenario: str, rows_in: int, lost: int, duplicated: int, recovery_s: float, test: str
) -> None:
    _rows_of_this_test.append(
        f"| {scenario} | {rows_in:,} | {lost} | {duplicated} | {recovery_s:.1f} s | "
        f"`pytest tests/integration/test_faults.py -k {test}` |"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    try:
        yield
    finally:
        item.user_properties.extend(("fault_row", row) for row in _rows_of_this_test)
        _rows_of_this_test.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "fault" in report.keywords:
        _fault_seconds.append(report.duration)
    if report.when == "call":  # the teardown's report carries the same properties
        FAULT_ROWS.extend(str(row) for name, row in report.user_properties if name == "fault_row")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _fault_seconds:
        return
    terminalreporter.section("fault suite")
    terminalreporter.write_line(
        "| scenario | rows in | rows lost | rows duplicated | recovery | reproduce |"
    )
    for row in FAULT_ROWS:
        terminalreporter.write_line(row)
    spent = sum(_fault_seconds)
    terminalreporter.write_line(f"fault suite: {spent:.0f} s of its {FAULT_BUDGET_S:.0f} s budget")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if sum(_fault_seconds) > FAULT_BUDGET_S and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # over budget: make test would be late
