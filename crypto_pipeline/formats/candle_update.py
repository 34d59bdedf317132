"""The candles topic's message (`<topic>.candles`), both sides: written by the Spark job's third
sink for every window it writes to MongoDB, read by the candles API's live push and by anyone who
subscribes instead of polling a database.

Key: the window's id (`exchange|SYMBOL|window|start ms`, so log compaction keeps each window's
latest version). Value: the window's MongoDB document in MongoDB's relaxed Extended JSON (dates
as `{"$date": "...Z"}`), which `bson.json_util` or any MongoDB tool reads back as the same
document."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from crypto_pipeline.clients import Document

JSON_OPTIONS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True, tzinfo=UTC)
DATES = ("window_start", "window_end")


def _date(moment: datetime) -> dict[str, str]:
    """A date as relaxed Extended JSON writes it: UTC, milliseconds only when there are some."""
    utc = (moment.astimezone(UTC) if moment.tzinfo else moment).replace(tzinfo=None)
    text = utc.isoformat(timespec="milliseconds")
    return {"$date": (text[:-4] if text.endswith(".000") else text) + "Z"}


def encode(document: Document) -> tuple[bytes, bytes]:
    """The message (key, value) of a window's document. Its values are strings, numbers, null,
    an offsets mapping and the two dates: plain JSON but for the dates (json_util.dumps writes
    the same in 5 times the time)."""
    value = {**document, **{name: _date(document[name]) for name in DATES}}
    return str(document["_id"]).encode(), json.dumps(value, allow_nan=False).encode()


def decode(value: bytes) -> dict[str, Any]:
    """The window's document (dates as UTC datetimes)."""
    document: dict[str, Any] = json_util.loads(value, json_options=JSON_OPTIONS)
    return document
