"""The candles API's reads of MongoDB: a series' windows of one length over a time range, a page
at a time, and the series the pipeline has written.

A window's `_id` is `exchange|SYMBOL|window|start ms` (crypto_pipeline/formats/window_values.py)
and its start has 13 digits from 2001-09-09 to 2286-11-20, so a series' windows of one length
sorted by start are a range of `_id`s: every read is a range of the unique `_id` index, in
MongoDB and in the local stack's FerretDB (local_stack/ferretdb/patches/0005), never a scan. A
page spans at most `limit` windows of time, so it holds at most `limit` windows.

A window is *closed* once its end is at or before its series' watermark: the newest event time
the job has seen minus its allowed delay (the heartbeat's `watermark_ms`). The stream never emits
it again; an in-progress one may still change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crypto_pipeline.formats.window_values import (
    FRONTIER,
    INPUT_OFFSETS,
    TRADE_FIELDS,
    epoch_ms,
    series_key,
    window_id,
)
from crypto_pipeline.windows import window_ms

# Window starts with 13 digits: their `_id`s sort as their times.
EARLIEST_MS = 1_000_000_000_000
LATEST_MS = 9_999_999_999_999
MAX_LIMIT = 10_000
# The frontier documents: `_id`s from "frontier|" up to the next prefix, "frontier}".
FRONTIERS = {"_id": {"$gte": FRONTIER, "$lt": FRONTIER[:-1] + chr(ord(FRONTIER[-1]) + 1)}}
CANDLE_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "trades", "rows")


class NotFound(LookupError):
    """No such series or window length: the message says which exist."""


@dataclass(frozen=True)
class Page:
    candles: list[dict[str, Any]]
    # Where the next page starts (epoch ms), or None when this page reaches the range's end.
    next_start_ms: int | None


def is_closed(window_end_ms: int, newest_event_ms: int | None, watermark_ms: int) -> bool:
    return newest_event_ms is not None and window_end_ms <= newest_event_ms - watermark_ms


def candle(document: dict[str, Any], closed: bool) -> dict[str, Any]:
    """A window as the API and its live push show it: times in epoch ms."""
    shown = {
        "exchange": document["exchange"],
        "symbol": document["symbol"],
        "window": document["window"],
        "start_ms": epoch_ms(document["window_start"]),
        "end_ms": epoch_ms(document["window_end"]),
        **{name: document.get(name) for name in CANDLE_FIELDS},
        **{name: document[name] for name in TRADE_FIELDS if name in document},
        "first_event_ms": document.get("first_event_ms"),
        "last_event_ms": document.get("last_event_ms"),
        "closed": closed,
    }
    return shown


def id_range(exchange: str, symbol: str, window: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    """The `_id` filter of a series' windows of one length starting in [start_ms, end_ms)."""
    return {
        "_id": {
            "$gte": window_id(exchange, symbol, window, start_ms),
            "$lt": window_id(exchange, symbol, window, end_ms),
        }
    }


def page_end(start_ms: int, end_ms: int, size_ms: int, limit: int) -> int:
    """The end of the page from `start_ms` (a window's start): `limit` windows of time, or the
    range's end."""
    return min(end_ms, start_ms + limit * size_ms)


def _ends(frontier: dict[str, Any]) -> dict[str, int]:
    return {window: int(end) for window, end in (frontier.get("ends") or {}).items()}


class CandleStore:
    """One collection of windows (kline-built or trade-built) and its writers' collection."""

    def __init__(self, database: Any, collection: str, writers: str) -> None:
        self.collection = database[collection]
        self.writers = database[writers]

    def series(self) -> dict[str, dict[str, int]]:
        """Every series written, with the latest window end of each window length."""
        documents = self.writers.find(FRONTIERS)
        return {str(doc["_id"])[len(FRONTIER) :]: _ends(doc) for doc in documents}

    def ends(self, exchange: str, symbol: str) -> dict[str, int]:
        """The series' latest window end per window length ({} if never written)."""
        doc = self.writers.find_one({"_id": FRONTIER + series_key(exchange, symbol)})
        return _ends(doc or {})

    def newest_event_ms(self, exchange: str, symbol: str, window: str, end_ms: int) -> int | None:
        """The series' newest event time: the last event of its newest window (any length's
        newest window holds it: windows of one length tile time)."""
        start_ms = end_ms - window_ms(window)
        doc = self.collection.find_one(
            {"_id": window_id(exchange, symbol, window, start_ms)}, {"last_event_ms": 1}
        )
        return None if doc is None else doc.get("last_event_ms")

    def latest_end(self, exchange: str, symbol: str, window: str) -> int:
        """The end of the series' newest window of this length; NotFound if none was written."""
        ends = self.ends(exchange, symbol)
        series = series_key(exchange, symbol)
        if not ends:
            raise NotFound(f"no candles of {series}")
        if window not in ends:
            raise NotFound(f"no {window} candles of {series}; it has {', '.join(sorted(ends))}")
        return ends[window]

    def page(
        self,
        series: tuple[str, str, str],
        range_ms: tuple[int, int],
        limit: int,
        latest_end_ms: int,
        watermark_ms: int,
    ) -> Page:
        """The windows of (exchange, symbol, window) of one page from `range_ms[0]` (a window
        start), oldest first, with their closed flag."""
        exchange, symbol, window = series
        start_ms, end_ms = range_ms
        until_ms = page_end(start_ms, end_ms, window_ms(window), limit)
        documents = self.collection.find(
            id_range(exchange, symbol, window, start_ms, until_ms), {"_id": 0, INPUT_OFFSETS: 0}
        )
        newest = self.newest_event_ms(exchange, symbol, window, latest_end_ms)
        candles = sorted(
            (
                candle(doc, is_closed(epoch_ms(doc["window_end"]), newest, watermark_ms))
                for doc in documents
            ),
            key=lambda shown: int(shown["start_ms"]),
        )
        return Page(candles, until_ms if until_ms < end_ms else None)


def parse_time(text: str) -> int:
    """Epoch ms from epoch ms digits or an ISO 8601 time (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return epoch_ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
