"""The ledger of late candles: what the live job dropped as late, until a backfill repairs it.

One MongoDB document per micro-batch and symbol with late candles, in the aggregates' database
(collection `<aggregates>_late`): `_id` topic|symbol|batch|first|last, so a retried batch writes
the same document again. A backfill that recomputed a symbol's range from the topic marks the
entries inside that range repaired, but only those recorded before it started reading (a row
dropped later may be past what it read). The asset check `late_rows_repaired` fails while any
entry is unrepaired; the Dagster sensor and `crypto-pipeline backfill --late` repair them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection

from crypto_pipeline.clients import mongo_client
from crypto_pipeline.settings import MongoTarget


@dataclass(frozen=True)
class LateEntry:
    symbol: str
    rows: int
    first_event_ms: int
    last_event_ms: int


def record(ledger: Collection[Any], topic: str, batch_id: int, entries: Iterable[LateEntry]) -> int:
    """Upsert the batch's entries (idempotent: a retried batch has the same ids)."""
    now = datetime.now(tz=UTC)
    operations = [
        UpdateOne(
            {"_id": f"{topic}|{e.symbol}|{batch_id}|{e.first_event_ms}|{e.last_event_ms}"},
            {
                "$setOnInsert": {"detected_at": now, "repaired_at": None},
                "$set": {
                    "topic": topic,
                    "symbol": e.symbol,
                    "batch_id": batch_id,
                    "rows": e.rows,
                    "first_event_ms": e.first_event_ms,
                    "last_event_ms": e.last_event_ms,
                },
            },
            upsert=True,
        )
        for e in entries
    ]
    if operations:
        ledger.bulk_write(operations, ordered=False)
    return len(operations)


def unrepaired(ledger: Collection[Any], topic: str) -> list[LateEntry]:
    return [
        LateEntry(doc["symbol"], doc["rows"], doc["first_event_ms"], doc["last_event_ms"])
        for doc in ledger.find({"topic": topic, "repaired_at": None}).sort("_id", 1)
    ]


def unrepaired_in(mongo: MongoTarget, topic: str) -> list[LateEntry]:
    """`unrepaired` on the ledger beside the target's aggregates, with a client of its own."""
    with mongo_client(mongo.uri) as client:
        return unrepaired(client[mongo.database][mongo.late_collection], topic)


def repair_ranges(entries: Iterable[LateEntry]) -> dict[str, tuple[int, int]]:
    """Per symbol, the event-time range [first, last] that covers its unrepaired entries."""
    ranges: dict[str, tuple[int, int]] = {}
    for e in entries:
        first, last = ranges.get(e.symbol, (e.first_event_ms, e.last_event_ms))
        ranges[e.symbol] = (min(first, e.first_event_ms), max(last, e.last_event_ms))
    return ranges


def repair_scope(entries: Sequence[LateEntry]) -> tuple[tuple[str, ...], int, int]:
    """One backfill covering every entry: their symbols and [earliest first, latest last + 1)."""
    ranges = repair_ranges(entries)
    return (
        tuple(sorted(ranges)),
        min(first for first, _ in ranges.values()),
        max(last for _, last in ranges.values()) + 1,
    )


def mark_repaired(
    ledger: Collection[Any],
    topic: str,
    symbols: Iterable[str] | None,
    start_ms: int,
    end_ms: int,
    recorded_before: datetime,
) -> int:
    """Entries inside [start_ms, end_ms) of these symbols (None: all), recorded before the
    backfill started reading, are repaired; how many."""
    selector: dict[str, Any] = {
        "topic": topic,
        "repaired_at": None,
        "detected_at": {"$lt": recorded_before},
        "first_event_ms": {"$gte": start_ms},
        "last_event_ms": {"$lt": end_ms},
    }
    if symbols is not None:
        selector["symbol"] = {"$in": sorted(symbols)}
    result = ledger.update_many(selector, {"$set": {"repaired_at": datetime.now(tz=UTC)}})
    return result.modified_count
