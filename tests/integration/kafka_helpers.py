"""Reading topics back in tests, with kafka-python directly (not through the code under test)."""

from __future__ import annotations

import json
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from crypto_pipeline.settings import Settings


def consume_all(
    settings: Settings, topic: str, expected: int, timeout_s: float = 120
) -> list[ConsumerRecord]:
    """Every record of the topic from the beginning; waits until `expected` arrived or time out."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, max_partition_fetch_bytes=8 << 20
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                records.extend(batch)
        # One more poll: anything beyond `expected` is a duplicate the test must see.
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def decoded(records: list[ConsumerRecord]) -> list[tuple[str, dict[str, Any]]]:
    return [(r.key.decode(), json.loads(r.value)) for r in records]
