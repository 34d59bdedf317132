"""Replay a market-data CSV into Kafka as if it were live.

One message per row, value = compact JSON: a candle file's rows go to the topic keyed by symbol
(one partition per symbol keeps its order), a trade file's to `<topic>.trades` keyed by exchange,
symbol and trade id. Bad rows go to the dead-letter topic of the topic their file's records go
to, with the raw line, file, line number and reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.partitioner.default import murmur2

from crypto_pipeline.candle_rules import DEFAULT_FUTURE_TOLERANCE_S, future_reason, reason_kind
from crypto_pipeline.clients import (
    DELIVERY_TIMEOUT_S,
    end_offsets,
    ensure_topic,
    kafka_producer,
)
from crypto_pipeline.formats import dead_letter as dead_letter_format
from crypto_pipeline.formats.candle_message import file_lineage
from crypto_pipeline.replay.input_files import (
    InputFormatError,
    ParsedLine,
    RecordKind,
    file_format,
    read_rows,
    scan_file,
)
from crypto_pipeline.replay.pacing import Pacer, Span, wait_for_clock
from crypto_pipeline.replay.progress_meter import Progress
from crypto_pipeline.replay.resume import LinesSent
from crypto_pipeline.settings import dead_letter_topic, trades_topic

log = logging.getLogger(__name__)


ENGINES = ("auto", "bulk", "paced")


class ReplayError(RuntimeError):
    """The replay cannot run (bad file, Kafka unreachable, delivery failed)."""


@dataclass(frozen=True)
class ReplayOptions:
    path: Path
    topic: str
    # Event-time speed-up: 1.0 keeps the real spacing, None sends as fast as the broker accepts.
    speed: float | None = None
    symbols: frozenset[str] | None = None
    start_ms: int | None = None  # inclusive, source event time
    end_ms: int | None = None  # exclusive, source event time
    limit: int | None = None
    loop: bool = False
    rebase_now: bool = False
    partitions: int = 3
    retention_ms: int | None = None
    # Skip the lines of this file (its path as given and its content) already in the topic or its
    # dead letters: a file changed at the same path is sent whole.
    resume: bool = False
    # "bulk" (crypto_pipeline/replay/bulk.py), "paced" (kafka-python, paced by event time) or
    # "auto": bulk for as-fast-as-possible replays of a file, paced otherwise.
    engine: str = "auto"
    # A candle dated later than the clock plus this is a dead letter (candle_rules).
    future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_S * 1000

    @property
    def bulk(self) -> bool:
        live_like = self.speed is not None or self.loop or self.rebase_now
        if self.engine not in ENGINES:
            raise ReplayError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if self.engine == "bulk" and live_like:
            raise ReplayError(
                "the bulk engine sends as fast as it can: no --speed, --loop or --rebase-now"
            )
        return self.engine == "bulk" or (self.engine == "auto" and not live_like)


@dataclass
class ReplaySummary:
    topic: str
    sent: int = 0
    rejected: int = 0
    already_sent: int = 0  # --resume: lines found in the topic or its dead letters, not sent
    bytes_sent: int = 0
    elapsed_s: float = 0.0
    loops: int = 0
    interrupted: bool = False
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    # What the first pass added to the file's event times (--rebase-now), and how far each later
    # pass moved them (--loop): what a reconciliation needs to recompute the replayed windows.
    event_shift_ms: int = 0
    pass_span_ms: int | None = None
    end_offsets: dict[int, int] = field(default_factory=dict)
    rejection_reasons: dict[str, int] = field(default_factory=dict)

    def record_sent(self, size: int, event_ms: int) -> None:
        self.sent += 1
        self.bytes_sent += size
        if self.first_event_ms is None or event_ms < self.first_event_ms:
            self.first_event_ms = event_ms
        if self.last_event_ms is None or event_ms > self.last_event_ms:
            self.last_event_ms = event_ms

    def record_rejection(self, reason: str) -> None:
        self.rejected += 1
        kind = reason_kind(reason)
        self.rejection_reasons[kind] = self.rejection_reasons.get(kind, 0) + 1

    def add(self, part: ReplaySummary) -> None:
        """Count what `part` counted (the messages of one block of a bulk replay)."""
        self.sent += part.sent
        self.rejected += part.rejected
        self.bytes_sent += part.bytes_sent
        for ms in (part.first_event_ms, part.last_event_ms):
            if ms is not None:
                self.first_event_ms = min(ms, self.first_event_ms or ms)
                self.last_event_ms = max(ms, self.last_event_ms or ms)
        for kind, count in part.rejection_reasons.items():
            self.rejection_reasons[kind] = self.rejection_reasons.get(kind, 0) + count

    @property
    def messages_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def lines(self) -> list[str]:
        status = "interrupted" if self.interrupted else "done"
        return [
            f"replay {status}: topic {self.topic}",
            f"  sent       {self.sent:>12,}",
            f"  rejected   {self.rejected:>12,}  (dead letters in {dead_letter_topic(self.topic)})",
            *(
                [f"  resumed    {self.already_sent:>12,}  lines already sent"]
                if self.already_sent
                else []
            ),
            f"  bytes      {self.bytes_sent:>12,}",
            f"  elapsed    {self.elapsed_s:>12.2f} s",
            f"  rate       {self.messages_per_s:>12,.0f} messages/s",
        ]


def record_topic(topic: str, kind: RecordKind) -> str:
    """Where a file's records go: candles to the topic, trades to its trades topic."""
    return trades_topic(topic) if kind == "trades" else topic


