"""Every Grafana panel's Flux query, with its variables and a time range substituted as Grafana
does, runs against the local InfluxDB after an end-to-end replay and returns rows; a variable
value crafted to break out of its literal matches nothing."""

from __future__ import annotations

import time
from pathlib import Path

from influxdb_client.client.write_api import SYNCHRONOUS

from crypto_cli import dashboards
from crypto_pipeline.clients import influx_client
from crypto_pipeline.live.feed_status import FeedStatus, health_point
from crypto_pipeline.settings import REPO_ROOT, Settings
from spark_jobs.interface.config import DEFAULT_WINDOWS
from tests.integration.grafana_helpers import assert_panels_have_rows, dashboard, run_flux
from tests.integration.job_helpers import job_for, replay_file, run_job

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"


def test_every_panel_query_returns_rows_after_an_end_to_end_replay(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    replay_file(local_stack, SAMPLE, unique_name, limit=2_160)
    config = job_for(local_stack, unique_name, tmp_path / "checkpoints")
    job = run_job(config)
    assert job.returncode == 0, job.stderr[-3000:]
    target = config.influx
    constants = {"bucket": target.bucket, "measurement": unique_name, "source": unique_name}

    market = dashboard("market.json")
    variable_queries = {v["name"]: v.get("query") for v in market["templating"]["list"]}
    exchanges = run_flux(target, variable_queries["exchange"], constants)
    assert [row["_value"] for row in exchanges] == ["file"]
    symbols = run_flux(target, variable_queries["symbol"], {**constants, "exchange": "file"})
    assert sorted(row["_value"] for row in symbols) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert run_flux(target, variable_queries["symbol"], {**constants, "exchange": "okx"}) == []
    for window in DEFAULT_WINDOWS:
        variables = {**constants, "exchange": "file", "symbol": "ETHUSDT", "window": window}
        assert_panels_have_rows(target, variables, klines=True)
        candles = run_flux(target, market["panels"][0]["targets"][0]["query"], variables)
        # 2,160 rows = 12 hours of 3 symbols: 144 five-minute, 12 hourly, 3 four-hour candles.
        assert len(candles) == {"5m": 144, "1h": 12, "4h": 3}[window]
        assert set(candles[0]) >= {"_time", "open", "high", "low", "close", "volume"}

    # A live feed's health point, as the feed writes it every few seconds.
    status = FeedStatus("binance", unique_name, ["BTCUSDT"], "1m", connected_streams=1, streams=1)
    status.last_message_at, status.reconnects = time.time() - 2, 3
    with influx_client(target) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            target.bucket,
            record=health_point(status, target.feeds_measurement, time.time()),
            write_precision="ms",
        )
    for panel in dashboard("pipeline.json")["panels"]:
        rows = run_flux(target, panel["targets"][0]["query"], constants)
        assert rows, f"{panel['title']} returned no rows"
    written = run_flux(target, dashboards.batch_metric("windows"), constants)
    assert sum(row["_value"] for row in written) == 3 * (144 + 12 + 3)
    reconnects = run_flux(target, dashboards.feed_metric("reconnects"), constants)
    assert [(row["exchange"], row["_value"]) for row in reconnects] == [("binance", 3)]
    freshness = run_flux(target, dashboards.FRESHNESS, constants)
    assert sorted(row["symbol"] for row in freshness) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert all(row["_value"] > 0 for row in freshness)

    # Values that would end the literal if pasted raw: matched literally, so nothing.
    for crafted in ("ETHUSDT/ or r._measurement =~ /.*", 'ETHUSDT" or true or "', "ETH.*"):
        variables = {**constants, "exchange": "file", "symbol": crafted, "window": "5m"}
        assert run_flux(target, market["panels"][0]["targets"][0]["query"], variables) == []
