"""The dead-letter topic's message (`<topic>.dlq`), both sides: a rejected input, verbatim, and
why it was rejected. Written by the replay for a file's line (keyed by file and line) and by the
Spark job for a Kafka record (keyed by topic, partition and offset, with `stage` "spark"); read
by the `nothing_left_behind` check. A live feed's dead letter is a frame (or one candle or trade of
it), keyed by exchange and a digest of the raw text. Deterministic keys: the same input sent again
has the same key, so a compacted read counts it once."""

from __future__ import annotations

import hashlib
import json

from crypto_pipeline.candle_rules import reason_kind
from crypto_pipeline.formats.candle_message import (
    CONNECTION,
    EXCHANGE,
    RECEIVED_MS,
    SOURCE_DIGEST,
    SOURCE_FILE,
    SOURCE_LINE,
)

RAW = "raw"
REASON = "reason"
STAGE = "stage"
SPARK_STAGE = "spark"
# What a dead letter of the Spark job holds besides RAW, REASON and STAGE: where the record was.
RECORD_FIELDS = ("topic", "partition", "offset")
RECORD_KEY_SEPARATOR = "-"  # key: topic-partition-offset


def for_line(
    raw: str, reason: str | None, source_file: str, digest: str, line: int, topic: str
) -> tuple[bytes, bytes]:
    """The key and value of a file line's dead letter."""
    value = {
        RAW: raw,
        SOURCE_FILE: source_file,
        SOURCE_DIGEST: digest,
        SOURCE_LINE: line,
        REASON: reason,
        "topic": topic,
    }
    return line_key_prefix(source_file) + str(line).encode(), json.dumps(
        value, separators=(",", ":")
    ).encode()


def for_frame(
    raw: str, reason: str, exchange: str, connection: str, received_ms: int, topic: str
) -> tuple[bytes, bytes]:
    """The key and value of a live frame's dead letter (the same frame again: the same key)."""
    value = {
        RAW: raw,
        REASON: reason,
        EXCHANGE: exchange,
        CONNECTION: connection,
        RECEIVED_MS: received_ms,
        "topic": topic,
    }
    digest = hashlib.sha256(raw.encode()).hexdigest()[:32]
    return f"{exchange}:{digest}".encode(), json.dumps(value, separators=(",", ":")).encode()


def for_record(raw: str, reason: str, topic: str, partition: int, offset: int) -> tuple[str, str]:
    """The key and value of a Kafka record the Spark job rejected (as its SQL plan writes them)."""
    value = {
        RAW: raw,
        REASON: reason,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        STAGE: SPARK_STAGE,
    }
    key = RECORD_KEY_SEPARATOR.join(str(part) for part in (topic, partition, offset))
    return key, json.dumps(value, separators=(",", ":"))


def line_key_prefix(source_file: str) -> bytes:
    """The keys of a file's dead letters: this, then the line number."""
    return f"{source_file}:".encode()


def reason_kind_of(value: bytes) -> str:
    """The kind of rejection a dead letter carries ("high < low", ...), for grouping."""
    try:
        reason = str(json.loads(value).get(REASON) or "no reason given")
    except (ValueError, AttributeError):
        return "unreadable dead letter"
    return reason_kind(reason)
