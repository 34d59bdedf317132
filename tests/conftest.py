"""Fixtures shared by all tests."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, for topics, databases, buckets and measurements."""
    test = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    return f"t_{test}_{uuid.uuid4().hex[:8]}"


# The fault suite (tests marked `fault`): one row of docs/reliability.md per scenario, printed at
# the end of the session, and a time budget (make test must stay under 35 minutes on 2 cores).
FAULT_ROWS: list[str] = []
FAULT_BUDGET_S = 600.0
_fault_seconds: list[float] = []


def record_fault(
    scenario: str, rows_in: int, lost: int, duplicated: int, recovery_s: float, test: str
) -> None:
    FAULT_ROWS.append(
        f"| {scenario} | {rows_in:,} | {lost} | {duplicated} | {recovery_s:.1f} s | "
        f"`pytest tests/integration/test_faults.py -k {test}` |"
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "fault" in report.keywords:
        _fault_seconds.append(report.duration)


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
