"""The simulated exchange's server: every supported exchange's websocket and REST API on one
port, the market on an accelerated clock, faults injected through GET /sim/fault, and the truth
(every candle the exchange has closed) at GET /sim/truth.

Faults (`/sim/fault?exchange=NAME&kind=KIND[&count=N][&seconds=S][&symbol=S]`):
  drop        every connection of the exchange ends without a close frame (code 1006)
  disconnect  every connection gets a close frame 1001, as a scheduled disconnect does
  stall       data frames stop for `seconds`; the connection stays open (pings answered)
  duplicate   the next `count` data frames are sent twice
  reorder     the next `count` pairs of data frames are sent in the wrong order
  skip        the next `count` closed candles are not sent on the websocket (REST has them)
  lose        the next `count` candles of `symbol` are lost: neither websocket nor REST has them
  rate-limit  the next `count` REST requests get 429 with Retry-After: 1
  malformed   `count` frames that no format allows are sent
  stale       the next `count` closed candles are each followed by an older, open version of it
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from crypto_pipeline.live.exchanges import EXCHANGES
from crypto_pipeline.live.simulator.protocols import KLINES, SimProtocol, Subscription, protocols
from crypto_pipeline.live.simulator.simulated_market import SimCandle, SimClock, SymbolSeries

log = logging.getLogger(__name__)

FAULTS = (
    "drop",
    "disconnect",
    "stall",
    "duplicate",
    "reorder",
    "skip",
    "lose",
    "rate-limit",
    "malformed",
    "stale",
)
MALFORMED_FRAMES = ('{"e":"kline","k":', "not json at all", '{"topic":42}', "[1,2,3]")


@dataclass
class Faults:
    stall_until: float = 0.0  # monotonic
    duplicate: int = 0
    reorder: int = 0
    skip: int = 0
    rate_limit: int = 0
    malformed: int = 0
    stale: int = 0
    lost: set[tuple[str, int]] = field(default_factory=set)  # (symbol, open time)


class ExchangeSimulator:
    def __init__(
        self,
        symbols: list[str],
        interval: str = "1m",
        speed: float = 1.0,
        start_ms: int | None = None,
        seed: int = 7,
        disconnect_every_s: float | None = None,
        push_every_s: float = 0.2,
        history_minutes: int = 0,
    ) -> None:
        self.protocols = protocols(set(symbols), interval)
        self.step_ms = EXCHANGES["binance"].interval_ms(interval)
        now_ms = int(time.time() * 1000)
        # The clock starts far enough in the past that an hour of running at `speed` never
        # reaches the wall clock (the candle rules reject candles from the future); the market
        # starts `history_minutes` before it.
        start = now_ms - int(max(0.0, speed - 1) * 3_600_000) if start_ms is None else start_ms
        self.clock = SimClock(start, speed)
        self.first_ms = (start - history_minutes * 60_000) // self.step_ms * self.step_ms
        self.series = {
            (name, symbol): SymbolSeries(
                f"{seed}:{name}:{symbol}",
                self.first_ms,
                self.step_ms,
                EXCHANGES[name].empty_buckets,
            )
            for name in self.protocols
            for symbol in symbols
        }
        self.faults = {name: Faults() for name in self.protocols}
        self.connections: dict[str, set[ServerConnection]] = {n: set() for n in self.protocols}
        self.ws_paths = {path: n for n, p in self.protocols.items() for path in p.ws_paths}
        self.disconnect_every_s = disconnect_every_s
        self.push_every_s = push_every_s
        self._ids = itertools.count(1)

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> Server:
        return await serve(
            self._connection,
            host,
            port,
            process_request=self._http,
            ping_interval=20,
            max_queue=64,
        )

    # The market, as each exchange shows it

    def candle(
        self, exchange: str, symbol: str, open_time_ms: int, now_ms: int
    ) -> SimCandle | None:
        """The candle as the exchange has it at `now_ms` (None: lost, or none under its rule)."""
        if (symbol, open_time_ms) in self.faults[exchange].lost:
            return None
        until = now_ms if open_time_ms + self.step_ms > now_ms else None
        return self.series[exchange, symbol].candle(open_time_ms, until)

    def rest_candles(
        self, exchange: str, symbol: str, start_ms: int, end_ms: int, limit: int, now_ms: int
    ) -> list[tuple[SimCandle, bool]]:
        found = []
        for t in self._open_times(max(start_ms, self.first_ms), min(end_ms, now_ms)):
            candle = self.candle(exchange, symbol, t, now_ms)
            if candle is not None:
                found.append((candle, t + self.step_ms <= now_ms))
            if len(found) == limit:
                break
        return found

    def _open_times(self, start_ms: int, end_ms: int) -> Iterator[int]:
        first = -(-start_ms // self.step_ms) * self.step_ms
        return iter(range(first, end_ms + 1, self.step_ms))

    def truth(self, exchange: str, symbol: str) -> dict[str, Any]:
        """Every candle the exchange has closed, and those lost (on no interface)."""
        now = self.clock.now_ms()
        last_closed = now // self.step_ms * self.step_ms - self.step_ms
        closed = []
        for t in self._open_times(self.first_ms, last_closed):
            candle = self.candle(exchange, symbol, t, now)
            if candle is not None:
                closed.append(list(vars(candle).values()))
        lost = sorted(t for s, t in self.faults[exchange].lost if s == symbol)
        return {"now_ms": now, "interval_ms": self.step_ms, "closed": closed, "lost": lost}

    # Websocket connections

    async def _connection(self, ws: ServerConnection) -> None:
        exchange = self.ws_paths.get(urlsplit(ws.request.path if ws.request else "").path)
        if exchange is None:
            await ws.close(1008, "unknown path")
            return
        protocol = self.protocols[exchange]
        connection_id = f"sim-{next(self._ids)}"
        subscriptions: set[Subscription] = set()
        self.connections[exchange].add(ws)
        pusher = asyncio.create_task(self._push(ws, exchange, protocol, subscriptions))
        try:
            async for message in ws:
                try:
                    added, answers = protocol.on_message(str(message), connection_id)
                except (ValueError, KeyError, AttributeError, TypeError):
                    added, answers = [], [json.dumps({"error": "bad request"})]
                subscriptions.update(added)
                for answer in answers:
                    await ws.send(answer)
        except ConnectionClosed:
            pass
        finally:
            self.connections[exchange].discard(ws)
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await pusher

    async def _push(
        self,
        ws: ServerConnection,
        exchange: str,
        protocol: SimProtocol,
        subscriptions: set[Subscription],
    ) -> None:
        faults = self.faults[exchange]
        opened = time.monotonic()
        sent_closed: dict[str, int] = {}  # symbol -> the newest interval whose close was due
        last_revision: dict[str, SimCandle] = {}
        trades_until: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.push_every_s)
            if self.disconnect_every_s and time.monotonic() - opened > self.disconnect_every_s:
                await ws.close(1001, "scheduled disconnect")
                return
            now = self.clock.now_ms()
            current = now // self.step_ms * self.step_ms
            frames: list[str] = []
            for symbol, kind in sorted(subscriptions):
                if kind == KLINES:
                    last = sent_closed.setdefault(symbol, current - self.step_ms)
                    for t in range(last + self.step_ms, current, self.step_ms):
                        candle = self.candle(exchange, symbol, t, now)
                        if candle is not None and not self._take(faults, "skip"):
                            frames.append(protocol.kline_frame(symbol, candle, True, now))
                            if self._take(faults, "stale"):  # a revision from before the close
                                frames.append(protocol.kline_frame(symbol, candle, False, now))
                    sent_closed[symbol] = current - self.step_ms
                    revision = self.candle(exchange, symbol, current, now)
                    if revision and revision.trades and revision != last_revision.get(symbol):
                        frames.append(protocol.kline_frame(symbol, revision, False, now))
                        last_revision[symbol] = revision
                else:
                    frames += self._trade_frames(exchange, protocol, symbol, now, trades_until)
            if time.monotonic() < faults.stall_until:
                continue  # the frames due are never sent on this connection
            await self._send(ws, frames, faults)

    def _trade_frames(
        self, exchange: str, protocol: SimProtocol, symbol: str, now: int, until: dict[str, int]
    ) -> list[str]:
        since = until.setdefault(symbol, now)
        series = self.series[exchange, symbol]
        trades = [
            trade
            for t in self._open_times(max(since - self.step_ms, self.first_ms), now)
            for trade in series.trades(t)
            if since < trade.time_ms <= now
        ]
        until[symbol] = now
        if not trades:
            return []
        if exchange == "binance":  # one trade per frame
            return [protocol.trade_frame(symbol, [trade], now) for trade in trades]
        return [protocol.trade_frame(symbol, trades, now)]

    async def _send(self, ws: ServerConnection, frames: list[str], faults: Faults) -> None:
        for bad in MALFORMED_FRAMES:
            if self._take(faults, "malformed"):
                frames.insert(0, bad)
        if len(frames) >= 2 and self._take(faults, "reorder"):
            frames[0], frames[1] = frames[1], frames[0]
        for frame in frames:
            await ws.send(frame)
            if self._take(faults, "duplicate"):
                await ws.send(frame)

    @staticmethod
    def _take(faults: Faults, kind: str) -> bool:
        """Whether a counted fault of `kind` is pending (and one less is, after this)."""
        attribute = kind.replace("-", "_")
        pending: int = getattr(faults, attribute)
        if pending > 0:
            setattr(faults, attribute, pending - 1)
        return pending > 0

    # HTTP: the exchanges' REST APIs and the simulator's own endpoints

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path in self.ws_paths:
            return None  # a websocket handshake
        query = dict(parse_qsl(parts.query))
        try:
            if parts.path.startswith("/sim/"):
                return _json(connection, 200, self._control(parts.path, query))
            for name, protocol in self.protocols.items():
                if parts.path.startswith(protocol.rest_prefix):
                    return self._rest(connection, name, protocol, parts.path, query)
        except (ValueError, KeyError) as error:
            return _json(connection, 400, {"error": f"bad request: {error}"})
        return _json(connection, 404, {"error": "not found"})

    def _rest(
        self,
        connection: ServerConnection,
        exchange: str,
        protocol: SimProtocol,
        path: str,
        query: dict[str, str],
    ) -> Response:
        if self._take(self.faults[exchange], "rate-limit"):
            response = _json(connection, 429, {"code": 429, "msg": "Too many requests"})
            response.headers["Retry-After"] = "1"
            return response
        now = self.clock.now_ms()

        def candles(symbol: str, start: int, end: int, limit: int) -> list[tuple[SimCandle, bool]]:
            return self.rest_candles(exchange, symbol, start, end, limit, now)

        status, body = protocol.rest(path, query, now, candles)
        return _json(connection, status, body)

    def _control(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/sim/clock":
            return {"now_ms": self.clock.now_ms(), "interval_ms": self.step_ms}
        if path == "/sim/truth":
            return self.truth(query["exchange"], query["symbol"])
        if path == "/sim/fault":
            self.inject(
                query["exchange"],
                query["kind"],
                int(query.get("count", 1)),
                float(query.get("seconds", 0)),
                query.get("symbol"),
            )
            return {"injected": query["kind"]}
        raise KeyError(path)

    def inject(
        self,
        exchange: str,
        kind: str,
        count: int = 1,
        seconds: float = 0.0,
        symbol: str | None = None,
    ) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose from {', '.join(FAULTS)}")
        faults = self.faults[exchange]
        if kind in ("drop", "disconnect"):
            for ws in list(self.connections[exchange]):
                if kind == "drop":
                    ws.transport.abort()  # no close frame: the client sees 1006
                else:
                    asyncio.get_running_loop().create_task(ws.close(1001, "scheduled disconnect"))
        elif kind == "stall":
            faults.stall_until = time.monotonic() + seconds
        elif kind == "lose":
            if symbol is None:
                raise KeyError("symbol")
            current = self.clock.now_ms() // self.step_ms * self.step_ms
            faults.lost |= {(symbol, current + i * self.step_ms) for i in range(1, count + 1)}
        else:
            attribute = kind.replace("-", "_")
            setattr(faults, attribute, getattr(faults, attribute) + count)


def _json(connection: ServerConnection, status: int, body: Any) -> Response:
    response = connection.respond(status, json.dumps(body))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
