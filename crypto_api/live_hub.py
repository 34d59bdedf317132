"""The live push: every window update in the candles topics, fanned out to the WebSocket clients
that follow its series and window length.

One Kafka consumer (a thread) reads the candles topics from their end (a topic created later, from
its beginning: all of it is new) and hands each poll's updates to the event loop. Each client has
a bounded queue: a client whose queue is full, or whose send stalls for SEND_TIMEOUT_S, is dropped
(its connection closed with 1013, "try again later"), so a slow client never grows the server's
memory nor holds back the others."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from crypto_api.candle_store import candle, is_closed
from crypto_pipeline.clients import KAFKA_BOOTSTRAP_TIMEOUT_MS
from crypto_pipeline.formats import candle_update
from crypto_pipeline.formats.window_values import epoch_ms, series_key

log = logging.getLogger(__name__)

QUEUE_SIZE = 5_000  # updates waiting for one client, at most (a few MB)
MAX_CLIENTS = 10_000  # with QUEUE_SIZE, what bounds the server's memory
POLL_RECORDS = 1_000  # updates handed to the event loop at once, at most
SEND_TIMEOUT_S = 5.0
POLL_MS = 100
REFRESH_TOPICS_S = 2.0
RETRY_S = 5.0

# (source, series, window label): what a client follows.
Follow = tuple[str, str, str]


@dataclass(eq=False)
class Subscriber:
    follows: Follow
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: str | None = None  # why, once dropped
    # The task sending to the client, and the loop time its current send began (None between
    # sends): the watchdog cancels a send that stalls, without a timer per message.
    sender: asyncio.Task[Any] | None = None
    sending_since: float | None = None

    def drop(self, reason: str) -> None:
        """Empty the queue and leave the end-of-stream marker: the sender closes."""
        if self.dropped is None:
            self.dropped = reason
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class LiveHub:
    def __init__(
        self,
        bootstrap_servers: str,
        topics: Mapping[str, str],
        watermark_ms: Callable[[str], int],
    ) -> None:
        """`topics`: source name -> its candles topic; `watermark_ms(source)`: its job's
        allowed delay (the closed flag)."""
        self.bootstrap_servers = bootstrap_servers
        self.sources = {topic: source for source, topic in topics.items()}
        self.watermark_ms = watermark_ms
        self.subscribers: dict[Follow, set[Subscriber]] = defaultdict(set)
        self.newest: dict[tuple[str, str], int] = {}  # (source, series) -> newest event ms
        self.counts = {"updates": 0, "dropped_clients": 0, "unreadable_updates": 0}
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: str | None = None
        self.watchdog: asyncio.Task[None]

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.watchdog = self.loop.create_task(self._drop_stalled())
        self.thread = threading.Thread(target=self._consume, name="live-hub", daemon=True)
        self.thread.start()

    async def stop(self) -> None:
        """Off the event loop: the consumer thread may be handing it a poll."""
        self.stopping.set()
        self.watchdog.cancel()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 10)

    def clients(self) -> int:
        return sum(len(followers) for followers in list(self.subscribers.values()))

    def full(self) -> bool:
        return self.clients() >= MAX_CLIENTS

    async def _drop_stalled(self) -> None:
        """Every second: drop the clients whose send has waited SEND_TIMEOUT_S."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1)
            late = loop.time() - SEND_TIMEOUT_S
            for followers in list(self.subscribers.values()):
                for subscriber in list(followers):
                    since = subscriber.sending_since
                    if since is not None and since < late:
                        self.drop(subscriber, f"a send stalled for {SEND_TIMEOUT_S:.0f} s")

    async def push(self, send: Callable[[str], Awaitable[None]], subscriber: Subscriber) -> None:
        """Send the subscriber's updates until it is dropped (the caller closes the connection)
        or leaves (`send` raises); runs as the subscriber's sender."""
        loop = asyncio.get_running_loop()
        subscriber.sender = asyncio.current_task()
        try:
            while (payload := await subscriber.queue.get()) is not None:
                subscriber.sending_since = loop.time()
                await send(payload)
                subscriber.sending_since = None
        except asyncio.CancelledError:
            if subscriber.dropped is None:  # not the watchdog: the server is stopping
                raise
        finally:
            subscriber.sending_since = None

    def subscribe(self, follows: Follow) -> Subscriber:
        subscriber = Subscriber(follows)
        self.subscribers[follows].add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        followers = self.subscribers.get(subscriber.follows)
        if followers is not None:
            followers.discard(subscriber)
            if not followers:
                del self.subscribers[subscriber.follows]

    def status(self) -> dict[str, Any]:
        return {"clients": self.clients(), **self.counts, "error": self.error}

    async def _publish(self, updates: list[tuple[Follow, str]]) -> None:
        """In the event loop: each update into its followers' queues."""
        self.counts["updates"] += len(updates)
        for follows, payload in updates:
            for subscriber in self.subscribers.get(follows, ()):
                if subscriber.dropped is not None:
                    continue
                try:
                    subscriber.queue.put_nowait(payload)
                except asyncio.QueueFull:
                    self.drop(subscriber, f"too slow: {QUEUE_SIZE} updates waiting")

    def drop(self, subscriber: Subscriber, reason: str) -> None:
        """A client too slow to keep: its updates discarded, its connection closed."""
        if subscriber.dropped is None:
            subscriber.drop(reason)
            self.counts["dropped_clients"] += 1
            log.warning("live push: dropped a client of %s (%s)", subscriber.follows, reason)
            if subscriber.sending_since is not None and subscriber.sender is not None:
                subscriber.sender.cancel()  # its send waits on the client: end it

    def _updates(self, batches: Mapping[Any, list[Any]]) -> list[tuple[Follow, str]]:
        """A poll's records as (what they update, the JSON pushed); an unreadable record is
        counted (/api/health) and skipped."""
        watermarks = {source: self.watermark_ms(source) for source in set(self.sources.values())}
        updates = []
        for partition, records in batches.items():
            source = self.sources[partition.topic]
            for record in records:
                try:
                    updates.append(self._update(source, record.value, record.timestamp, watermarks))
                except (ValueError, KeyError, TypeError):
                    self.counts["unreadable_updates"] += 1
        return updates

    def _update(
        self, source: str, value: bytes, published_ms: int, watermarks: Mapping[str, int]
    ) -> tuple[Follow, str]:
        document = candle_update.decode(value)
        series = series_key(document["exchange"], document["symbol"])
        last = document.get("last_event_ms")
        newest = max(self.newest.get((source, series), -1), int(last or -1))
        self.newest[(source, series)] = newest
        closed = is_closed(epoch_ms(document["window_end"]), newest, watermarks[source])
        shown = {**candle(document, closed), "source": source, "published_ms": published_ms}
        return (source, series, document["window"]), json.dumps(shown)

    def _consume(self) -> None:
        """Until stopped: the candles topics' new updates to the event loop. Kafka out of reach
        is reported (/api/health) and retried; updates written meanwhile are not pushed (a client
        reads them back with GET /api/candles)."""
        while not self.stopping.is_set():
            try:
                self._follow_topics()
            except Exception as error:  # reported by /api/health; reads keep being served
                self.error = f"{type(error).__name__}: {error}"
                log.warning("live push: %s; retrying in %.0f s", self.error, RETRY_S)
                self.stopping.wait(RETRY_S)

    def _follow_topics(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            bootstrap_timeout_ms=KAFKA_BOOTSTRAP_TIMEOUT_MS,
            enable_auto_commit=False,
        )
        assigned: set[TopicPartition] = set()
        first_look, looked_at = True, 0.0
        try:
            while not self.stopping.is_set():
                if time.monotonic() - looked_at > REFRESH_TOPICS_S:
                    looked_at = time.monotonic()
                    found = {
                        TopicPartition(topic, partition)
                        for topic in self.sources
                        for partition in consumer.partitions_for_topic(topic) or ()
                    }
                    if found - assigned:
                        new, assigned = found - assigned, assigned | found
                        consumer.assign(sorted(assigned))
                        (consumer.seek_to_end if first_look else consumer.seek_to_beginning)(*new)
                    first_look = False
                if not assigned:
                    self.stopping.wait(REFRESH_TOPICS_S)
                    continue
                batches = consumer.poll(timeout_ms=POLL_MS, max_records=POLL_RECORDS)
                updates = self._updates(batches) if batches else []
                if updates and self.loop is not None:
                    # Waits until the loop has queued them: the thread never runs ahead of it.
                    handed = asyncio.run_coroutine_threadsafe(self._publish(updates), self.loop)
                    while not self.stopping.is_set():
                        try:
                            handed.result(timeout=1)
                            break
                        except TimeoutError:
                            continue
                self.error = None
        finally:
            consumer.close()
