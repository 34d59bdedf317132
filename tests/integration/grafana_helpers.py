"""Grafana's dashboards as Grafana runs them: each panel's Flux query with its variables and a
time range substituted as Grafana does, against the local InfluxDB."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from crypto_cli import dashboards
from crypto_pipeline.clients import influx_client
from crypto_pipeline.settings import InfluxTarget

# What Grafana's Flux datasource defines for every query: the `v` record of the time range.
TIME_RANGE = "v = {timeRangeStart: 2020-01-01T00:00:00Z, timeRangeStop: 2100-01-01T00:00:00Z}\n"
# Grafana's formats (public/app/core/utils/kbn.ts regexEscape, and JSON.stringify).
GRAFANA_FORMATS: dict[str | None, Callable[[str], str]] = {
    None: lambda value: value,
    "regex": lambda value: re.sub(r"[\\^$*+?.()|[\]{}/]", lambda m: "\\" + m.group(0), value),
    "json": json.dumps,
}


def interpolate(query: str, variables: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        return GRAFANA_FORMATS[match.group(2)](variables[match.group(1)])

    return re.sub(r"\$\{(\w+)(?::(\w+))?\}", substitute, query)


def run_flux(target: InfluxTarget, query: str, variables: dict[str, str]) -> list[dict[str, Any]]:
    with influx_client(target) as client:
        tables = client.query_api().query(TIME_RANGE + interpolate(query, variables))
    return [record.values for table in tables for record in table.records]


def dashboard(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((dashboards.DASHBOARD_DIR / name).read_text())
    return loaded


def assert_panels_have_rows(target: InfluxTarget, variables: dict[str, str], klines: bool) -> None:
    """Every market panel returns rows without nulls, but the taker volumes' on kline-built
    candles (klines have none: no rows)."""
    for panel in dashboard("market.json")["panels"]:
        rows = run_flux(target, panel["targets"][0]["query"], variables)
        if klines and "taker" in panel["title"].lower():
            assert rows == [], panel["title"]
            continue
        assert rows, f"{panel['title']} ({variables['window']}) returned no rows"
        assert all(row.get(key) is not None for row in rows for key in row if key != "result")
