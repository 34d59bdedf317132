"""Bulk replay, for `--speed max`: worker processes parse, validate and encode the file's lines in
blocks, and one librdkafka producer (confluent-kafka) sends their messages in file order.

Why this shape (measured: bench/results.md): kafka-python's per-message path tops out near
25,000 sends/s, and parsing and encoding a line in Python costs about 10 µs, so one process
cannot reach 100,000 messages/s whatever its client. librdkafka's `produce` costs the caller
about 1 µs, and the parsing runs on every core. The messages are the paced replay's, byte for
byte: the same parser, rules, encoders, keys, partitioner (murmur2, as Kafka's Java client) and
dead letters. One idempotent producer (acks=all) sends them in file order, so each partition, and
each symbol, keeps the file's order. Memory is bounded by the blocks in flight, whatever the
file's size."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from crypto_pipeline.clients import DELIVERY_TIMEOUT_S, librdkafka_config, produce_waiting
from crypto_pipeline.formats.candle_message import file_lineage
from crypto_pipeline.replay.input_files import (
    READ_ERRORS,
    InputFormatError,
    RowParser,
    data_lines,
    file_format,
    parse_line,
)
from crypto_pipeline.replay.producer import (
    ReplayError,
    ReplayOptions,
    ReplayPlan,
    ReplaySummary,
    beyond_clock,
    dead_letter,
    finish,
    keep,
    plan_replay,
)
from crypto_pipeline.replay.progress_meter import Progress

BLOCK_BYTES = 1 << 20  # about 3,500 lines of 300 bytes
BLOCKS_IN_FLIGHT_PER_WORKER = 4
# What a flush may take: librdkafka gives up on a message after delivery.timeout.ms.
FLUSH_TIMEOUT_S = DELIVERY_TIMEOUT_S + 10.0
# A line as a worker hands it over: (line, key, value, event time ms, rejection reason or None).
LineMessage = tuple[int, bytes, bytes, int, str | None]


def bulk_workers() -> int:
    """Parsing processes: one per core (the producer's threads and the broker share them)."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass
class EncodedBlock:
    """One block's lines as messages, in file order (a rejected line's message is its dead
    letter), and what a replay of the whole block counts."""

    messages: list[LineMessage]
    counts: ReplaySummary


class _Worker:
    """The state of a worker process, loaded once when it starts."""

    options: ReplayOptions
    parser: RowParser
    topic: str  # where the file's records go
    digest: str
    lineage: str
    clock_ms: int  # the future rule's clock: when the worker started

    @classmethod
    def load(cls, options: ReplayOptions, topic: str, digest: str) -> None:
        cls.options = options
        cls.parser = file_format(options.path).parser
        cls.topic = topic
        cls.digest = digest
        cls.lineage = file_lineage(options.path, digest)
        cls.clock_ms = int(time.time() * 1000)


def _start_worker(options: ReplayOptions, topic: str, digest: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _Worker.load(options, topic, digest)


def _encode_block(first_line: int, block: bytes) -> EncodedBlock:
    options, parser, lineage = _Worker.options, _Worker.parser, _Worker.lineage
    filtered = options.symbols is not None or options.start_ms is not None or options.end_ms
    latest_ms = _Worker.clock_ms + options.future_tolerance_ms  # beyond_clock's rule, inlined
    messages: list[LineMessage] = []
    counts = ReplaySummary(topic=_Worker.topic)
    sent_events: list[int] = []
    for number, line in enumerate(block.split(b"\n"), start=first_line):
        parsed = parse_line(parser, number, line)
        if parsed is None or (filtered and not keep(options, parsed)):
            continue
        record = parsed.record
        if record is not None and record.event_ms > latest_ms:
            parsed = beyond_clock(options, parsed, _Worker.clock_ms)
            record = parsed.record
        if record is None:
            key, value = dead_letter(options, parsed, _Worker.digest, _Worker.topic)
            reason = parsed.reason or ""
            messages.append((number, key, value, 0, reason))
            counts.record_rejection(reason)
            continue
        key = record.key()
        value = record.to_json(lineage, number)
        event_ms = record.event_ms
        messages.append((number, key, value, event_ms, None))
        counts.bytes_sent += len(key) + len(value)
        sent_events.append(event_ms)
    if sent_events:
        counts.sent = len(sent_events)
        counts.first_event_ms, counts.last_event_ms = min(sent_events), max(sent_events)
    return EncodedBlock(messages, counts)


def _blocks(options: ReplayOptions) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, whole lines without the last line end) of the file after its
    header; raises InputFormatError if the file cannot be read on."""
    stream, first_data = data_lines(options.path)
    with stream:
        for number, line in first_data:
            yield number, line.rstrip(b"\n")
        next_line, carry = 2, b""
        while True:
            try:
                read = stream.read(BLOCK_BYTES)
            except READ_ERRORS as error:
                raise InputFormatError(
                    f"{options.path}: cannot read past line {next_line - 1}: {error}"
                ) from None
            if not read:
                break
            data = carry + read
            end = data.rfind(b"\n")
            if end < 0:  # no whole line yet
                carry = data
                continue
            carry = data[end + 1 :]
            yield next_line, data[:end]
            next_line += data.count(b"\n", 0, end) + 1
        if carry:  # the last line, without a line end
            yield next_line, carry


class _Sender:
    """The main process's side: sends each block's messages, in order, with one producer."""

    def __init__(
        self, options: ReplayOptions, plan: ReplayPlan, producer: Producer, summary: ReplaySummary
    ):
        self.options = options
        self.plan = plan
        self.producer = producer
        self.summary = summary

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        produce_waiting(self.producer, topic, value, key)

    def send_all(self, block: EncodedBlock) -> None:
        """Every message of the block (no --limit, no --resume): the hot loop."""
        topic, dlq_topic = self.plan.topic, self.plan.dlq_topic
        produce = self.producer.produce
        for _, key, value, _, reason in block.messages:
            chosen = topic if reason is None else dlq_topic
            try:
                produce(chosen, value, key)
            except BufferError:
                self.produce(chosen, value, key)
        self.summary.add(block.counts)
        self.producer.poll(0)

    def send_each(self, block: EncodedBlock, sent_before: Any) -> bool:
        """Line by line, as the paced replay decides: skips the lines already sent, stops at
        --limit. False once the limit is reached."""
        summary, limit = self.summary, self.options.limit
        for line, key, value, event_ms, reason in block.messages:
            if sent_before is not None and line in sent_before:
                summary.already_sent += 1
            elif reason is not None:
                self.produce(self.plan.dlq_topic, value, key)
                summary.record_rejection(reason)
            elif limit is not None and summary.sent >= limit:
                return False
            else:
                self.produce(self.plan.topic, value, key)
                summary.record_sent(len(key) + len(value), event_ms)
        self.producer.poll(0)
        return True


@contextlib.contextmanager
def _ctrl_c_between_blocks() -> Iterator[threading.Event]:
    """Ctrl-C sets the event instead of raising in the middle of a block, so that a block is sent
    and counted whole or not at all: the summary's counts stay exact. Only the main thread
    receives signals; elsewhere the event is never set."""
    requested = threading.Event()
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: requested.set())
    except ValueError:  # not the main thread
        yield requested
        return
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def replay_bulk(
    options: ReplayOptions, bootstrap_servers: str, *, show_progress: bool = True
) -> ReplaySummary:
    plan = plan_replay(options, bootstrap_servers)
    summary = ReplaySummary(topic=plan.topic)
    delivery_errors: list[KafkaError] = []

    def on_failure(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            delivery_errors.append(error)

    workers = bulk_workers()
    # Forked, not spawned: a spawned worker spends 0.4 s of CPU starting Python and importing.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(options, plan.topic, plan.digest),
    )
    in_flight: deque[Future[EncodedBlock]] = deque()
    unreadable: InputFormatError | None = None
    died: BrokenProcessPool | None = None
    with pool, _ctrl_c_between_blocks() as stop:
        pool.submit(int).result()  # forks every worker now, before librdkafka starts threads
        producer = Producer({**librdkafka_config(bootstrap_servers), "on_delivery": on_failure})
        sender = _Sender(options, plan, producer, summary)
        per_line = plan.sent_before is not None or options.limit is not None
        progress = Progress(total=plan.total, enabled=show_progress)
        try:
            blocks = _blocks(options)
            more = True
            while more or in_flight:
                if stop.is_set():
                    summary.interrupted = True
                    break
                while more and len(in_flight) < workers * BLOCKS_IN_FLIGHT_PER_WORKER:
                    try:
                        first_line, block = next(blocks)
                    except StopIteration:
                        more = False
                    except InputFormatError as error:  # what came before is still sent
                        unreadable, more = error, False
                    else:
                        in_flight.append(pool.submit(_encode_block, first_line, block))
                if not in_flight:
                    break
                encoded = in_flight.popleft().result()
                if not per_line:
                    sender.send_all(encoded)
                elif not sender.send_each(encoded, plan.sent_before):
                    break
                progress.update(summary.sent, summary.rejected)
        except KeyboardInterrupt:
            summary.interrupted = True
        except BrokenProcessPool as error:  # a worker was killed (out of memory, a signal)
            died = error
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            unflushed = producer.flush(FLUSH_TIMEOUT_S)
            if unflushed:
                delivery_errors.append(
                    KafkaError(KafkaError._MSG_TIMED_OUT, f"{unflushed} messages still queued")
                )
            summary.elapsed_s = time.monotonic() - progress.started
            progress.close(summary.sent, summary.rejected)
    if died is not None:
        raise ReplayError(
            f"a parsing worker died ({died}); what came before was sent ({summary.sent} sent, "
            f"{summary.rejected} dead letters): replay --resume sends the rest"
        )
    return finish(summary, bootstrap_servers, unreadable, delivery_errors)
