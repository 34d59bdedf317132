"""The ledger of windows the live job could not make whole, until a backfill repairs them.

One MongoDB document per micro-batch, series (exchange and symbol) and kind, in the aggregates'
database (collection `<aggregates>_late`):
- `late`: candles that arrived after their symbol's watermark (rows, event-time range, and per
  Kafka partition the lowest and highest offset of those candles);
- `refused`: a window whose write was refused because the stored one has input this one lacks
  (spark_jobs/window_versions.py), its range = the window;
- `redelivered` (candles from trades): trades of seconds that had trades longer ago than the
  dedupe horizon, so a copy among them could not be recognised (spark_jobs/trade_windows.py).

`_id` topic|checkpoint|exchange:symbol|batch|kind|first|last: a retried batch writes the same
document, a reset checkpoint (batch ids start again) writes new ones. A backfill decides each entry
it covered (only those recorded before it started reading): `repaired_at`, or `unrepairable` with
the reason when the topic no longer holds all of its input (retention). The asset check
`late_rows_repaired` fails while any entry is unrepaired or unrepairable; the Dagster sensor and
`crypto-pipeline backfill --late` repair them (the sensor leaves unrepairable ones to a person).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection

from crypto_pipeline.clients import mongo_client
from crypto_pipeline.formats.candle_message import FILE_EXCHANGE
from crypto_pipeline.formats.window_values import series_key, split_series
from crypto_pipeline.settings import MongoTarget

LATE, REFUSED, REDELIVERED = "late", "refused", "redelivered"


@dataclass(frozen=True)
class LateEntry:
    series: str  # exchange:SYMBOL (crypto_pipeline/formats/window_values.py)
    rows: int
    first_event_ms: int
    last_event_ms: int
    # Per partition (a string), [lowest, highest] offset of the late candles; {} for `refused`.
    offsets: dict[str, list[int]] = field(default_factory=dict)
    kind: str = LATE
    id: str = ""  # set when read from the ledger
    unrepairable: str | None = None  # why a backfill could not repair it


def entry_id(topic: str, checkpoint_id: str, batch_id: int, entry: LateEntry) -> str:
    return (
        f"{topic}|{checkpoint_id}|{entry.series}|{batch_id}|{entry.kind}|"
        f"{entry.first_event_ms}|{entry.last_event_ms}"
    )


def record(
    ledger: Collection[Any],
    topic: str,
    checkpoint_id: str,
    batch_id: int,
    entries: Iterable[LateEntry],
) -> int:
    """Upsert the batch's entries (idempotent: a retried batch has the same ids)."""
    now = datetime.now(tz=UTC)
    operations = [
        UpdateOne(
            {"_id": entry_id(topic, checkpoint_id, batch_id, e)},
            {
                "$setOnInsert": {"detected_at": now, "repaired_at": None, "unrepairable": None},
                "$set": {
                    "topic": topic,
                    "checkpoint_id": checkpoint_id,
                    **dict(zip(("exchange", "symbol"), split_series(e.series), strict=True)),
                    "batch_id": batch_id,
                    "kind": e.kind,
                    "rows": e.rows,
                    "first_event_ms": e.first_event_ms,
                    "last_event_ms": e.last_event_ms,
                    "offsets": e.offsets,
                },
            },
            upsert=True,
        )
        for e in entries
    ]
    if operations:
        ledger.bulk_write(operations, ordered=False)
    return len(operations)


def open_entries(
    ledger: Collection[Any],
    topic: str,
    recorded_before: datetime | None = None,
    with_unrepairable: bool = True,
) -> list[LateEntry]:
    """The entries not repaired yet (with or without those a backfill found unrepairable)."""
    selector: dict[str, Any] = {"topic": topic, "repaired_at": None}
    if not with_unrepairable:
        selector["unrepairable"] = None
    if recorded_before is not None:
        selector["detected_at"] = {"$lt": recorded_before}
    return [
        LateEntry(
            # Entries recorded before series had an exchange are all of files.
            series_key(doc.get("exchange") or FILE_EXCHANGE, doc["symbol"]),
            doc["rows"],
            doc["first_event_ms"],
            doc["last_event_ms"],
            doc.get("offsets") or {},
            doc.get("kind") or LATE,
            str(doc["_id"]),
            doc.get("unrepairable"),
        )
        for doc in ledger.find(selector).sort("_id", 1)
    ]


def open_entries_in(
    mongo: MongoTarget, topic: str, with_unrepairable: bool = True
) -> list[LateEntry]:
    """`open_entries` of the ledger beside the target's aggregates, with a client of its own."""
    with mongo_client(mongo.uri) as client:
        ledger = client[mongo.database][mongo.late_collection]
        return open_entries(ledger, topic, with_unrepairable=with_unrepairable)


def repair_ranges(entries: Iterable[LateEntry]) -> dict[str, list[tuple[int, int]]]:
    """Per series, the event-time ranges [first, last + 1) of its entries, overlapping or adjacent
    ones merged: a backfill recomputes these, not one range across every series."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for e in sorted(entries, key=lambda e: (e.series, e.first_event_ms)):
        ranges = spans.setdefault(e.series, [])
        if ranges and e.first_event_ms <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], e.last_event_ms + 1))
        else:
            ranges.append((e.first_event_ms, e.last_event_ms + 1))
    return spans


def decide(ledger: Collection[Any], repaired: Iterable[str], unrepairable: dict[str, str]) -> None:
    """Record a backfill's outcome: entries repaired, and entries it could not repair (why)."""
    now = datetime.now(tz=UTC)
    operations = [
        UpdateOne({"_id": i}, {"$set": {"repaired_at": now, "unrepairable": None}})
        for i in repaired
    ] + [
        UpdateOne({"_id": i}, {"$set": {"unrepairable": reason, "checked_at": now}})
        for i, reason in unrepairable.items()
    ]
    if operations:
        ledger.bulk_write(operations, ordered=False)
