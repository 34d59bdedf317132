"""Bybit v5 spot: https://bybit-exchange.github.io/docs/v5/websocket/public/kline (topics
kline.{interval}.{symbol} and publicTrade.{symbol}, at most 10 per subscribe, {"op":"ping"}
every 20 s) and .../v5/market/kline (arrays, newest first, at most 1000; GET /v5/market/time)."""

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
    whole,
)

TOPICS_PER_SUBSCRIBE = 10
RATE_LIMITED = 10006  # retCode: too many visits
VALUES = ("open", "high", "low", "close", "volume", "turnover")
STREAM_KLINE = KlineLayout("start", VALUES)
REST_KLINE = KlineLayout(0, (1, 2, 3, 4, 5, 6), labels=("start time", *VALUES))


class Bybit(Exchange):
    name = "bybit"
    default_ws_url = "wss://stream.bybit.com"
    default_rest_url = "https://api.bybit.com"
    # Bybit's kline series has every interval; one without trades has volume 0.
    empty_buckets = EmptyBuckets.ZERO_VOLUME
    rest_page_limit = 1000
    intervals: ClassVar[dict[str, str]] = {
        "1m": "1",
        "3m": "3",
        "5m": "5",
        "15m": "15",
        "30m": "30",
        "1h": "60",
        "4h": "240",
        "1d": "D",
    }
    keepalive_frame = json.dumps({"op": "ping"})

    def native_symbol(self, symbol: str) -> str:
        return canonical_symbol(symbol)

    def streams(self, ws_url: str, symbols: list[str], interval: str, trades: bool) -> list[Stream]:
        topics = [f"kline.{self.native_interval(interval)}.{s}" for s in symbols]
        topics += [f"publicTrade.{s}" for s in symbols] if trades else []
        frames = tuple(
            json.dumps({"op": "subscribe", "args": topics[i : i + TOPICS_PER_SUBSCRIBE]})
            for i in range(0, len(topics), TOPICS_PER_SUBSCRIBE)
        )
        return [Stream(f"{ws_url.rstrip('/')}/v5/public/spot", frames)]

    def parse(self, text: str) -> Frame:
        message = load_json(text)
        if not isinstance(message, dict):
            raise FrameError("not a JSON object")
        if "op" in message:  # answers to subscribe and ping
            if message.get("success") is False:
                return Frame([], [], error=str(message.get("ret_msg")))
            return CONTROL
        topic = str(member(message, "topic"))
        data = member(message, "data")
        if not isinstance(data, list):
            raise FrameError("data is not a list")
        if topic.startswith("kline."):
            return Frame([self._kline(topic.split(".")[-1], item) for item in data], [])
        if topic.startswith("publicTrade."):
            return Frame([], [self._trade(item) for item in data])
        raise FrameError(f"unknown topic {topic!r}")

    def _kline(self, symbol: str, k: Any) -> KlineUpdate:
        return STREAM_KLINE.read(self.name, symbol, k, member(k, "confirm"))

    def _trade(self, t: Any) -> TradeUpdate:
        side = str(member(t, "S")).lower()
        if side not in ("buy", "sell"):
            raise FrameError(f"S is not Buy or Sell: {side!r}")
        return TradeUpdate(
            exchange=self.name,
            symbol=canonical_symbol(str(member(t, "s"))),
            trade_id=str(member(t, "i")),
            time_ms=whole(member(t, "T"), "T"),
            price=number(member(t, "p"), "p"),
            quantity=number(member(t, "v"), "v"),
            taker_side=side,
        )

    def server_time_url(self, rest_url: str) -> str:
        return f"{rest_url.rstrip('/')}/v5/market/time"

    def parse_server_time(self, body: bytes) -> int:
        return whole(member(self._result_of(body, "time"), "time"), "time")

    def klines_url(
        self, rest_url: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> str:
        query = {
            "category": "spot",
            "symbol": self.native_symbol(symbol),
            "interval": self.native_interval(interval),
            "start": start_ms,
            "end": end_ms,
            "limit": self.rest_page_limit,
        }
        return f"{rest_url.rstrip('/')}/v5/market/kline?{urlencode(query)}"

    def parse_klines(self, symbol: str, body: bytes) -> list[KlineUpdate]:
        rows = member(member(self._result_of(body, "kline"), "result"), "list")
        if not isinstance(rows, list):
            raise FrameError("result.list is not a list")
        return [self._rest_kline(symbol, row) for row in rows]

    def _result_of(self, body: bytes, what: str) -> dict[str, Any]:
        answer = load_json(body)
        code = member(answer, "retCode")
        if code != 0:
            message = f"bybit {what}: retCode {code}: {answer.get('retMsg')}"
            raise RestRejected(message, retry_after_s=1.0 if code == RATE_LIMITED else None)
        result: dict[str, Any] = answer
        return result

    def _rest_kline(self, symbol: str, row: Any) -> KlineUpdate:
        if not isinstance(row, list):
            raise FrameError(f"a kline row is not a list: {row!r}")
        return REST_KLINE.read(self.name, symbol, row, False)
