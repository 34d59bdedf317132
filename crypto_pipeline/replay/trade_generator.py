"""A deterministic generator of realistic trade streams, for tests and benchmarks at exchange rates
(numpy: millions of trades a second).

Per symbol and second, the number of trades is Poisson with an intensity that follows the hour of
the day, rises in bursts (a busy regime that starts at random and decays over seconds, as trading
clusters after a move) and drops to nothing in quiet minutes. Within a second, trades are spread
over its milliseconds in id order; several may share a millisecond, as on a real exchange. Prices
walk in ticks, with volatility that clusters; quantities are log-normal in lots; the taker side
follows the move (buyers lift the price). Trade ids are consecutive per symbol.

Two file formats (the formats the replay reads):
- canonical: header `time_ms,symbol,trade_id,price,qty,side[,exchange]`, all symbols in one file
  in time order;
- Binance's public trades archive (data.binance.vision): one file per symbol and day,
  `SYMBOL-trades-YYYY-MM-DD.csv`, no header, `id,price,qty,quote_qty,time,is_buyer_maker,
  is_best_match`, times in microseconds from 2025 on (as Binance's spot files), milliseconds
  before.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CANONICAL_TRADES_HEADER = ("time_ms", "symbol", "trade_id", "price", "qty", "side")
BINANCE_MICROSECONDS_FROM_MS = 1_735_689_600_000  # 2025-01-01T00:00Z
DAY_MS = 86_400_000

# Starting price, price tick, typical trades a second and lot size for well-known symbols.
_KNOWN = {
    "BTCUSDT": (95_000.0, 0.01, 40.0, 1e-5),
    "ETHUSDT": (3_300.0, 0.01, 25.0, 1e-4),
    "SOLUSDT": (190.0, 0.01, 12.0, 1e-3),
}
QUIET_MINUTE_CHANCE = 0.05  # a minute without any trade
BURST_CHANCE = 0.01  # per second: a burst starts
BURST_BOOST = 12.0  # a burst's first second, in multiples of the usual rate; halves every 3 s


@dataclass(frozen=True)
class Trades:
    """Trades as columns, in (time, symbol, trade id) order."""

    symbol: np.ndarray  # str
    trade_id: np.ndarray  # int64
    time_ms: np.ndarray  # int64
    price: np.ndarray  # float64
    quantity: np.ndarray  # float64
    taker_side: np.ndarray  # "buy" or "sell"

    def __len__(self) -> int:
        return len(self.time_ms)


def _symbol_trades(
    symbol: str, start_ms: int, seconds: int, rate: float | None, rng: np.random.Generator
) -> Trades:
    price, tick, usual_rate, lot = _KNOWN.get(
        symbol, (float(rng.uniform(1, 500)), 0.001, float(rng.uniform(2, 10)), 0.01)
    )
    usual_rate = usual_rate if rate is None else rate
    second = np.arange(seconds)
    hour = ((start_ms // 1000 + second) % 86_400) / 3600
    intensity = usual_rate * (1 + 0.6 * np.cos(2 * np.pi * (hour - 15) / 24))
    # Bursts: each start adds a boost that halves every 3 s.
    starts = (rng.random(seconds) < BURST_CHANCE).astype(np.float64)
    kernel = BURST_BOOST * 0.5 ** (np.arange(30) / 3)
    intensity *= 1 + np.convolve(starts, kernel)[:seconds]
    quiet = rng.random(seconds // 60 + 2) < QUIET_MINUTE_CHANCE
    intensity[quiet[(start_ms // 1000 + second) // 60 - start_ms // 60_000]] = 0
    counts = rng.poisson(intensity)
    count = int(counts.sum())

    owner = np.repeat(second, counts)
    offsets = np.sort(rng.integers(0, 1000, count) + owner * 1000)  # ids follow time
    # Volatility per second clusters (a slow random walk of its log); a trade moves the price
    # by a few ticks at most, up when the taker buys.
    volatility = 1e-5 * np.exp(np.cumsum(rng.normal(0, 0.05, seconds)).clip(-2, 2))[owner]
    moves = rng.normal(0, 1, count) * volatility
    log_price = np.log(price) + np.cumsum(moves)
    prices = np.maximum(np.round(np.exp(log_price) / tick), 1) * tick
    buy = np.where(moves == 0, rng.random(count) < 0.5, moves > 0)
    lots = np.maximum(np.round(rng.lognormal(0, 1.2, count) * 20), 1)
    return Trades(
        symbol=np.full(count, symbol, dtype=object),
        trade_id=1_000_000 + np.arange(count, dtype=np.int64),
        time_ms=start_ms + offsets.astype(np.int64),
        price=np.round(prices, 8),
        quantity=np.round(lots * lot, 8),
        taker_side=np.where(buy, "buy", "sell").astype(object),
    )


def generate_trades(
    symbols: Sequence[str],
    start_ms: int,
    seconds: int,
    seed: int,
    rate: float | None = None,
) -> Trades:
    """Every symbol's trades over `seconds` from `start_ms`; `rate`: the usual trades a second
    of every symbol (default: each symbol's own)."""
    parts = [
        _symbol_trades(symbol, start_ms, seconds, rate, np.random.default_rng([seed, index]))
        for index, symbol in enumerate(symbols)
    ]
    columns = {
        name: np.concatenate([getattr(p, name) for p in parts]) for name in Trades.__annotations__
    }
    order = np.lexsort((columns["trade_id"], columns["symbol"].astype(str), columns["time_ms"]))
    return Trades(**{name: values[order] for name, values in columns.items()})


def _decimal(value: float) -> str:
    """Up to 8 decimals, never in exponent notation (values are rounded to 8 when generated)."""
    return f"{value:.8f}".rstrip("0").rstrip(".")


def _write(path: Path, text: str) -> None:
    """Gzip-compressed when the name ends in .gz, with a fixed header: the same bytes every run."""
    data = text.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with (
            path.open("wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as out,
        ):
            out.write(data)
    else:
        path.write_bytes(data)


def write_canonical_trades(trades: Trades, path: Path, exchange: str | None = None) -> None:
    header = [*CANONICAL_TRADES_HEADER, *(["exchange"] if exchange else [])]
    buffer = io.StringIO()
    buffer.write(",".join(header) + "\n")
    suffix = f",{exchange}" if exchange else ""
    for time_ms, symbol, trade_id, price, quantity, side in zip(
        trades.time_ms.tolist(),
        trades.symbol.tolist(),
        trades.trade_id.tolist(),
        trades.price.tolist(),
        trades.quantity.tolist(),
        trades.taker_side.tolist(),
        strict=True,
    ):
        buffer.write(
            f"{time_ms},{symbol},{trade_id},{_decimal(price)},{_decimal(quantity)},{side}{suffix}\n"
        )
    _write(path, buffer.getvalue())


def write_binance_trades(trades: Trades, folder: Path) -> list[Path]:
    """One file per symbol and UTC day, as Binance's archive names them."""
    written = []
    days = trades.time_ms // DAY_MS
    for symbol in sorted(set(trades.symbol.tolist())):
        for day in sorted(set(days[trades.symbol == symbol].tolist())):
            chosen = (trades.symbol == symbol) & (days == day)
            name = np.datetime64(day * DAY_MS, "ms").astype("datetime64[D]")
            path = folder / f"{symbol}-trades-{name}.csv"
            buffer = io.StringIO()
            for trade_id, price, quantity, time_ms, side in zip(
                trades.trade_id[chosen].tolist(),
                trades.price[chosen].tolist(),
                trades.quantity[chosen].tolist(),
                trades.time_ms[chosen].tolist(),
                trades.taker_side[chosen].tolist(),
                strict=True,
            ):
                stamp = time_ms * 1000 if time_ms >= BINANCE_MICROSECONDS_FROM_MS else time_ms
                quote = round(price * quantity, 8)
                maker_buys = "True" if side == "sell" else "False"
                buffer.write(
                    f"{trade_id},{price:.8f},{quantity:.8f},{quote:.8f},{stamp},{maker_buys},True\n"
                )
            _write(path, buffer.getvalue())
            written.append(path)
    return written
