"""The simulated market: for each exchange and symbol, trades generated deterministically from a
seed, and the candles they make. Its candles are the truth a test compares the pipeline with."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from crypto_pipeline.live.exchanges.base import EmptyBuckets

MAX_TRADES_PER_CANDLE = 6
QUIET_CHANCE = 0.1  # an interval without trades (the empty-bucket rule decides what is sent)


@dataclass(frozen=True)
class SimTrade:
    trade_id: int
    time_ms: int
    price: float
    quantity: float
    taker_side: str


@dataclass(frozen=True)
class SimCandle:
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int


def _round(value: float, digits: int = 8) -> float:
    return float(f"{value:.{digits}g}")


class SymbolSeries:
    """One symbol's trades, interval by interval from `start_ms`, generated in order (each
    interval starts from the last price) and kept."""

    def __init__(self, seed: str, start_ms: int, step_ms: int, empty: EmptyBuckets) -> None:
        self._rng = random.Random(seed)
        self.start_ms = start_ms
        self.step_ms = step_ms
        self.empty = empty
        self._price = _round(self._rng.uniform(1, 1000))
        self._first_price = self._price
        self._trades: list[list[SimTrade]] = []
        self._closes: list[float] = []  # the last price once each interval has ended
        self._next_id = 1

    def _index(self, open_time_ms: int) -> int:
        index = (open_time_ms - self.start_ms) // self.step_ms
        while len(self._trades) <= index:
            self._trades.append(self._generate(self.start_ms + len(self._trades) * self.step_ms))
            self._closes.append(self._price)
        return index

    def trades(self, open_time_ms: int) -> list[SimTrade]:
        index = self._index(open_time_ms)
        return self._trades[index] if index >= 0 else []

    def _generate(self, open_time_ms: int) -> list[SimTrade]:
        rng = self._rng
        if rng.random() < QUIET_CHANCE:
            return []
        count = rng.randint(1, MAX_TRADES_PER_CANDLE)
        offsets = sorted(rng.randrange(self.step_ms) for _ in range(count))
        trades = []
        for offset in offsets:
            self._price = _round(self._price * math.exp(rng.gauss(0, 0.001)))
            side = "buy" if rng.random() < 0.5 else "sell"
            quantity = _round(rng.expovariate(1.0), 6)
            trades.append(
                SimTrade(self._next_id, open_time_ms + offset, self._price, quantity, side)
            )
            self._next_id += 1
        return trades

    def last_price_before(self, open_time_ms: int) -> float:
        """The price of the last trade before this interval."""
        index = self._index(open_time_ms)
        return self._closes[index - 1] if index > 0 else self._first_price

    def candle(self, open_time_ms: int, until_ms: int | None = None) -> SimCandle | None:
        """The candle of an interval from its trades up to `until_ms` (None: all): None for an
        interval without trades under the no-candle rule."""
        trades = [t for t in self.trades(open_time_ms) if until_ms is None or t.time_ms <= until_ms]
        if not trades:
            if self.empty is EmptyBuckets.NONE:
                return None
            price = self.last_price_before(open_time_ms)
            return SimCandle(open_time_ms, price, price, price, price, 0.0, 0.0, 0)
        prices = [t.price for t in trades]
        return SimCandle(
            open_time_ms,
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
            _round(sum(t.quantity for t in trades), 12),
            _round(sum(t.price * t.quantity for t in trades), 12),
            len(trades),
        )


class SimClock:
    """The exchange's clock: `start_ms` when the simulator starts, then `speed` times faster
    than the wall clock."""

    def __init__(self, start_ms: int, speed: float) -> None:
        self.start_ms = start_ms
        self.speed = speed
        self._started = time.monotonic()

    def now_ms(self) -> int:
        return self.start_ms + int((time.monotonic() - self._started) * 1000 * self.speed)
