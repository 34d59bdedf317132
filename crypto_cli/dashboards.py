"""The Grafana dashboards, as code (grafana-foundation-sdk). `crypto-pipeline dashboards` writes
them to docker/grafana/dashboards/; a test checks the committed files equal what this builds.

Every query is Flux that both InfluxDB 1.8 (the local stack) and 2.x (docker compose) run. The
bucket and measurement are hidden dashboard constants (Grafana does not substitute environment
variables in provisioned dashboards): change them here if INFLUXDB_BUCKET or INFLUXDB_MEASUREMENT
differ from the defaults of .env.example. The market dashboard charts the candles built from
klines or those built from trades (the measurement's `trade_candles` twin), as chosen.

Variables are never pasted raw into Flux: the bucket goes in as a JSON string (quotes and
backslashes escaped), everything else is matched as a regex literal with Grafana's `regex`
format (which escapes every regex metacharacter and `/`), so no value can end the literal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import candlestick, dashboard, stat, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import candlestick as candlestick_model
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
)

from crypto_pipeline.formats.window_values import TRADE_FIELDS
from crypto_pipeline.settings import FEEDS_SUFFIX, REPO_ROOT, trade_candles
from crypto_pipeline.windows import window_ms
from spark_jobs.interface.config import DEFAULT_TRADE_WINDOWS, DEFAULT_WINDOWS

DASHBOARD_DIR = REPO_ROOT / "docker" / "grafana" / "dashboards"
DATASOURCE = DataSourceRef(type_val="influxdb", uid="influxdb-ohlcv")
DEFAULT_BUCKET = "crypto"  # .env.example INFLUXDB_BUCKET
DEFAULT_MEASUREMENT = "ohlcv"
# The windows of both jobs, shortest first (a source has no rows in the other's windows); the
# kline-built candles' first window is selected at first.
WINDOWS = tuple(sorted({*DEFAULT_WINDOWS, *DEFAULT_TRADE_WINDOWS}, key=window_ms))
# Which candles the market dashboard charts: its `source` variable, text : measurement.
SOURCES = {"klines": DEFAULT_MEASUREMENT, "trades": trade_candles(DEFAULT_MEASUREMENT)}
TIME_RANGE = "range(start: v.timeRangeStart, stop: v.timeRangeStop)"
FROM_BUCKET = "from(bucket: ${bucket:json})"


def matches(column: str, variable: str, suffix: str = "") -> str:
    """`r.<column>` equal to the variable's value (plus a fixed suffix), as an anchored regex."""
    return f"r.{column} =~ /^${{{variable}:regex}}{suffix}$/"


SERIES = (
    f"{FROM_BUCKET}\n"
    f"  |> {TIME_RANGE}\n"
    f"  |> filter(fn: (r) => {matches('_measurement', 'source')}"
    f" and {matches('exchange', 'exchange')} and {matches('symbol', 'symbol')}"
    f" and {matches('window', 'window')})\n"
)


@dataclass
class FluxQuery(cogvariants.Dataquery):
    """A Flux query of Grafana's InfluxDB datasource (the SDK ships no InfluxDB query type)."""

    ref_id: str
    query: str

    def to_json(self) -> dict[str, Any]:
        return {"refId": self.ref_id, "datasource": DATASOURCE.to_json(), "query": self.query}


class Flux(cogbuilder.Builder[FluxQuery]):
    def __init__(self, query: str, ref_id: str = "A") -> None:
        self.query = FluxQuery(ref_id, query)

    def build(self) -> FluxQuery:
        return self.query


def fields(*names: str) -> str:
    """The series' fields, one column each, keyed by time."""
    chosen = " or ".join(f'r._field == "{name}"' for name in names)
    return (
        SERIES + f"  |> filter(fn: (r) => {chosen})\n"
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        f'  |> keep(columns: ["_time", {", ".join(json.dumps(n) for n in names)}])'
    )


