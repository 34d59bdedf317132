"""Every Grafana panel's Flux query, with its variables and a time range substituted as Grafana
does, runs against the local InfluxDB after an end-to-end replay and returns rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from crypto_pipeline import dashboards
from crypto_pipeline.clients import influx_client
from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.settings import REPO_ROOT, Settings

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
# What Grafana's Flux datasource defines for every query: the `v` record of the time range.
TIME_RANGE = "v = {timeRangeStart: 2020-01-01T00:00:00Z, timeRangeStop: 2100-01-01T00:00:00Z}\n"


def run_flux(settings: Settings, query: str, variables: dict[str, str]) -> list[dict[str, Any]]:
    text = re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], query)
    with influx_client(settings) as client:
        tables = client.query_api().query(TIME_RANGE + text)
    return [record.values for table in tables for record in table.records]


def dashboard(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((dashboards.DASHBOARD_DIR / name).read_text())
    return loaded


def test_every_panel_query_returns_rows_after_an_end_to_end_replay(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    replay(
        ReplayOptions(path=SAMPLE, topic=unique_name, limit=2_160), local_stack, show_progress=False
    )
    job = subprocess.run(
        [
            *[sys.executable, "-m", "spark_jobs.main", "--topic", unique_name],
            *["--measurement", unique_name, "--mongo-database", unique_name],
            *["--checkpoint-dir", str(tmp_path / "checkpoints")],
        ],
        capture_output=True,
        text=True,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    constants = {"bucket": local_stack.influxdb_bucket, "measurement": unique_name}

    market = dashboard("market.json")
    (symbol_variable,) = [v for v in market["templating"]["list"] if v["name"] == "symbol"]
    symbols = run_flux(local_stack, symbol_variable["query"], constants)
    assert sorted(row["_value"] for row in symbols) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for window in dashboards.WINDOWS:
        variables = {**constants, "symbol": "ETHUSDT", "window": window}
        for panel in market["panels"]:
            rows = run_flux(local_stack, panel["targets"][0]["query"], variables)
            assert rows, f"{panel['title']} ({window}) returned no rows"
            assert all(row.get(key) is not None for row in rows for key in row if key != "result")
        candles = run_flux(local_stack, market["panels"][0]["targets"][0]["query"], variables)
        # 2,160 rows = 12 hours of 3 symbols: 144 five-minute, 12 hourly, 3 four-hour candles.
        assert len(candles) == {"5m": 144, "1h": 12, "4h": 3}[window]
        assert set(candles[0]) >= {"_time", "open", "high", "low", "close", "volume"}

    for panel in dashboard("pipeline.json")["panels"]:
        rows = run_flux(local_stack, panel["targets"][0]["query"], constants)
        assert rows, f"{panel['title']} returned no rows"
    written = run_flux(local_stack, dashboards.batch_metric("windows"), constants)
    assert sum(row["_value"] for row in written) == 3 * (144 + 12 + 3)
    freshness = run_flux(local_stack, dashboards.FRESHNESS, constants)
    assert sorted(row["symbol"] for row in freshness) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert all(row["_value"] > 0 for row in freshness)
