"""Candles that break one shared rule each (crypto_pipeline/candle_rules.py), with the reason both
stages must give: the producer reading them from a CSV (tests/unit/test_formats.py) and the Spark
job reading them from Kafka (tests/integration/test_poison_and_late.py). Written by hand."""

from __future__ import annotations

from typing import Any

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
VALID: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "event_time_ms": T0,
    "open": 1.0,
    "high": 2.0,
    "low": 0.5,
    "close": 1.5,
    "volume": 3.0,
    "quote_volume": 4.5,
    "trades": 7,
}
NAN, INF = float("nan"), float("inf")
BAD_SYMBOL = "symbol is empty or has characters outside A-Z 0-9 _ -, or more than 32"
BAD_EXCHANGE = "exchange has characters outside a-z 0-9 _ -, or more than 32"
OUT_OF_RANGE = "event time outside 2009-01-01..2100-01-01"
FUTURE = "event time ahead of the clock by more than the tolerance"
YEAR_2095_MS = 3_944_678_400_000  # 2095-01-01T00:00Z: a typo'd year, inside the range

# (changed fields, reason)
BROKEN_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"open": NAN}, "open is NaN or infinite"),
    ({"high": INF}, "high is NaN or infinite"),
    ({"low": -INF}, "low is NaN or infinite"),
    ({"close": NAN}, "close is NaN or infinite"),
    ({"volume": INF}, "volume is NaN or infinite"),
    ({"quote_volume": NAN}, "quote_volume is NaN or infinite"),
    ({"trades": INF}, "trades is NaN or infinite"),
    # Two of these in a window would sum to infinity.
    ({"volume": 1e300}, "volume is beyond 1e15 in magnitude"),
    ({"high": 1e308}, "high is beyond 1e15 in magnitude"),
    ({"quote_volume": -1.0}, "negative quote_volume"),
    ({"trades": -3}, "negative trades"),
    ({"trades": 2.5}, "trades is not a whole number"),
    ({"trades": 10**13}, "trades is beyond 1e12 in magnitude"),
    (
        {"symbol": "BTC USDT"},
        BAD_SYMBOL,
    ),
    (
        {"symbol": "BTC=X"},
        BAD_SYMBOL,
    ),
]
# Only a JSON message can carry these (a CSV line cannot hold a newline; times in a CSV are read
# in any unit that makes them plausible).
BROKEN_MESSAGES_ONLY: list[tuple[dict[str, Any], str]] = [
    # Exchanges are named by feeds (a file has none): a name outside the rule is the producer's bug.
    ({"exchange": "Binance"}, BAD_EXCHANGE),
    ({"exchange": "okx:spot"}, BAD_EXCHANGE),
    ({"symbol": ""}, BAD_SYMBOL),
    (
        {"symbol": "BTCUSDT\n"},
        BAD_SYMBOL,
    ),
    (
        {"symbol": "ETH\nx value=1"},
        BAD_SYMBOL,
    ),
    ({"event_time_ms": 0}, OUT_OF_RANGE),
    ({"event_time_ms": T0 * 1000}, OUT_OF_RANGE),
    ({"event_time_ms": -T0}, OUT_OF_RANGE),
    # Would move BTCUSDT's watermark 70 years ahead: every later candle of it would be late.
    ({"event_time_ms": YEAR_2095_MS}, FUTURE),
]


def csv_line(changes: dict[str, Any]) -> str:
    """The candle as a line of the canonical CSV (open_time_ms first)."""
    values = {**VALID, **changes}
    names = ("event_time_ms", "symbol", "open", "high", "low", "close", "volume")
    return ",".join(str(values[name]) for name in (*names, "quote_volume", "trades"))
