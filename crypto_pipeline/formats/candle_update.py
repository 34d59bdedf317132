"""The candles topic's message (`<topic>.candles`), both sides: written by the Spark job's third
sink for every window it writes to MongoDB, read by the candles API's live push and by anyone who
subscribes instead of polling a database.

Key: the window's id (`exchange|SYMBOL|window|start ms`, so log compaction keeps each window's
latest version). Value: the window's MongoDB document in MongoDB's relaxed Extended JSON (dates
as `{"$date": "...Z"}`), decoded back to the same document."""

from __future__ import annotations

from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from crypto_pipeline.clients import Document

# Dates as ISO 8601 UTC with milliseconds, as `mongoexport` writes them.
JSON_OPTIONS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True)


def encode(document: Document) -> tuple[bytes, bytes]:
    """The message (key, value) of a window's document."""
    return str(document["_id"]).encode(), json_util.dumps(
        document, json_options=JSON_OPTIONS
    ).encode()


def decode(value: bytes) -> dict[str, Any]:
    """The window's document (dates as timezone-aware datetimes)."""
    document: dict[str, Any] = json_util.loads(value, json_options=JSON_OPTIONS)
    return document