def batch_metric(field: str) -> str:
    """A per-micro-batch counter of the Spark job summed per minute, one series per query."""
    return (
        f"{FROM_BUCKET}\n"
        f"  |> {TIME_RANGE}\n"
        f"  |> filter(fn: (r) => {matches('_measurement', 'measurement', '_batches')}"
        f' and r._field == "{field}")\n'
        '  |> group(columns: ["query"])\n'
        "  |> aggregateWindow(every: 1m, fn: sum, createEmpty: false)"
    )


def feed_metric(*names: str) -> str:
    """Fields of the live feeds' health points, one series per exchange and field."""
    chosen = " or ".join(f'r._field == "{name}"' for name in names)
    return (
        f"{FROM_BUCKET}\n"
        f"  |> {TIME_RANGE}\n"
        f"  |> filter(fn: (r) => {matches('_measurement', 'measurement', FEEDS_SUFFIX)}"
        f" and ({chosen}))\n"
        '  |> group(columns: ["exchange", "_field"])\n'
        "  |> aggregateWindow(every: 10s, fn: last, createEmpty: false)"
    )


# All time, not the dashboard's range: a stream that stopped a month ago shows as a month stale.
FRESHNESS = (
    f"{FROM_BUCKET}\n"
    "  |> range(start: 1970-01-01T00:00:00Z)\n"
    f"  |> filter(fn: (r) => {matches('_measurement', 'measurement')}"
    ' and r._field == "close")\n'
    '  |> group(columns: ["exchange", "symbol"])\n'
    '  |> sort(columns: ["_time"])\n'
    "  |> last()\n"
    "  |> map(fn: (r) => ({_time: r._time, exchange: r.exchange, symbol: r.symbol,"
    " _value: float(v: int(v: now()) - int(v: r._time)) / 1000000000.0}))"
)


def tag_values(tag: str, where: str = "") -> str:
    """A tag's values in the chosen source's measurement, one per row in _value (what a Grafana
    query variable reads). last() per value, not distinct(): InfluxDB 1.8's Flux returns no rows
    for distinct() on a tag column."""
    return (
        f"{FROM_BUCKET}\n"
        f"  |> {TIME_RANGE}\n"
        f"  |> filter(fn: (r) => {matches('_measurement', 'source')}{where}"
        ' and r._field == "close")\n'
        f'  |> group(columns: ["{tag}"])\n'
        "  |> last()\n"
        "  |> group()\n"
        f'  |> keep(columns: ["{tag}"])\n'
        f'  |> rename(columns: {{{tag}: "_value"}})'
    )


EXCHANGES = tag_values("exchange")
# The chosen exchange's symbols.
SYMBOLS = tag_values("symbol", f" and {matches('exchange', 'exchange')}")


def bucket() -> cogbuilder.Builder[Any]:
    return dashboard.ConstantVariable("bucket").value(DEFAULT_BUCKET)


def constants() -> list[cogbuilder.Builder[Any]]:
    return [bucket(), dashboard.ConstantVariable("measurement").value(DEFAULT_MEASUREMENT)]


# The chart page and candles API (crypto-pipeline serve; compose's `api` service), published on
# the host's loopback as Grafana is.
CHART_PAGE_URL = "http://127.0.0.1:3002/"


def _base(uid: str, title: str, refresh: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["crypto-pipeline"])
        .editable()
        .refresh(refresh)
        .time("now-2d", "now")
        .timezone("utc")
        .link(
            dashboard.DashboardLink("Chart page and candles API")
            .type(DashboardLinkType.LINK)
            .url(CHART_PAGE_URL)
            .tooltip("crypto-pipeline serve: candles of every series, live (add ?token=API_TOKEN)")
            .icon("external link")
            .target_blank(True)
        )
    )


