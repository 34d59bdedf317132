"""The committed Grafana dashboards parse with the Grafana SDK and every panel is complete."""

from __future__ import annotations

import json
import re

import pytest
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel

from crypto_cli import dashboards


def parse(name: str) -> Dashboard:
    return Dashboard.from_json(json.loads((dashboards.DASHBOARD_DIR / name).read_text()))


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_panel_has_the_influxdb_datasource_and_a_flux_query(name: str) -> None:
    board = parse(name)
    assert board.panels
    for panel in board.panels:
        assert isinstance(panel, Panel)
        assert panel.datasource is not None and panel.datasource.uid == "influxdb-ohlcv"
        # The SDK has no InfluxDB query model: targets parse as UnknownDataquery (raw data).
        targets = [t for t in panel.targets or [] if isinstance(t, UnknownDataquery)]
        queries = [target.data["query"] for target in targets]
        assert queries and all(q.startswith("from(bucket: ${bucket:json})") for q in queries), (
            panel.title
        )
        # No variable is pasted raw: a JSON string (the bucket) or an escaped regex (the rest).
        for query in queries:
            for name, form in re.findall(r"\$\{(\w+)(?::(\w+))?\}", query):
                assert form == ("json" if name == "bucket" else "regex"), (panel.title, name)


def test_market_dashboard_charts_klines_or_trades_by_exchange_symbol_and_window() -> None:
    board = parse("market.json")
    assert board.templating.list_val is not None
    variables = {v.name: v for v in board.templating.list_val}
    assert set(variables) == {"bucket", "source", "exchange", "symbol", "window"}
    # Grafana's custom variable syntax: "text : value", the values the two measurements.
    assert variables["source"].query == "klines : ohlcv,trades : ohlcv_from_trades"
    assert variables["window"].query == "1s,1m,5m,1h,4h"
    assert [(p.type_val, p.title) for p in board.panels or []] == [
        ("candlestick", "${exchange} ${symbol} candles (${window})"),
        ("timeseries", "Volume"),
        ("timeseries", "Close vs VWAP"),
        ("timeseries", "Trades"),
        ("timeseries", "Taker buy vs sell volume (built from trades)"),
    ]
