"""What a live feed sends to Kafka, under the replay's rules: valid candles to the market-data
topic (closed or a revision of an open one), valid trades to the trades topic, everything else to
the dead letters with its reason. Delivery is tracked per closed candle, so the feed knows from
where to refill after a restart, and a delivery that fails stops the feed loudly, naming what was
not sent."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from crypto_pipeline.candle_rules import future_reason, trade_reason, values_reason
from crypto_pipeline.clients import ensure_topic, librdkafka_config
from crypto_pipeline.formats import dead_letter
from crypto_pipeline.formats.candle_message import Candle
from crypto_pipeline.formats.trade_message import Trade
from crypto_pipeline.live.market import KlineUpdate, TradeUpdate
from crypto_pipeline.settings import dead_letter_topic, trades_topic

# Memory the producer (librdkafka) may hold while Kafka is unreachable; when it is full the feed
# stops, naming what it could not send.
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
# Delivery callbacks are served every this many sends (and every heartbeat).
POLL_EVERY = 100


class FeedError(RuntimeError):
    """The feed cannot go on; the message says what was not sent."""


@dataclass
class ClosedProgress:
    """One symbol's closed candles: the newest sent, and those not yet acknowledged."""

    newest_ms: int | None = None
    unacknowledged: set[int] = field(default_factory=set)
    acknowledged_newest_ms: int | None = None

    def resume_from(self, step_ms: int) -> int | None:
        """The open time from which a restart must refill: every older closed candle has been
        acknowledged by Kafka."""
        if self.unacknowledged:
            return min(self.unacknowledged)
        newest = self.acknowledged_newest_ms
        return None if newest is None else newest + step_ms


class FeedSink:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        exchange: str,
        future_tolerance_ms: int,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        partitions: int = 3,
    ) -> None:
        self.topic = topic
        self.trades_topic = trades_topic(topic)
        self.exchange = exchange
        self.future_tolerance_ms = future_tolerance_ms
        for name in (
            topic,
            dead_letter_topic(topic),
            self.trades_topic,
            dead_letter_topic(self.trades_topic),
        ):
            ensure_topic(bootstrap_servers, name, partitions=partitions)
        self.producer = Producer(
            {
                **librdkafka_config(bootstrap_servers),
                "queue.buffering.max.kbytes": max(1, buffer_bytes // 1024),
                "linger.ms": 5,
                # Every delivery reported: closed candles advance the resume points on success.
                "delivery.report.only.error": False,
            }
        )
        self.counts: Counter[str] = Counter()
        self.progress: dict[str, ClosedProgress] = {}
        self._lock = threading.Lock()
        self._failed: list[str] = []
        self._unpolled = 0

    def candle(
        self, update: KlineUpdate, connection: str, received_ms: int, raw: str, refill: bool = False
    ) -> None:
        reason = values_reason(*update[1:10]) or future_reason(
            update.open_time_ms, int(time.time() * 1000), self.future_tolerance_ms
        )
        if reason is not None:
            self.dead_letter(raw, reason, connection, received_ms, self.topic)
            return
        candle = Candle._make(update[1:10])
        value = candle.to_live_json(self.exchange, update.closed, connection, received_ms)
        closed = (update.symbol, update.open_time_ms) if update.closed else None
        self._send(self.topic, update.symbol.encode(), value, closed)
        self.counts["refilled" if refill else "closed" if update.closed else "revisions"] += 1

    def trade(self, update: TradeUpdate, connection: str, received_ms: int, raw: str) -> None:
        reason = trade_reason(
            update.symbol, update.trade_id, update.time_ms, update.price, update.quantity
        )
        reason = reason or future_reason(
            update.time_ms, int(time.time() * 1000), self.future_tolerance_ms
        )
        if reason is not None:
            self.dead_letter(raw, reason, connection, received_ms, self.trades_topic)
            return
        trade = Trade(
            update.exchange,
            update.symbol,
            update.trade_id,
            update.time_ms,
            update.price,
            update.quantity,
            update.taker_side,
        )
        self._send(self.trades_topic, trade.key(), trade.to_live_json(connection, received_ms))
        self.counts["trades"] += 1

    def dead_letter(
        self, raw: str, reason: str, connection: str, received_ms: int, topic: str | None = None
    ) -> None:
        topic = topic or self.topic
        key, value = dead_letter.for_frame(
            raw, reason, self.exchange, connection, received_ms, topic
        )
        self._send(dead_letter_topic(topic), key, value)
        self.counts["dead_letters"] += 1

    def _send(
        self, topic: str, key: bytes, value: bytes, closed: tuple[str, int] | None = None
    ) -> None:
        self.check()
        on_delivery = self._on_delivery
        if closed is not None:
            self._track(*closed)

            def on_delivery(error: KafkaError | None, message: Message) -> None:
                self._on_delivery(error, message)
                if error is None:
                    self._acknowledged(*closed)

        try:
            self.producer.produce(topic, value, key, on_delivery=on_delivery)
        except BufferError:
            # The bounded buffer is full: Kafka has not taken anything for a while. Waiting here
            # would stop the event loop (no pings answered, no heartbeat, no Ctrl-C), so the
            # feed stops; its resume points make a restart refill the candles not sent.
            raise FeedError(
                f"Kafka is not taking messages: {len(self.producer)} buffered (the limit, "
                f"--buffer-mb); {topic} {key.decode()} and everything after it not sent"
            ) from None
        except KafkaException as error:
            raise FeedError(f"Kafka refused a message for {topic}: {error}") from None
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._unpolled = 0
            self.producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            key = (message.key() or b"").decode(errors="replace")
            with self._lock:
                self._failed.append(f"{message.topic()} {key} ({error.str()})")

    def _track(self, symbol: str, open_time_ms: int) -> None:
        with self._lock:
            progress = self.progress.setdefault(symbol, ClosedProgress())
            progress.unacknowledged.add(open_time_ms)
            progress.newest_ms = max(open_time_ms, progress.newest_ms or open_time_ms)

    def _acknowledged(self, symbol: str, open_time_ms: int) -> None:
        with self._lock:
            progress = self.progress[symbol]
            progress.unacknowledged.discard(open_time_ms)
            newest = progress.acknowledged_newest_ms
            progress.acknowledged_newest_ms = max(open_time_ms, newest or open_time_ms)

    def newest_closed_ms(self, symbol: str) -> int | None:
        progress = self.progress.get(symbol)
        return None if progress is None else progress.newest_ms

    def resume_points(self, step_ms: int) -> dict[str, int]:
        with self._lock:
            points = {s: p.resume_from(step_ms) for s, p in self.progress.items()}
        return {symbol: point for symbol, point in points.items() if point is not None}

    def check(self) -> None:
        """FeedError naming what Kafka did not take, if anything."""
        if not self._failed:  # the common case, without the lock (a list's length is atomic)
            return
        with self._lock:
            failed = list(self._failed)
        if failed:
            shown = "; ".join(failed[:5]) + (f"; {len(failed) - 5} more" if len(failed) > 5 else "")
            raise FeedError(f"Kafka did not take {len(failed)} messages: {shown}")

    def flush(self, timeout_s: float = 30) -> None:
        """Waits until Kafka has taken what is buffered; FeedError naming what it did not."""
        left = self.producer.flush(timeout_s)
        self.check()
        if left:
            raise FeedError(f"Kafka did not take {left} buffered messages within {timeout_s:.0f} s")

    def serve_deliveries(self) -> None:
        """Runs the delivery callbacks of what Kafka has acknowledged since the last send."""
        self.producer.poll(0)

    def close(self) -> None:
        self.producer.flush(10)
