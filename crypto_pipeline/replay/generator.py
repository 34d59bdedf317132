"""A deterministic generator of realistic-looking candles, so the demo works offline.

Prices follow a random walk whose volatility clusters (GARCH(1,1)); volume follows an intraday
pattern and rises with the size of the move; every candle is consistent
(low <= open, close <= high).
The same seed gives the same file on every machine (Python's `random`, no numpy).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import random
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from crypto_pipeline.formats.candle_message import CANDLE_VALUES, Candle

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}
CANONICAL_HEADER = ("open_time_ms", "symbol", *CANDLE_VALUES)

# Starting price and typical volume per candle (base asset) for well-known symbols.
_KNOWN = {
    "BTCUSDT": (95_000.0, 12.0),
    "ETHUSDT": (3_300.0, 250.0),
    "SOLUSDT": (190.0, 2_500.0),
    "BNBUSDT": (700.0, 300.0),
    "XRPUSDT": (2.2, 400_000.0),
}
# GARCH(1,1) on per-minute log returns: long-run volatility about 0.1% a minute.
_OMEGA, _ALPHA, _BETA = 2e-8, 0.08, 0.90


def _intraday_factor(open_time_ms: int) -> float:
    hour = (open_time_ms // 3_600_000) % 24 + ((open_time_ms // 60_000) % 60) / 60
    return 1.0 + 0.6 * math.cos(2 * math.pi * (hour - 15) / 24)


def _round(value: float) -> float:
    return float(f"{value:.8g}")


def generate_symbol(
    symbol: str, start_ms: int, count: int, interval_ms: int, rng: random.Random
) -> Iterator[Candle]:
    price, base_volume = _KNOWN.get(symbol, (rng.uniform(1, 500), rng.uniform(100, 10_000)))
    scale = math.sqrt(interval_ms / 60_000)
    variance = _OMEGA / (1 - _ALPHA - _BETA)
    last_shock = 0.0  # per-minute return; the candle's return scales it to the interval
    for i in range(count):
        open_time = start_ms + i * interval_ms
        variance = _OMEGA + _ALPHA * last_shock**2 + _BETA * variance
        last_shock = rng.gauss(0.0, math.sqrt(variance))
        sigma = math.sqrt(variance) * scale
        last_return = last_shock * scale
        open_price = _round(price)
        close_price = _round(price * math.exp(last_return))
        high = _round(max(open_price, close_price) * math.exp(abs(rng.gauss(0, sigma / 2))))
        low = _round(min(open_price, close_price) * math.exp(-abs(rng.gauss(0, sigma / 2))))
        high, low = max(high, open_price, close_price), min(low, open_price, close_price)
        activity = _intraday_factor(open_time) * (1 + 3 * abs(last_return) / max(sigma, 1e-12))
        volume = _round(base_volume * activity * math.exp(rng.gauss(0, 0.35)) * scale**2)
        typical = (high + low + close_price) / 3
        trades = max(1, int(volume / base_volume * 400 * rng.uniform(0.8, 1.2)))
        yield Candle(
            symbol=symbol,
            open_time_ms=open_time,
            open=open_price,
            high=high,
            low=low,
            close=close_price,
            volume=volume,
            quote_volume=_round(volume * typical),
            trades=trades,
        )
        price = close_price


def generate(
    symbols: Sequence[str], start: datetime, days: float, interval: str, seed: int
) -> list[Candle]:
    """All candles, sorted by open time then symbol, like the real files."""
    interval_ms = INTERVALS_MS[interval]
    start_ms = int(start.timestamp() * 1000)
    count = int(days * 86_400_000 // interval_ms)
    candles: list[Candle] = []
    for index, symbol in enumerate(symbols):
        rng = random.Random(f"{seed}:{index}:{symbol}")
        candles.extend(generate_symbol(symbol, start_ms, count, interval_ms, rng))
    candles.sort(key=lambda c: (c.open_time_ms, c.symbol))
    return candles


def write_csv(candles: Sequence[Candle], path: Path) -> None:
    """Canonical CSV (gzip-compressed when the name ends in .gz, with no name and a fixed mtime in
    the gzip header, so the bytes are the same on every run)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CANONICAL_HEADER)
    for c in candles:
        writer.writerow(
            [
                c.open_time_ms,
                c.symbol,
                repr(c.open),
                repr(c.high),
                repr(c.low),
                repr(c.close),
                repr(c.volume),
                repr(c.quote_volume),
                c.trades,
            ]
        )
    data = buffer.getvalue().encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with path.open("wb") as raw:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped:
                zipped.write(data)
    else:
        path.write_bytes(data)
