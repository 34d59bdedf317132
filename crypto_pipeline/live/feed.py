"""A live feed: keeps the exchange's websocket streams subscribed and sends what they carry to
Kafka (feed_sink.py), so that no closed candle is ever missing.

- Every connect refills over REST the closed candles since the last one Kafka acknowledged (or
  since `since_ms` on a first start), alongside the stream: the overlap is the same candle with
  the same values, which the job keeps once.
- A closed candle that skips intervals makes the feed ask REST for the skipped ones (under a
  zero-volume rule they must exist; under a no-candle rule REST says whether they do).
- A revision of a candle that is already closed is stale and not sent (the closed one is final).
- Disconnects, stalls (no data for `stall_s`), refused handshakes: reconnect with exponential
  backoff and full jitter. A frame the exchange's format does not allow is a dead letter.
- An error the exchange reports (an unknown symbol), a rejected REST request or Kafka not taking
  what was sent stops the feed with a FeedError saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import random
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from crypto_pipeline.live.exchanges.base import Exchange, RestRejected, Stream
from crypto_pipeline.live.feed_sink import FeedError, FeedSink
from crypto_pipeline.live.feed_status import FeedStatus
from crypto_pipeline.live.market import FrameError, KlineUpdate
from crypto_pipeline.live.refill import RestClient, RestUnavailable

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.5
# How long a stopping feed waits for Kafka to take what is buffered (Dagster waits 20 s after
# asking a terminated run's process to stop).
FLUSH_S = 10.0
MAX_BACKOFF_S = 30.0
HEARTBEAT_S = 1.0
# A refill REST did not answer (within the client's patience) is tried again this much later.
REFILL_RETRY_S = 30.0


class Stalled(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class FeedConfig:
    exchange: Exchange
    symbols: tuple[str, ...]  # canonical
    interval: str
    ws_url: str
    rest_url: str
    trades: bool = False
    # No data frame for this long while subscribed: reconnect.
    stall_s: float = 60.0
    # First start (no resume point): refill the closed candles opened since then.
    since_ms: int | None = None
    status_file: Path | None = None
    # Ask REST about every symbol before subscribing (an unknown one stops the feed).
    check_symbols: bool = True


def backoff_s(attempt: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)] (a crowd of reconnecting clients
    spreads out instead of arriving together)."""
    return random.uniform(0, min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2**attempt))


