"""A window as both sinks store it: its key (exchange, symbol, window length, window start) and its
values. The MongoDB document (window_document.py) and the InfluxDB point (influx_point.py) are two
encodings of this one shape.

Inside the Spark job a series (one exchange's symbol) is one string, `exchange:SYMBOL`
(`series_key`): its state, watermark, frontiers and ledger entries are per series. Neither part
can hold `:` (crypto_pipeline/candle_rules.py); the sinks store the two parts apart."""

from __future__ import annotations

from collections.abc import Container
from datetime import UTC, datetime
from typing import Any

KEY_FIELDS = ("exchange", "symbol", "window", "window_start_ms")
SERIES_SEPARATOR = ":"
AGGREGATE_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "vwap",
    "trades",
    "rows",
    "first_event_ms",
    "last_event_ms",
)
# What a candle built from trades holds besides AGGREGATE_FIELDS (where `rows` counts trades).
TRADE_FIELDS = ("taker_buy_volume", "taker_sell_volume")
INTEGER_FIELDS = frozenset({"trades", "rows", "first_event_ms", "last_event_ms"})
NULLABLE_FIELDS = ("quote_volume", "vwap", "trades")
# The version of a window's input (spark_jobs/window_versions.py): the highest Kafka offset of its
# candles per partition ({"0": 1234, ...}). Stored in MongoDB only.
INPUT_OFFSETS = "input_offsets"

# A window's key, and every window of a sink read back: key -> {aggregate field: value}.
AggregateKey = tuple[str, str, str, int]
Aggregates = dict[AggregateKey, dict[str, Any]]


def stored_fields(names: Container[str]) -> tuple[str, ...]:
    """The value fields of a window whose fields are `names` (a trade-built one has more)."""
    return (*AGGREGATE_FIELDS, *(name for name in TRADE_FIELDS if name in names))


def series_key(exchange: str, symbol: str) -> str:
    return f"{exchange}{SERIES_SEPARATOR}{symbol}"


def split_series(key: str) -> tuple[str, str]:
    """(exchange, symbol) of a series key."""
    exchange, _, symbol = key.partition(SERIES_SEPARATOR)
    return exchange, symbol


def series_selector(text: str) -> str:
    """A series as a person writes it: `SYMBOL` (on every exchange) or `exchange:SYMBOL`, in the
    pipeline's case."""
    exchange, separator, symbol = text.rpartition(SERIES_SEPARATOR)
    return f"{exchange.strip().lower()}{separator}{symbol.strip().upper()}"


# In `<collection>_writers` (spark_jobs/window_versions.py), a document per series:
# `{"_id": FRONTIER + series key, "ends": {window label: latest window end written, epoch ms}}`.
# The candles API lists the series and finds their newest windows there.
FRONTIER = "frontier|"


def window_id(exchange: str, symbol: str, window: str, window_start_ms: int) -> str:
    """A window's natural key as one string: its MongoDB `_id`."""
    return f"{exchange}|{symbol}|{window}|{window_start_ms}"


def epoch_ms(moment: datetime) -> int:
    """Epoch ms of a window's time as a sink's client returns it (naive dates are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
