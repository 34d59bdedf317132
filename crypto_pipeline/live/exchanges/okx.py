"""OKX v5: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-candlesticks-channel
(candles on /ws/v5/business, trades on /ws/v5/public, "ping" within 30 s) and
.../rest-market-data-get-candlesticks-history (arrays, newest first, at most 100; GET
/api/v5/public/time)."""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import urlencode

from crypto_pipeline.live.exchanges.base import (
    EmptyBuckets,
    Exchange,
    KlineLayout,
    RestRejected,
    Stream,
    load_json,
    member,
)
from crypto_pipeline.live.market import (
    CONTROL,
    Frame,
    FrameError,
    KlineUpdate,
    TradeUpdate,
    canonical_symbol,
    number,
    split_pair,
    whole,
)

RATE_LIMITED = "50011"  # code: too many requests
# A candle, in the websocket's pushes and REST's answers alike (volCcyQuote: the quote volume).
CANDLE = KlineLayout(
    0,
    (1, 2, 3, 4, 5, 7),
    labels=("ts", "o", "h", "l", "c", "vol", "volCcy", "volCcyQuote", "confirm"),
)


class Okx(Exchange):
    name = "okx"
    default_ws_url = "wss://ws.okx.com:8443"
    default_rest_url = "https://www.okx.com"
    # Taken as: no candle for an interval without trades (not verifiable offline; the gap
    # refill asks REST either way, and REST is the authority on what exists).
    empty_buckets = EmptyBuckets.NONE
    rest_page_limit = 100
    # Daily candles on UTC days ("1D" would start at 08:00 in Hong Kong).
    intervals: ClassVar[dict[str, str]] = {
        "1m": "1m",
        "3m": "3m",
        "5m": "5m",
        "15m": "15m",
        "30m": "30m",
        "1h": "1H",
        "4h": "4H",
        "1d": "1Dutc",
    }
    keepalive_frame = "ping"

    def native_symbol(self, symbol: str) -> str:
        return "-".join(split_pair(symbol))

    def streams(self, ws_url: str, symbols: list[str], interval: str, trades: bool) -> list[Stream]:
        base = ws_url.rstrip("/")
        channel = f"candle{self.native_interval(interval)}"
        streams = [Stream(f"{base}/ws/v5/business", (self._subscribe(channel, symbols),))]
        if trades:
            streams.append(Stream(f"{base}/ws/v5/public", (self._subscribe("trades", symbols),)))
        return streams

    def _subscribe(self, channel: str, symbols: list[str]) -> str:
        args = [{"channel": channel, "instId": self.native_symbol(s)} for s in symbols]
        return json.dumps({"op": "subscribe", "args": args})

    def parse(self, text: str) -> Frame:
        if text == "pong":
            return CONTROL
        message = load_json(text)
        if not isinstance(message, dict):
            raise FrameError("not a JSON object")
        if "event" in message:
            if message["event"] == "error":
                return Frame([], [], error=f"{message.get('code')}: {message.get('msg')}")
            return CONTROL
        arg = member(message, "arg")
        channel = str(member(arg, "channel"))
        data = member(message, "data")
        if not isinstance(data, list):
            raise FrameError("data is not a list")
        if channel.startswith("candle"):
            symbol = str(member(arg, "instId"))
            return Frame([self._kline(symbol, row, from_rest=False) for row in data], [])
        if channel == "trades":
            return Frame([], [self._trade(item) for item in data])
        raise FrameError(f"unknown channel {channel!r}")

    def _kline(self, symbol: str, row: Any, from_rest: bool) -> KlineUpdate:
        if not isinstance(row, list) or len(row) < len(CANDLE.labels):
            raise FrameError(f"a candle is not a list of {len(CANDLE.labels)}: {row!r}")
        if row[8] not in ("0", "1"):
            raise FrameError(f"confirm is not '0' or '1': {row[8]!r}")
        return CANDLE.read(self.name, symbol, row, row[8] == "1" and not from_rest)

    def _trade(self, t: Any) -> TradeUpdate:
        side = member(t, "side")
        if side not in ("buy", "sell"):
            raise FrameError(f"side is not buy or sell: {side!r}")
        return TradeUpdate(
            exchange=self.name,
            symbol=canonical_symbol(str(member(t, "instId"))),
            trade_id=str(member(t, "tradeId")),
            time_ms=whole(member(t, "ts"), "ts"),
            price=number(member(t, "px"), "px"),
            quantity=number(member(t, "sz"), "sz"),
            taker_side=side,
        )

    def server_time_url(self, rest_url: str) -> str:
        return f"{rest_url.rstrip('/')}/api/v5/public/time"

    def parse_server_time(self, body: bytes) -> int:
        data = self._data_of(body, "time")
        if not data:
            raise FrameError("no time in the answer")
        return whole(member(data[0], "ts"), "ts")

    def klines_url(
        self, rest_url: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> str:
        # `after`: older than; `before`: newer than (both exclusive).
        query = {
            "instId": self.native_symbol(symbol),
            "bar": self.native_interval(interval),
            "after": end_ms + 1,
            "before": start_ms - 1,
            "limit": self.rest_page_limit,
        }
        return f"{rest_url.rstrip('/')}/api/v5/market/history-candles?{urlencode(query)}"

    def parse_klines(self, symbol: str, body: bytes) -> list[KlineUpdate]:
        return [self._kline(symbol, row, from_rest=True) for row in self._data_of(body, "candles")]

    def _data_of(self, body: bytes, what: str) -> list[Any]:
        answer = load_json(body)
        code = str(member(answer, "code"))
        if code != "0":
            message = f"okx {what}: code {code}: {answer.get('msg')}"
            raise RestRejected(message, retry_after_s=1.0 if code == RATE_LIMITED else None)
        data = member(answer, "data")
        if not isinstance(data, list):
            raise FrameError("data is not a list")
        return data
