"""What every exchange adapter provides: its endpoints, how to subscribe, how to read its frames
and its REST candles, and its empty-bucket rule. One small adapter per exchange, written from
the exchange's documented protocol (links in each module)."""

from __future__ import annotations

import functools
import json
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from crypto_pipeline.live.market import (
    Frame,
    FrameError,
    KlineUpdate,
    canonical_symbol,
    number,
    whole,
)
from crypto_pipeline.windows import window_ms


class EmptyBuckets(StrEnum):
    """What an exchange sends for an interval without trades."""

    # A candle for every interval: volume 0, open = high = low = close = the previous close.
    ZERO_VOLUME = "zero-volume candle"
    # No candle: the series skips the interval.
    NONE = "no candle"


class RestRejected(RuntimeError):
    """The exchange refused a REST request. `retry_after_s` is set when it asks to come back
    later (rate limits); otherwise the request cannot succeed as written."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Stream:
    """One websocket connection: where, and what to send once connected."""

    url: str
    subscriptions: tuple[str, ...]


class Exchange(ABC):
    name: ClassVar[str]
    default_ws_url: ClassVar[str]
    default_rest_url: ClassVar[str]
    empty_buckets: ClassVar[EmptyBuckets]
    # Most candles one REST request returns.
    rest_page_limit: ClassVar[int]
    # Pairs of (our interval, the exchange's name of it).
    intervals: ClassVar[dict[str, str]]
    # An application-level ping the exchange requires (None: websocket protocol pings, which
    # the client library sends), and how often.
    keepalive_frame: ClassVar[str | None] = None
    keepalive_s: ClassVar[float] = 20.0

    def native_interval(self, interval: str) -> str:
        if interval not in self.intervals:
            supported = ", ".join(self.intervals)
            raise ValueError(f"{self.name} has no {interval!r} candles; choose from {supported}")
        return self.intervals[interval]

    def interval_ms(self, interval: str) -> int:
        self.native_interval(interval)
        return window_ms(interval)

    @abstractmethod
    def native_symbol(self, symbol: str) -> str:
        """How the exchange spells a pair in requests."""

    @abstractmethod
    def streams(self, ws_url: str, symbols: list[str], interval: str, trades: bool) -> list[Stream]:
        """The connections that carry the candle (and, with `trades`, the trade) streams."""

    @abstractmethod
    def parse(self, text: str) -> Frame:
        """A websocket frame's candles and trades; FrameError if the format does not allow it."""

    @abstractmethod
    def server_time_url(self, rest_url: str) -> str: ...

    @abstractmethod
    def parse_server_time(self, body: bytes) -> int:
        """The exchange's clock in epoch ms: a REST candle is closed once it has passed its end."""

    @abstractmethod
    def klines_url(
        self, rest_url: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> str:
        """The request for the candles opened in [start_ms, end_ms] (at most a page of them)."""

    @abstractmethod
    def parse_klines(self, symbol: str, body: bytes) -> list[KlineUpdate]:
        """A REST page's candles (as not closed: the caller decides by the exchange's clock);
        RestRejected if the exchange answered with an error."""


def load_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise FrameError("not JSON") from None


def member(document: Any, name: str) -> Any:
    try:
        return document[name]
    except (KeyError, TypeError, IndexError):
        raise FrameError(f"no {name!r} member") from None


@dataclass(frozen=True)
class KlineLayout:
    """Where a candle's fields are in one of an exchange's messages: keys of an object, or
    indices of a row with the row's documented field names (for error messages)."""

    time: str | int
    values: tuple[str | int, ...]  # open, high, low, close, volume, quote volume
    trades: str | int | None = None  # None: the exchange does not count a candle's trades
    labels: tuple[str, ...] = ()

    @functools.cached_property
    def _values(self) -> Callable[[Any], tuple[object, ...]]:
        return operator.itemgetter(*self.values)

    def read(self, exchange: str, symbol: object, source: Any, closed: object) -> KlineUpdate:
        """The candle, if every field is as documented (numbers as numbers or numeric strings,
        the open time and the trade count whole, `closed` a bool); a FrameError naming the first
        field that is not. A valid candle is built with no check per field: the hot path."""
        try:
            time = source[self.time]
            time = int(time) if type(time) is str and time.isdigit() else time
            trades = None if self.trades is None else source[self.trades]
            fast = fast_kline(exchange, symbol, time, self._values(source), trades, closed)
        except (KeyError, IndexError, TypeError):
            fast = None
        return fast or self._checked(exchange, symbol, source, closed)

    def _checked(self, exchange: str, symbol: object, source: Any, closed: object) -> KlineUpdate:
        if not isinstance(closed, bool):
            raise FrameError(f"the closed flag is not true or false: {closed!r}")
        open_time_ms = whole(self._field(source, self.time), self._label(self.time))
        open_, high, low, close, volume, quote_volume = (
            number(self._field(source, key), self._label(key)) for key in self.values
        )
        trades = None if self.trades is None else whole(self._field(source, self.trades), "trades")
        return KlineUpdate(
            exchange,
            canonical_symbol(str(symbol)),
            open_time_ms,
            open_,
            high,
            low,
            close,
            volume,
            quote_volume,
            trades,
            closed,
        )

    def _label(self, key: str | int) -> str:
        return self.labels[key] if isinstance(key, int) else key

    def _field(self, source: Any, key: str | int) -> object:
        try:
            return source[key]
        except (KeyError, IndexError, TypeError):
            raise FrameError(f"no {self._label(key)!r} field") from None


def fast_kline(
    exchange: str,
    symbol: object,
    open_time_ms: object,
    values: tuple[object, ...],
    trades: object,
    closed: object,
) -> KlineUpdate | None:
    """The candle when every value is as documented, without a check per field; None otherwise."""
    if (
        type(open_time_ms) is not int
        or type(closed) is not bool
        or type(symbol) is not str
        or (trades is not None and type(trades) is not int)
        or bool in map(type, values)
    ):
        return None
    try:
        open_, high, low, close, volume, quote_volume = map(float, values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return KlineUpdate(
        exchange,
        canonical_symbol(symbol),
        open_time_ms,
        open_,
        high,
        low,
        close,
        volume,
        quote_volume,
        trades,
        closed,
    )
