"""Binance spot: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
(kline and trade streams, SUBSCRIBE, a disconnect every 24 h) and .../rest-api (GET
/api/v3/klines: arrays, oldest first, at most 1000; GET /api/v3/time)."""

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

STREAMS_PER_SUBSCRIBE = 200
STREAM_KLINE = KlineLayout("t", ("o", "h", "l", "c", "v", "q"), "n")
REST_LABELS = (
    "open time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close time",
    "quote volume",
    "trades",
)
REST_KLINE = KlineLayout(0, (1, 2, 3, 4, 5, 7), 8, REST_LABELS)


class Binance(Exchange):
    name = "binance"
    default_ws_url = "wss://stream.binance.com:9443"
    default_rest_url = "https://api.binance.com"
    # Binance closes a kline for every interval, with volume 0 when nothing traded.
    empty_buckets = EmptyBuckets.ZERO_VOLUME
    rest_page_limit = 1000
    intervals: ClassVar[dict[str, str]] = {
        name: name for name in ("1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d")
    }

    def native_symbol(self, symbol: str) -> str:
        return canonical_symbol(symbol)

    def streams(self, ws_url: str, symbols: list[str], interval: str, trades: bool) -> list[Stream]:
        names = [f"{s.lower()}@kline_{self.native_interval(interval)}" for s in symbols]
        names += [f"{s.lower()}@trade" for s in symbols] if trades else []
        frames = tuple(
            json.dumps(
                {
                    "method": "SUBSCRIBE",
                    "params": names[i : i + STREAMS_PER_SUBSCRIBE],
                    "id": i // STREAMS_PER_SUBSCRIBE + 1,
                }
            )
            for i in range(0, len(names), STREAMS_PER_SUBSCRIBE)
        )
        return [Stream(f"{ws_url.rstrip('/')}/ws", frames)]

    def parse(self, text: str) -> Frame:
        event = load_json(text)
        if isinstance(event, dict) and "stream" in event and "data" in event:
            event = event["data"]  # a combined stream's envelope
        if not isinstance(event, dict):
            raise FrameError("not a JSON object")
        if "error" in event or "code" in event:
            error = event.get("error", event)
            if not isinstance(error, dict):
                return Frame([], [], error=str(error))
            return Frame([], [], error=f"{error.get('code')}: {error.get('msg')}")
        if "result" in event and "id" in event:
            return CONTROL  # a SUBSCRIBE answer
        kind = member(event, "e")
        if kind == "kline":
            return Frame([self._kline(member(event, "k"))], [])
        if kind == "trade":
            return Frame([], [self._trade(event)])
        raise FrameError(f"unknown event type {kind!r}")

    def _kline(self, k: Any) -> KlineUpdate:
        return STREAM_KLINE.read(self.name, member(k, "s"), k, member(k, "x"))

    def _trade(self, t: dict[str, Any]) -> TradeUpdate:
        buyer_is_maker = member(t, "m")
        return TradeUpdate(
            exchange=self.name,
            symbol=canonical_symbol(str(member(t, "s"))),
            trade_id=str(whole(member(t, "t"), "t")),
            time_ms=whole(member(t, "T"), "T"),
            price=number(member(t, "p"), "p"),
            quantity=number(member(t, "q"), "q"),
            taker_side="sell" if buyer_is_maker else "buy",
        )

    def server_time_url(self, rest_url: str) -> str:
        return f"{rest_url.rstrip('/')}/api/v3/time"

    def parse_server_time(self, body: bytes) -> int:
        return whole(member(load_json(body), "serverTime"), "serverTime")

    def klines_url(
        self, rest_url: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> str:
        query = {
            "symbol": self.native_symbol(symbol),
            "interval": self.native_interval(interval),
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": self.rest_page_limit,
        }
        return f"{rest_url.rstrip('/')}/api/v3/klines?{urlencode(query)}"

    def parse_klines(self, symbol: str, body: bytes) -> list[KlineUpdate]:
        rows = load_json(body)
        if isinstance(rows, dict):
            raise RestRejected(f"binance: {rows.get('code')}: {rows.get('msg')}")
        if not isinstance(rows, list):
            raise FrameError("klines are not a list")
        return [self._rest_kline(symbol, row) for row in rows]

    def _rest_kline(self, symbol: str, row: Any) -> KlineUpdate:
        if not isinstance(row, list):
            raise FrameError(f"a kline row is not a list: {row!r}")
        return REST_KLINE.read(self.name, symbol, row, False)