class LiveFeed:
    def __init__(
        self,
        config: FeedConfig,
        sink: FeedSink,
        rest: RestClient,
        resume_from: dict[str, int] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.rest = rest
        self.step_ms = config.exchange.interval_ms(config.interval)
        self.status = FeedStatus(
            config.exchange.name, sink.topic, list(config.symbols), config.interval
        )
        self._resume_from = dict(resume_from or {})
        self._connections = itertools.count(1)
        self._refill_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        # symbol -> the ranges [start, end] (end None: up to the exchange's clock) a refill has yet
        # to send; their starts are resume points, so a restart refills them if this cannot
        self._owed: dict[str, list[tuple[int, int | None]]] = {}
        self._failure: BaseException | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set (then the buffered messages are flushed) or a FeedError."""
        streams = self.config.exchange.streams(
            self.config.ws_url,
            list(self.config.symbols),
            self.config.interval,
            self.config.trades,
        )
        self.status.streams = len(streams)
        if self.config.check_symbols:
            await self._check_symbols()
        tasks = [
            asyncio.create_task(self._keep_connected(s, i == 0, stop))
            for i, s in enumerate(streams)
        ]
        tasks.append(asyncio.create_task(self._heartbeat(stop)))
        try:
            done, _ = await asyncio.wait(
                [*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                task.result()  # a FeedError ends the feed
        except BaseException as error:
            self.status.outcome, self.status.error = "failed", str(error)
            raise
        finally:
            stop.set()
            self.rest.stop()  # refills in threads return at once
            for task in tasks:
                task.cancel()
            for task in self._background:
                task.cancel()
            await asyncio.gather(*tasks, *self._background, return_exceptions=True)
            try:
                await asyncio.to_thread(self.sink.flush, FLUSH_S)
                self.status.outcome = self.status.outcome or "stopped"
            except FeedError as error:
                if self.status.outcome == "failed":  # the first failure says why; add the rest
                    self.status.error = f"{self.status.error}; {error}"
                    raise FeedError(self.status.error) from None
                self.status.outcome, self.status.error = "failed", str(error)
                raise
            finally:
                self._write_status()

    async def _check_symbols(self) -> None:
        try:
            unknown = await asyncio.to_thread(
                self.rest.unknown_symbols, list(self.config.symbols), self.config.interval
            )
        except RestUnavailable as error:
            log.warning("could not check the symbols (%s); subscribing anyway", error)
            return
        if unknown:
            names = ", ".join(unknown)
            raise FeedError(
                f"{self.config.exchange.name} does not list {names}: {next(iter(unknown.values()))}"
            )

    async def _keep_connected(self, stream: Stream, candles: bool, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                received = await self._connection(stream, candles)
                attempt = 0 if received else attempt
            except Stalled:
                self.status.stalls += 1
                log.warning("%s: no data for %.0f s; reconnecting", stream.url, self.config.stall_s)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
                log.warning("%s: %s; reconnecting", stream.url, error or type(error).__name__)
            if stop.is_set():
                return
            self.status.reconnects += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff_s(attempt))
            attempt += 1

    async def _connection(self, stream: Stream, candles: bool) -> bool:
        """One connection, until it closes, stalls or `stop`; whether it received data."""
        async with websockets.connect(
            stream.url, open_timeout=10, close_timeout=2, max_size=2**22, max_queue=1024
        ) as ws:
            connection = f"{self.config.exchange.name}-{next(self._connections)}"
            for subscription in stream.subscriptions:
                await ws.send(subscription)
            self.status.connects += 1
            self.status.connected_streams += 1
            keepalive = self._spawn(self._keepalive(ws))
            if candles:
                # From where, decided now: what arrives from here on is on the websocket. The
                # refill is not the connection's: it goes on if the connection drops.
                resume = self.resume_points()
                starts = {s: resume.get(s, self.config.since_ms) for s in self.config.symbols}
                owed = [(s, start) for s, start in starts.items() if start is not None]
                for symbol, start in owed:
                    self._owed.setdefault(symbol, []).append((start, None))
                if owed:
                    self._spawn(self._refill_on_connect(owed))
            try:
                return await self._receive(ws, connection)
            finally:
                self.status.connected_streams -= 1
                keepalive.cancel()

    async def _receive(self, ws: ClientConnection, connection: str) -> bool:
        """Frames until the connection closes (or the feed is stopped, which cancels this);
        Stalled when no data came for `stall_s`: a watchdog closes the connection then (no timer
        per frame, which would cost more than the frame)."""
        received = stalled = False
        last_data = time.monotonic()

        async def watchdog() -> None:
            nonlocal stalled
            while (idle := time.monotonic() - last_data) < self.config.stall_s:
                await asyncio.sleep(min(1.0, self.config.stall_s - idle))
            stalled = True
            await ws.close(1000, "no data")

        watching = asyncio.create_task(watchdog())
        try:
            async for frame in ws:
                if self._handle(frame if isinstance(frame, str) else frame.decode(), connection):
                    received = True
                    last_data = time.monotonic()
        except websockets.exceptions.ConnectionClosed:
            if not stalled:  # a peer that does not answer our close is still a stall
                raise
        finally:
            watching.cancel()
        if stalled:
            raise Stalled
        return received

    def _handle(self, text: str, connection: str) -> bool:
        """Sends what the frame holds; whether it held data (candles or trades)."""
        now = time.time()
        received_ms = int(now * 1000)
        self.status.last_message_at = now
        exchange = self.config.exchange
        try:
            frame = exchange.parse(text)
        except FrameError as error:
            self.sink.dead_letter(text, f"{exchange.name} frame: {error}", connection, received_ms)
            return False
        if frame.error is not None:
            raise FeedError(f"{exchange.name} reported an error: {frame.error}")
        for kline in frame.klines:
            self._kline(kline, connection, received_ms, text)
        for trade in frame.trades:
            if trade.symbol not in self.config.symbols:
                self.sink.dead_letter(
                    text,
                    f"trade of unsubscribed symbol {trade.symbol}",
                    connection,
                    received_ms,
                    self.sink.trades_topic,
                )
                continue
            self.sink.trade(trade, connection, received_ms, text)
        return bool(frame.klines or frame.trades)

    def _kline(self, kline: KlineUpdate, connection: str, received_ms: int, raw: str) -> None:
        if kline.symbol not in self.config.symbols:
            self.sink.dead_letter(
                raw, f"candle of unsubscribed symbol {kline.symbol}", connection, received_ms
            )
            return
        newest = self.sink.newest_closed_ms(kline.symbol)
        if newest is not None and kline.open_time_ms <= newest and not kline.closed:
            self.sink.counts["stale_revisions"] += 1  # the closed version is final
            return
        self.sink.candle(kline, connection, received_ms, raw)
        if kline.closed and newest is not None and kline.open_time_ms > newest + self.step_ms:
            # Skipped intervals (overlapping a refill under way is harmless: the same candles).
            gap = (newest + self.step_ms, kline.open_time_ms - self.step_ms)
            self._owed.setdefault(kline.symbol, []).append(gap)
            self._spawn(self._refill(kline.symbol, *gap))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task beside the connections; what makes it fail ends the feed (at the next
        heartbeat)."""
        task = asyncio.create_task(work)
        self._background.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                self._failure = self._failure or finished.exception()

        task.add_done_callback(done)
        return task

    async def _refill_on_connect(self, owed: list[tuple[str, int]]) -> None:
        try:
            now_ms = await asyncio.to_thread(self.rest.server_time_ms)
        except RestUnavailable as error:
            log.warning("refill on connect: %s; again in %.0f s", error, REFILL_RETRY_S)
            await asyncio.sleep(REFILL_RETRY_S)
            now_ms = None
        for symbol, start in owed:
            await self._refill(symbol, start, None, now_ms)

    async def _refill(
        self, symbol: str, start_ms: int, end_ms: int | None, now_ms: int | None = None
    ) -> None:
        """Sends the closed candles of [start_ms, end_ms] (end None: up to the exchange's clock,
        `now_ms` if known) and settles that owed range, and those it covers; if REST does not
        answer, tries again REFILL_RETRY_S later (the range stays owed meanwhile)."""
        while True:
            try:
                async with self._refill_lock:
                    candles = await asyncio.to_thread(
                        self.rest.closed_candles,
                        symbol,
                        self.config.interval,
                        start_ms,
                        end_ms,
                        now_ms,
                    )
                break
            except RestUnavailable as error:
                if self.rest.stopped.is_set():
                    return
                log.warning("refill of %s: %s; again in %.0f s", symbol, error, REFILL_RETRY_S)
                await asyncio.sleep(REFILL_RETRY_S)
                now_ms = None
        self.status.refills += 1
        self.status.rest_rate_limited = self.rest.rate_limited
        received_ms = int(time.time() * 1000)
        for candle in candles:
            self.sink.candle(candle, "rest", received_ms, repr(candle), refill=True)
        self._owed[symbol] = [
            (start, end)
            for start, end in self._owed.get(symbol, [])
            if not (start >= start_ms and (end_ms is None or (end is not None and end <= end_ms)))
        ]

    def resume_points(self) -> dict[str, int]:
        """Per symbol, the open time from which a restart must refill."""
        points = {**self._resume_from, **self.sink.resume_points(self.step_ms)}
        for symbol, owed in self._owed.items():
            starts = [start for start, _ in owed] + ([points[symbol]] if symbol in points else [])
            if owed:
                points[symbol] = min(starts)
        return points

    async def _keepalive(self, ws: ClientConnection) -> None:
        frame = self.config.exchange.keepalive_frame
        if frame is None:
            return
        while True:
            await asyncio.sleep(self.config.exchange.keepalive_s)
            try:
                await ws.send(frame)
            except websockets.exceptions.ConnectionClosed:
                return  # the connection's own loop reconnects

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sink.serve_deliveries()
            self._write_status()
            self.sink.check()
            if isinstance(self._failure, FeedError):
                raise self._failure
            if isinstance(self._failure, RestRejected):
                raise FeedError(str(self._failure))
            if self._failure is not None:
                failure = self._failure
                raise FeedError(f"{type(failure).__name__}: {failure}") from failure
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_S)

    def _write_status(self) -> None:
        self.status.counts = dict(self.sink.counts)
        self.status.resume_from = self.resume_points()
        if self.config.status_file is not None:
            self.status.write(self.config.status_file)