def market_dashboard() -> dashboard.Dashboard:
    exchange = (
        dashboard.QueryVariable("exchange")
        .label("Exchange")
        .datasource(DATASOURCE)
        .query(EXCHANGES)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    symbol = (
        dashboard.QueryVariable("symbol")
        .label("Symbol")
        .datasource(DATASOURCE)
        .query(SYMBOLS)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    first = DEFAULT_WINDOWS[0]
    window = (
        dashboard.CustomVariable("window")
        .label("Window")
        .values(",".join(WINDOWS))
        .current(VariableOption(selected=True, text=first, value=first))
    )
    source = (
        dashboard.CustomVariable("source")
        .label("Built from")
        .values(",".join(f"{text} : {value}" for text, value in SOURCES.items()))
        .current(VariableOption(selected=True, text="klines", value=SOURCES["klines"]))
    )
    bars = common.GraphDrawStyle.BARS
    return (
        _base("crypto-market", "Crypto market: OHLCV", "30s")
        .variables([bucket(), source, exchange, symbol, window])
        .with_panel(
            candlestick.Panel()
            .title("${exchange} ${symbol} candles (${window})")
            .datasource(DATASOURCE)
            .with_target(Flux(fields("open", "high", "low", "close", "volume")))
            .mode(candlestick_model.VizDisplayMode.CANDLES)
            .candle_style(candlestick_model.CandleStyle.CANDLES)
            .color_strategy(candlestick_model.ColorStrategy.OPEN_CLOSE)
            .include_all_fields(False)
            .height(12)
            .span(24)
        )
        .with_panel(
            timeseries.Panel()
            .title("Volume")
            .datasource(DATASOURCE)
            .with_target(Flux(fields("volume")))
            .draw_style(bars)
            .fill_opacity(80)
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Close vs VWAP")
            .datasource(DATASOURCE)
            .with_target(Flux(fields("close", "vwap")))
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Trades")
            .datasource(DATASOURCE)
            .with_target(Flux(fields("trades")))
            .draw_style(bars)
            .fill_opacity(80)
            .decimals(0)
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Taker buy vs sell volume (built from trades)")
            .datasource(DATASOURCE)
            .with_target(Flux(fields(*TRADE_FIELDS)))
            .draw_style(bars)
            .fill_opacity(80)
            .height(8)
            .span(12)
        )
    )


def pipeline_dashboard() -> dashboard.Dashboard:
    bars = common.GraphDrawStyle.BARS
    return (
        _base("crypto-pipeline", "Crypto pipeline: health", "10s")
        .time("now-1h", "now")
        .variables(constants())
        .with_panel(
            timeseries.Panel()
            .title("Windows written per minute (per streaming query)")
            .datasource(DATASOURCE)
            .with_target(Flux(batch_metric("windows")))
            .draw_style(bars)
            .fill_opacity(80)
            .height(8)
            .span(16)
        )
        .with_panel(
            stat.Panel()
            .title("Freshness: seconds since the newest window started")
            .datasource(DATASOURCE)
            .with_target(Flux(FRESHNESS))
            .unit("s")
            .height(8)
            .span(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Dead letters per minute")
            .datasource(DATASOURCE)
            .with_target(Flux(batch_metric("dead_letters")))
            .draw_style(bars)
            .fill_opacity(80)
            .decimals(0)
            .height(8)
            .span(24)
        )
        .with_panel(
            timeseries.Panel()
            .title("Live feeds: seconds since the last message, streams connected")
            .datasource(DATASOURCE)
            .with_target(Flux(feed_metric("seconds_since_message", "connected_streams")))
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Live feeds: reconnects, stalls, candles refilled over REST")
            .datasource(DATASOURCE)
            .with_target(Flux(feed_metric("reconnects", "stalls", "refilled")))
            .decimals(0)
            .height(8)
            .span(12)
        )
    )


DASHBOARDS = {"market.json": market_dashboard, "pipeline.json": pipeline_dashboard}


def render(board: dashboard.Dashboard) -> str:
    return json.dumps(board.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def write_dashboards(folder: Path = DASHBOARD_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = folder / name
        path.write_text(render(build()))
        written.append(path)
    return written
