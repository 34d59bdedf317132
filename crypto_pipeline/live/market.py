"""What an exchange tells the feed, in one form for every exchange: candle updates and trades,
symbols in the pipeline's one spelling."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

# Quote currencies recognised when a symbol is written without a separator ("BTCUSDT"): the
# longest that ends the symbol wins. Only exchanges that spell pairs with a separator (OKX's
# "BTC-USDT") need the split.
QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "USD", "EUR", "GBP", "TRY", "BTC", "ETH", "BNB")
_SEPARATORS = re.compile(r"[-_/:]")


class FrameError(ValueError):
    """A frame the exchange's documented format does not allow; the message is the reason."""


@functools.lru_cache(maxsize=65536)  # a feed sees its few symbols on every frame
def canonical_symbol(symbol: str) -> str:
    """The pipeline's spelling of a pair, the same for every exchange: upper case, base then
    quote, no separator ("btc-usdt", "BTC/USDT" and "BTCUSDT" are all "BTCUSDT")."""
    return _SEPARATORS.sub("", symbol.strip()).upper()


def split_pair(symbol: str) -> tuple[str, str]:
    """("BTC", "USDT") from any spelling; a separator, if given, decides."""
    parts = _SEPARATORS.split(symbol.strip().upper())
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    joined = canonical_symbol(symbol)
    for quote in sorted(QUOTES, key=len, reverse=True):
        if joined.endswith(quote) and len(joined) > len(quote):
            return joined[: -len(quote)], quote
    raise ValueError(f"cannot tell base from quote in {symbol!r}; write it as BASE-QUOTE")


class KlineUpdate(NamedTuple):
    """One version of a candle. `closed` is the final one; before it, each update revises the
    same candle (same exchange, symbol and open time). (A named tuple: built once per frame.)"""

    exchange: str
    symbol: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None
    trades: int | None
    closed: bool


class TradeUpdate(NamedTuple):
    exchange: str
    symbol: str
    trade_id: str
    time_ms: int
    price: float
    quantity: float
    taker_side: str | None  # "buy" or "sell": the side of the order that took liquidity


@dataclass
class Frame:
    """What one websocket frame held. Frames with neither (subscription answers, pongs) are
    control frames; `error` is set when the exchange reports one (e.g. an unknown symbol)."""

    klines: list[KlineUpdate]
    trades: list[TradeUpdate]
    error: str | None = None


CONTROL = Frame([], [])


def number(value: object, field: str) -> float:
    """A number the exchange sends as a string or a number; anything else is a FrameError."""
    kind = type(value)
    if kind is str or kind is float or kind is int:  # exact types: a bool is not a number
        try:
            return float(value)  # type: ignore[arg-type]
        except ValueError:
            pass
    raise FrameError(f"{field} is not a number: {value!r}")


def whole(value: object, field: str) -> int:
    result = number(value, field)
    if result != result or result in (float("inf"), float("-inf")) or result != int(result):
        raise FrameError(f"{field} is not a whole number: {value!r}")
    return int(result)
