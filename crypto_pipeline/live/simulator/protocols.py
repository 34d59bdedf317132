"""The simulator's side of each exchange's protocol: subscription answers, candle and trade
frames, REST answers and errors, in the formats the adapters (crypto_pipeline/live/exchanges)
read. Numbers are sent as the exchanges send them, as strings, each the shortest text that reads
back as the same float."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from crypto_pipeline.live.exchanges import EXCHANGES
from crypto_pipeline.live.exchanges.base import Exchange
from crypto_pipeline.live.market import canonical_symbol
from crypto_pipeline.live.simulator.simulated_market import SimCandle, SimTrade

KLINES = "klines"
TRADES = "trades"
# (symbol, stream kind) pairs a connection asked for
Subscription = tuple[str, str]
# REST: (status, JSON body, extra headers)
Answer = tuple[int, Any]
# open time range [start, end] and a limit -> the candles in it (open ones not closed yet)
CandleSource = Callable[[str, int, int, int], list[tuple[SimCandle, bool]]]


def text(value: float) -> str:
    return repr(float(value))


class SimProtocol(ABC):
    def __init__(self, exchange: Exchange, known: set[str], interval: str) -> None:
        self.exchange = exchange
        self.known = known  # canonical symbols the simulated exchange lists
        self.interval = exchange.native_interval(interval)  # the one the simulator runs
        self.step_ms = exchange.interval_ms(interval)

    ws_paths: tuple[str, ...]
    rest_prefix: str

    @abstractmethod
    def on_message(self, message: str, connection_id: str) -> tuple[list[Subscription], list[str]]:
        """A client's frame: the subscriptions it adds and the frames to answer with."""

    @abstractmethod
    def kline_frame(self, symbol: str, candle: SimCandle, closed: bool, now_ms: int) -> str: ...

    @abstractmethod
    def trade_frame(self, symbol: str, trades: list[SimTrade], now_ms: int) -> str: ...

    @abstractmethod
    def rest(self, path: str, query: dict[str, str], now_ms: int, candles: CandleSource) -> Answer:
        """A REST request's status and body (404 for a path this exchange does not serve)."""


class BinanceSim(SimProtocol):
    ws_paths = ("/ws",)
    rest_prefix = "/api/v3/"

    def on_message(self, message: str, connection_id: str) -> tuple[list[Subscription], list[str]]:
        request = json.loads(message)
        added: list[Subscription] = []
        for name in request.get("params", []):
            symbol, _, stream = name.partition("@")
            if canonical_symbol(symbol) not in self.known:
                error = {"code": 2, "msg": f"Invalid request: unknown symbol {symbol}"}
                return [], [json.dumps({"error": error, "id": request.get("id")})]
            added.append(
                (canonical_symbol(symbol), KLINES if stream.startswith("kline") else TRADES)
            )
        return added, [json.dumps({"result": None, "id": request.get("id")})]

    def kline_frame(self, symbol: str, candle: SimCandle, closed: bool, now_ms: int) -> str:
        k = {
            "t": candle.open_time_ms,
            "T": candle.open_time_ms + self.step_ms - 1,
            "s": symbol,
            "i": self.interval,
            "o": text(candle.open),
            "c": text(candle.close),
            "h": text(candle.high),
            "l": text(candle.low),
            "v": text(candle.volume),
            "n": candle.trades,
            "x": closed,
            "q": text(candle.quote_volume),
            "V": "0",
            "Q": "0",
            "B": "0",
        }
        return json.dumps({"e": "kline", "E": now_ms, "s": symbol, "k": k})

    def trade_frame(self, symbol: str, trades: list[SimTrade], now_ms: int) -> str:
        t = trades[0]  # Binance sends one trade per frame
        return json.dumps(
            {
                "e": "trade",
                "E": now_ms,
                "s": symbol,
                "t": t.trade_id,
                "p": text(t.price),
                "q": text(t.quantity),
                "T": t.time_ms,
                "m": t.taker_side == "sell",
                "M": True,
            }
        )

    def rest(self, path: str, query: dict[str, str], now_ms: int, candles: CandleSource) -> Answer:
        if path == "/api/v3/time":
            return 200, {"serverTime": now_ms}
        if path != "/api/v3/klines":
            return 404, {"code": -1, "msg": "not found"}
        symbol = query.get("symbol", "")
        if symbol not in self.known:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if query.get("interval") != self.interval:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        limit = int(query.get("limit", 500))
        if limit > 1000:
            return 400, {"code": -1130, "msg": "limit over 1000"}
        start = int(query.get("startTime", 0))
        end = int(query.get("endTime", now_ms))
        step = self.step_ms
        rows = [
            [
                c.open_time_ms,
                text(c.open),
                text(c.high),
                text(c.low),
                text(c.close),
                text(c.volume),
                c.open_time_ms + step - 1,
                text(c.quote_volume),
                c.trades,
                "0",
                "0",
                "0",
            ]
            for c, _ in candles(symbol, start, end, limit)
        ]
        return 200, rows


