"""docker compose's services run as local processes with compose's own environment and commands
(tests/integration/compose_parity.py): Postgres as Dagster's storage through docker/dagster.yaml,
the code server over gRPC through docker/workspace.yaml, webserver and daemon; a replay launched
through GraphQL makes the sensor run the Spark job, and every check passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_pipeline.settings import REPO_ROOT, Settings

CHECKS = (
    "sinks_agree",
    "matches_source",
    "nothing_left_behind",
    "late_rows_repaired",
    "no_gaps",
    "fresh",
)


def test_the_compose_deployment_runs_the_pipeline_with_compose_environment(
    local_stack: Settings, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root for its own network, mount and pid namespaces (unshare)")
    command = [
        *["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"],
        *[sys.executable, "-m", "tests.integration.compose_parity", str(tmp_path)],
    ]
    env = {**os.environ, "STACK_CACHE_DIR": str(local_stack.cache_dir)}
    finished = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    logs = "".join(
        f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-2000:]}"
        for log in sorted(tmp_path.glob("*.log"))
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:] + logs
    result = json.loads((tmp_path / "result.json").read_text())

    assert result["replay_job"] == "SUCCESS", result["errors"]
    assert result["triggered_jobs"] == ["ohlcv_job"]
    assert result["ohlcv_job"] == "SUCCESS", result["errors"]
    checks = result["checks"]
    candles = {name: status for name, status in checks.items() if "trade_candles" not in name}
    assert candles == {
        f"{asset}/{check}": "SUCCEEDED"
        for asset in ("mongo_realtime", "influx_ohlcv")
        for check in CHECKS
    }
    # The checks of the candles built from trades run after a replay of trades only.
    assert {status for name, status in checks.items() if name not in candles} == {"NONE"}
    assert result["mongo_documents"] == 1908
