"""Clients for the three servers, with explicit timeouts, built from the one settings source."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from influxdb_client import InfluxDBClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from pymongo import MongoClient

from crypto_pipeline.settings import InfluxTarget

Document = dict[str, Any]


def mongo_client(uri: str) -> MongoClient[Document]:
    return MongoClient(
        uri,
        serverSelectionTimeoutMS=10_000,
        connectTimeoutMS=10_000,
        socketTimeoutMS=120_000,
    )


def influx_client(target: InfluxTarget, timeout_ms: int = 30_000) -> InfluxDBClient:
    return InfluxDBClient(url=target.url, token=target.token, org=target.org, timeout=timeout_ms)


class KafkaUnavailable(RuntimeError):
    """The brokers could not be reached within the bootstrap timeout."""


def unreachable(bootstrap_servers: str, error: Exception) -> KafkaUnavailable:
    return KafkaUnavailable(f"cannot reach Kafka at {bootstrap_servers}: {error}")


KAFKA_BOOTSTRAP_TIMEOUT_MS = 5_000
# How long a producer keeps retrying a message (brokers down or electing) before it gives up.
DELIVERY_TIMEOUT_S = 120


def kafka_producer(bootstrap_servers: str, **overrides: Any) -> KafkaProducer:
    """A producer tuned for throughput without giving up delivery guarantees: acks from all
    in-sync replicas, idempotence (no duplicates on retry), lz4 batches."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "bootstrap_timeout_ms": KAFKA_BOOTSTRAP_TIMEOUT_MS,
        "acks": "all",
        "enable_idempotence": True,
        "retries": 2**31 - 1,
        "delivery_timeout_ms": DELIVERY_TIMEOUT_S * 1000,
        "linger_ms": 20,
        "batch_size": 512 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "compression_type": "lz4",
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except KafkaError as error:
        raise unreachable(bootstrap_servers, error) from None


def librdkafka_config(bootstrap_servers: str) -> dict[str, Any]:
    """A librdkafka producer's (confluent-kafka) settings with `kafka_producer`'s guarantees:
    acks from all in-sync replicas, idempotence, lz4; larger batches and a deep local queue."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1 << 20,
        "message.max.bytes": 4 << 20,
        # Keyed messages on the partition Kafka's Java client (and kafka-python) would choose.
        "partitioner": "murmur2_random",
        # The local queue: about 2 s of sending at 100,000 messages/s, and a bound on memory.
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 64 << 10,
        "delivery.timeout.ms": DELIVERY_TIMEOUT_S * 1000,
        # Delivery reports for failures only: a success costs the sending loop nothing.
        "delivery.report.only.error": True,
    }


def produce_waiting(producer: Any, topic: str, value: bytes, key: bytes) -> None:
    """librdkafka's produce, waiting for room while its local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:  # let librdkafka send what it holds
            producer.poll(0.05)


def kafka_admin(bootstrap_servers: str) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            bootstrap_timeout_ms=KAFKA_BOOTSTRAP_TIMEOUT_MS,
            request_timeout_ms=30_000,
        )
    except KafkaError as error:
        raise unreachable(bootstrap_servers, error) from None


def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    retention_ms: int | None = None,
    compacted: bool = False,
) -> bool:
    """Create the topic if it is missing, replicated to up to 3 brokers (with 3, a write needs 2
    in-sync replicas: one broker may fail without loss or refusal); True if this call created
    it. Records are stamped by the broker when appended (LogAppendTime), not by producers: the
    Spark job's future rule compares event times with a clock no producer can set. A compacted
    topic keeps each key's latest record instead of deleting by age."""
    configs = {"message.timestamp.type": "LogAppendTime"}
    if retention_ms is not None:
        configs["retention.ms"] = str(retention_ms)
    if compacted:
        configs["cleanup.policy"] = "compact"
    admin = kafka_admin(bootstrap_servers)
    try:
        if topic in admin.list_topics():
            return False
        replication = min(len(admin.describe_cluster()["brokers"]), 3)
        if replication == 3:
            configs["min.insync.replicas"] = "2"
        try:
            admin.create_topics([NewTopic(topic, partitions, replication, topic_configs=configs)])
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        admin.close()


def end_offsets(bootstrap_servers: str, topic: str, patience_s: float = 0) -> dict[int, int]:
    """The end offset of every partition of the topic (empty if the topic does not exist)."""
    return offset_range(bootstrap_servers, topic, patience_s)[1]


def offset_range(
    bootstrap_servers: str, topic: str, patience_s: float = 0
) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition of the topic, the earliest offset it still holds (retention deletes from
    the start) and its end offset. Brokers that are down or restarting (refused or reset
    connections) are retried with a fresh client for up to `patience_s`."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return _offset_range(bootstrap_servers, topic)
        except (KafkaConnectionError, KafkaTimeoutError) as error:
            if time.monotonic() > deadline:
                raise unreachable(bootstrap_servers, error) from None
            time.sleep(1)


def _offset_range(bootstrap_servers: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        bootstrap_timeout_ms=KAFKA_BOOTSTRAP_TIMEOUT_MS,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
        starts = consumer.beginning_offsets(wanted)
        ends = consumer.end_offsets(wanted)
        return (
            {tp.partition: offset for tp, offset in sorted(starts.items())},
            {tp.partition: offset for tp, offset in sorted(ends.items())},
        )
    finally:
        consumer.close()


def iter_records(
    bootstrap_servers: str, topic: str, last_only: bool = False, timeout_s: float = 120
) -> Iterator[Any]:
    """Every record in the topic now (or only the newest of each partition), read up to the end
    offsets taken at the start; nothing if the topic does not exist."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        bootstrap_timeout_ms=KAFKA_BOOTSTRAP_TIMEOUT_MS,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        pending = {tp: end for tp, end in ends.items() if end > starts[tp]}
        consumer.assign(list(pending))
        for tp, end in pending.items():
            consumer.seek(tp, max(end - 1, starts[tp]) if last_only else starts[tp])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"reading {topic} did not reach its end in {timeout_s:.0f} s"
                )
            for tp, batch in consumer.poll(timeout_ms=1000, max_records=50_000).items():
                end = pending.get(tp)
                if end is None:
                    continue
                yield from (r for r in batch if r.offset < end)
                if batch[-1].offset >= end - 1:
                    del pending[tp]
                    consumer.pause(tp)
    finally:
        consumer.close()


def read_records(
    bootstrap_servers: str, topic: str, timeout_s: float = 120
) -> list[tuple[bytes, int]]:
    """(value, Kafka timestamp in ms) of every message in the topic now."""
    return [
        (r.value, r.timestamp) for r in iter_records(bootstrap_servers, topic, timeout_s=timeout_s)
    ]


def read_messages(
    bootstrap_servers: str, topic: str, last_only: bool = False, timeout_s: float = 120
) -> list[bytes]:
    """The value of every message in the topic now (or only the newest of each partition)."""
    return [r.value for r in iter_records(bootstrap_servers, topic, last_only, timeout_s)]


def read_latest_by_key(
    bootstrap_servers: str, topic: str, timeout_s: float = 120
) -> dict[bytes | None, bytes]:
    """The newest value of each key in the topic: a message sent again under its key (a retried
    batch's dead letters) counts once."""
    return {r.key: r.value for r in iter_records(bootstrap_servers, topic, timeout_s=timeout_s)}