class BybitSim(SimProtocol):
    ws_paths = ("/v5/public/spot",)
    rest_prefix = "/v5/"

    def on_message(self, message: str, connection_id: str) -> tuple[list[Subscription], list[str]]:
        request = json.loads(message)
        answer = {"success": True, "ret_msg": "", "conn_id": connection_id, "op": request["op"]}
        if request["op"] == "ping":
            return [], [json.dumps(answer | {"ret_msg": "pong"})]
        added: list[Subscription] = []
        for topic in request.get("args", []):
            symbol = topic.split(".")[-1]
            if symbol not in self.known:
                failed = answer | {"success": False, "ret_msg": f"Invalid symbol :[{topic}]"}
                return [], [json.dumps(failed)]
            added.append((symbol, KLINES if topic.startswith("kline.") else TRADES))
        return added, [json.dumps(answer)]

    def kline_frame(self, symbol: str, candle: SimCandle, closed: bool, now_ms: int) -> str:
        item = {
            "start": candle.open_time_ms,
            "end": candle.open_time_ms + self.step_ms - 1,
            "interval": self.interval,
            "open": text(candle.open),
            "close": text(candle.close),
            "high": text(candle.high),
            "low": text(candle.low),
            "volume": text(candle.volume),
            "turnover": text(candle.quote_volume),
            "confirm": closed,
            "timestamp": now_ms,
        }
        topic = f"kline.{self.interval}.{symbol}"
        return json.dumps({"topic": topic, "data": [item], "ts": now_ms, "type": "snapshot"})

    def trade_frame(self, symbol: str, trades: list[SimTrade], now_ms: int) -> str:
        data = [
            {
                "T": t.time_ms,
                "s": symbol,
                "S": t.taker_side.capitalize(),
                "v": text(t.quantity),
                "p": text(t.price),
                "L": "ZeroPlusTick",
                "i": str(t.trade_id),
                "BT": False,
            }
            for t in trades
        ]
        topic = f"publicTrade.{symbol}"
        return json.dumps({"topic": topic, "type": "snapshot", "ts": now_ms, "data": data})

    def rest(self, path: str, query: dict[str, str], now_ms: int, candles: CandleSource) -> Answer:
        ok = {"retCode": 0, "retMsg": "OK", "retExtInfo": {}, "time": now_ms}
        if path == "/v5/market/time":
            return 200, ok | {"result": {"timeSecond": str(now_ms // 1000)}}
        if path != "/v5/market/kline":
            return 404, {"retCode": 404, "retMsg": "not found"}
        symbol = query.get("symbol", "")
        if symbol not in self.known:
            return 200, ok | {"retCode": 10001, "retMsg": "params error: symbol invalid"}
        if query.get("interval") != self.interval:
            return 200, ok | {"retCode": 10001, "retMsg": "params error: interval invalid"}
        start, end = int(query.get("start", 0)), int(query.get("end", now_ms))
        found = candles(symbol, start, end, int(query.get("limit", 200)))
        rows = [
            [
                str(c.open_time_ms),
                text(c.open),
                text(c.high),
                text(c.low),
                text(c.close),
                text(c.volume),
                text(c.quote_volume),
            ]
            for c, _ in reversed(found)  # newest first
        ]
        return 200, ok | {"result": {"category": "spot", "symbol": symbol, "list": rows}}


class OkxSim(SimProtocol):
    ws_paths = ("/ws/v5/business", "/ws/v5/public")
    rest_prefix = "/api/v5/"

    def on_message(self, message: str, connection_id: str) -> tuple[list[Subscription], list[str]]:
        if message == "ping":
            return [], ["pong"]
        request = json.loads(message)
        added: list[Subscription] = []
        answers = []
        for arg in request.get("args", []):
            symbol = canonical_symbol(arg.get("instId", ""))
            if symbol not in self.known:
                channel, inst = arg.get("channel"), arg.get("instId")
                msg = f"Wrong URL or channel:{channel},instId:{inst} doesn't exist."
                return [], [
                    json.dumps(
                        {"event": "error", "code": "60018", "msg": msg, "connId": connection_id}
                    )
                ]
            added.append((symbol, TRADES if arg.get("channel") == "trades" else KLINES))
            answers.append(json.dumps({"event": "subscribe", "arg": arg, "connId": connection_id}))
        return added, answers

    def _row(self, candle: SimCandle, closed: bool) -> list[str]:
        return [
            str(candle.open_time_ms),
            text(candle.open),
            text(candle.high),
            text(candle.low),
            text(candle.close),
            text(candle.volume),
            text(candle.quote_volume),
            text(candle.quote_volume),
            "1" if closed else "0",
        ]

    def kline_frame(self, symbol: str, candle: SimCandle, closed: bool, now_ms: int) -> str:
        arg = {"channel": f"candle{self.interval}", "instId": self.exchange.native_symbol(symbol)}
        return json.dumps({"arg": arg, "data": [self._row(candle, closed)]})

    def trade_frame(self, symbol: str, trades: list[SimTrade], now_ms: int) -> str:
        inst = self.exchange.native_symbol(symbol)
        data = [
            {
                "instId": inst,
                "tradeId": str(t.trade_id),
                "px": text(t.price),
                "sz": text(t.quantity),
                "side": t.taker_side,
                "ts": str(t.time_ms),
                "count": "1",
            }
            for t in trades
        ]
        return json.dumps({"arg": {"channel": "trades", "instId": inst}, "data": data})

    def rest(self, path: str, query: dict[str, str], now_ms: int, candles: CandleSource) -> Answer:
        if path == "/api/v5/public/time":
            return 200, {"code": "0", "msg": "", "data": [{"ts": str(now_ms)}]}
        if path != "/api/v5/market/history-candles":
            return 404, {"code": "404", "msg": "not found", "data": []}
        symbol = canonical_symbol(query.get("instId", ""))
        if symbol not in self.known:
            return 200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
        if query.get("bar") != self.interval:
            return 200, {"code": "51000", "msg": "Parameter bar error", "data": []}
        # `after`: older than; `before`: newer than (both exclusive), newest first.
        end = int(query.get("after", now_ms + 1)) - 1
        start = int(query.get("before", -1)) + 1
        found = candles(symbol, start, end, min(int(query.get("limit", 100)), 100))
        rows = [self._row(c, closed) for c, closed in reversed(found)]
        return 200, {"code": "0", "msg": "", "data": rows}


def protocols(symbols: set[str], interval: str) -> dict[str, SimProtocol]:
    kinds: dict[str, type[SimProtocol]] = {"binance": BinanceSim, "bybit": BybitSim, "okx": OkxSim}
    return {name: kinds[name](EXCHANGES[name], symbols, interval) for name in kinds}