def keep(options: ReplayOptions, parsed: ParsedLine) -> bool:
    record = parsed.record
    if record is None:
        return True  # every bad row goes to the dead-letter topic, whatever the filters
    if options.symbols is not None and record.symbol not in options.symbols:
        return False
    if options.start_ms is not None and record.event_ms < options.start_ms:
        return False
    return options.end_ms is None or record.event_ms < options.end_ms


def dead_letter(
    options: ReplayOptions, parsed: ParsedLine, digest: str, topic: str
) -> tuple[bytes, bytes]:
    """A rejected line's dead letter: a second replay of the file sends the same keys."""
    return dead_letter_format.for_line(
        parsed.raw, parsed.reason, str(options.path), digest, parsed.line, topic
    )


class _KeyPartitions:
    """The default (murmur2) partition of each key, computed once per key: the producer would
    otherwise hash every message's key again."""

    def __init__(self, partitions: set[int]) -> None:
        self.partitions = sorted(partitions)
        self.by_key: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        partition = self.by_key.get(key)
        if partition is None:
            index = (murmur2(key) & 0x7FFFFFFF) % len(self.partitions)
            partition = self.by_key[key] = self.partitions[index]
        return partition


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay knows before it sends anything."""

    topic: str  # where the file's records go (record_topic)
    total: int | None  # messages expected (None: endless --loop)
    sent_before: LinesSent | None  # --resume
    digest: str  # of the file's content, in every message's lineage
    clock_ms: int  # the future rule's clock (when the replay was planned)
    last_event_ms: int | None = None  # --rebase-now: the file's last event time replayed

    @property
    def dlq_topic(self) -> str:
        return dead_letter_topic(self.topic)


def last_event_ms(options: ReplayOptions, clock_ms: int) -> int | None:
    """The latest event time among the lines the replay sends (a future-dated line is a dead
    letter: it does not count)."""
    rows = (beyond_clock(options, p, clock_ms) for p in read_rows(options.path) if keep(options, p))
    return max((p.record.event_ms for p in rows if p.record is not None), default=None)


def beyond_clock(options: ReplayOptions, parsed: ParsedLine, clock_ms: int) -> ParsedLine:
    """The line as a rejection when its record is dated too far after the clock (its time in
    the file: a shifted time of --rebase-now or --loop is never sent ahead of the clock)."""
    if parsed.record is None:
        return parsed
    reason = future_reason(parsed.record.event_ms, clock_ms, options.future_tolerance_ms)
    return parsed if reason is None else parsed._replace(record=None, reason=reason)


def plan_replay(options: ReplayOptions, bootstrap_servers: str) -> ReplayPlan:
    """Refuses a file that cannot be replayed before anything is sent, and creates the topics."""
    try:
        # A bad header, or a file that cannot be read to its end: an error before anything is sent.
        kind = file_format(options.path).kind
        topic = record_topic(options.topic, kind)
        lines, digest = scan_file(options.path)
    except InputFormatError as error:
        raise ReplayError(str(error)) from None
    if options.loop and kind == "trades":
        raise ReplayError(
            "--loop cannot replay a trade file: every pass would send its trades (their ids) again"
        )
    if options.resume and (options.loop or options.rebase_now):
        raise ReplayError("--resume cannot be combined with --loop or --rebase-now")
    total = None if options.loop else lines
    if total is not None and options.limit is not None:
        total = min(total, options.limit)
    dlq_topic = dead_letter_topic(topic)
    sent_before = (
        LinesSent.read(bootstrap_servers, topic, dlq_topic, options.path, lines, digest)
        if options.resume
        else None
    )
    ensure_topic(bootstrap_servers, topic, options.partitions, options.retention_ms)
    ensure_topic(bootstrap_servers, dlq_topic, 1, options.retention_ms)
    clock_ms = int(time.time() * 1000)
    last_ms = last_event_ms(options, clock_ms) if options.rebase_now else None
    return ReplayPlan(topic, total, sent_before, digest, clock_ms, last_ms)


def replay(
    options: ReplayOptions,
    bootstrap_servers: str,
    *,
    show_progress: bool = True,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> ReplaySummary:
    """Send the file's rows to Kafka, paced by event time or in bulk (options.engine); flushes
    and returns on Ctrl-C too."""
    if options.bulk:
        from crypto_pipeline.replay.bulk import replay_bulk  # loads librdkafka only when used

        return replay_bulk(options, bootstrap_servers, show_progress=show_progress)
    return _replay_paced(options, bootstrap_servers, show_progress, now_ms)


def _replay_paced(
    options: ReplayOptions,
    bootstrap_servers: str,
    show_progress: bool,
    now_ms: Callable[[], int],
) -> ReplaySummary:
    plan = plan_replay(options, bootstrap_servers)
    sent_before = plan.sent_before
    producer = kafka_producer(bootstrap_servers)
    summary = ReplaySummary(topic=plan.topic)
    delivery_errors: list[Exception] = []
    progress = Progress(total=plan.total, enabled=show_progress)
    lineage = file_lineage(options.path, plan.digest)
    partition_of = _KeyPartitions(producer.partitions_for(plan.topic))

    unreadable: InputFormatError | None = None
    pacer = Pacer(options.speed)
    rebase_ms = 0
    loop_shift_ms = 0
    span = Span()
    try:
        while True:
            for parsed in read_rows(options.path):
                if not keep(options, parsed):
                    continue
                if sent_before is not None and parsed.line in sent_before:
                    summary.already_sent += 1
                    continue
                parsed = beyond_clock(options, parsed, plan.clock_ms)
                record = parsed.record
                if record is None and summary.loops:
                    continue  # --loop: a line's dead letter is sent on the first pass only
                if record is None:
                    key, value = dead_letter(options, parsed, plan.digest, plan.topic)
                    producer.send(plan.dlq_topic, key=key, value=value).add_errback(
                        delivery_errors.append
                    )
                    summary.record_rejection(parsed.reason or "")
                    progress.update(summary.sent, summary.rejected)
                    continue
                if options.limit is not None and summary.sent >= options.limit:
                    break
                event = record.event_ms
                if span.first is None and options.rebase_now and plan.last_event_ms is not None:
                    # The first pass ends now; later passes are never ahead of the clock.
                    rebase_ms = now_ms() - plan.last_event_ms
                    summary.event_shift_ms = rebase_ms
                if summary.loops == 0:
                    span.add(event)
                pacer.wait_for(event + loop_shift_ms)
                shift_ms = rebase_ms + loop_shift_ms
                if shift_ms:  # a shifted time is never sent ahead of the clock
                    wait_for_clock(event + shift_ms, now_ms)
                value = record.to_json(lineage, parsed.line, shift_ms)
                key = record.key()
                producer.send(
                    plan.topic, key=key, value=value, partition=partition_of(key)
                ).add_errback(delivery_errors.append)
                summary.record_sent(len(key) + len(value), event + shift_ms)
                progress.update(summary.sent, summary.rejected)
            summary.loops += 1
            limit_reached = options.limit is not None and summary.sent >= options.limit
            if not options.loop or limit_reached or span.first is None:
                break
            # Next pass: event times move forward by the file's span, so none repeats.
            loop_shift_ms += span.length_ms
            summary.pass_span_ms = span.length_ms
    except KeyboardInterrupt:
        summary.interrupted = True
    except InputFormatError as error:  # the file changed since it was read to its end
        unreadable = error
    finally:
        producer.flush()
        producer.close()
        summary.elapsed_s = pacer.elapsed_s()
        progress.close(summary.sent, summary.rejected)
    return finish(summary, bootstrap_servers, unreadable, delivery_errors)


def finish(
    summary: ReplaySummary,
    bootstrap_servers: str,
    unreadable: InputFormatError | None,
    delivery_errors: list[Any],
) -> ReplaySummary:
    """The summary of a replay whose producer has flushed, or its one-line error."""
    if unreadable is not None:
        raise ReplayError(
            f"{unreadable}; what came before was replayed ({summary.sent} sent, "
            f"{summary.rejected} dead letters), nothing after"
        )
    if delivery_errors:
        raise ReplayError(
            f"{len(delivery_errors)} messages were not delivered; first error: {delivery_errors[0]}"
        )
    # Everything is delivered: wait for restarting brokers as long as a delivery would.
    summary.end_offsets = end_offsets(bootstrap_servers, summary.topic, DELIVERY_TIMEOUT_S)
    return summary
