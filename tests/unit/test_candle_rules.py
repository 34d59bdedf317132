"""The shared candle rules on hand-made values (the Spark stage's copy is checked against the same
cases in tests/integration/test_poison_and_late.py)."""

from __future__ import annotations

import math
import random

import pytest

from crypto_pipeline import candle_rules as rules

T = 1_735_689_600_000  # 2025-01-01T00:00Z
GOOD = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0}


@pytest.mark.parametrize("symbol", ["BTCUSDT", "BTC-USD", "1000SATS_USDT", "A" * 32])
def test_good_symbols(symbol: str) -> None:
    assert rules.candle_reason(symbol, T, GOOD) is None


@pytest.mark.parametrize("symbol", ["", "btcusdt", "BTC USDT", "BTC,x=1", "BTC\n", 'B"', "A" * 33])
def test_bad_symbols(symbol: str) -> None:
    assert rules.candle_reason(symbol, T, GOOD) == rules.BAD_SYMBOL


@pytest.mark.parametrize(
    ("event_ms", "reason"),
    [
        (rules.MIN_EVENT_MS, None),
        (rules.MIN_EVENT_MS - 1, rules.EVENT_TIME_OUT_OF_RANGE),
        (rules.MAX_EVENT_MS - 1, None),
        (rules.MAX_EVENT_MS, rules.EVENT_TIME_OUT_OF_RANGE),
        (T // 1000, rules.EVENT_TIME_OUT_OF_RANGE),  # seconds
        (T * 1000, rules.EVENT_TIME_OUT_OF_RANGE),  # microseconds
    ],
)
def test_event_time_range(event_ms: int, reason: str | None) -> None:
    assert rules.candle_reason("X", event_ms, GOOD) == reason


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("open", math.nan, "open is NaN or infinite"),
        ("high", math.inf, "high is NaN or infinite"),
        ("volume", -math.inf, "volume is NaN or infinite"),
        ("quote_volume", math.nan, "quote_volume is NaN or infinite"),
        ("volume", 1e300, "volume is beyond 1e15 in magnitude"),
        ("trades", 10**16, "trades is beyond 1e12 in magnitude"),
        # A week of 1-second candles at this many trades each would overflow int64.
        ("trades", 10**13, "trades is beyond 1e12 in magnitude"),
        ("trades", 10**12, None),
        ("volume", -1.0, "negative volume"),
        ("trades", -1, "negative trades"),
        ("quote_volume", None, None),
        ("open", 0.4, rules.OPEN_OUTSIDE),
        ("close", 0.4, rules.CLOSE_OUTSIDE),
        ("low", 3.0, rules.HIGH_BELOW_LOW),
    ],
)
def test_numbers(field: str, value: float | None, reason: str | None) -> None:
    assert rules.candle_reason("X", T, {**GOOD, field: value}) == reason


def test_the_feeds_fast_path_gives_the_same_reason_as_the_rules() -> None:
    """values_reason (one comparison for a valid candle) against candle_reason on random
    candles, valid and broken (NaN, infinities, negatives, out of range, swapped bounds)."""
    chance = random.Random(5)
    specials = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e16, 2.5, 1e12 + 1]
    for _ in range(20_000):
        values = [
            chance.choice(specials) if chance.random() < 0.1 else chance.uniform(0, 100)
            for _ in range(7)
        ]
        quote = None if chance.random() < 0.2 else values[5]
        trades = None if chance.random() < 0.2 else values[6]
        event = chance.choice([1_700_000_000_000, 1_000, 5_000_000_000_000])
        symbol = chance.choice(["BTCUSDT", "bad symbol"])
        numbers = dict(zip(rules.NUMERIC_FIELDS, [*values[:5], quote, trades], strict=True))
        expected = rules.candle_reason(symbol, event, numbers)
        open_, high, low, close, volume = values[:5]
        reason = rules.values_reason(symbol, event, open_, high, low, close, volume, quote, trades)
        assert reason == expected
