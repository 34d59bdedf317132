"""The market-data topic's message, both sides: a candle as compact JSON, keyed by its symbol.

Encoded by the replay's producers (`Candle.to_json`, its hot path); decoded by the Spark job with
the schema derived from FIELDS (`SPARK_SCHEMA`), and by the readers outside Spark (checks,
resume, benchmarks) with `decode`. Besides the candle, a message carries its lineage: for a file,
its path, a digest of its content and the line (`file_lineage`, `source_line`); for a live feed,
the exchange, the connection and the receive time, and whether the candle is closed (`to_live_json`:
before it closes, each message revises the same candle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple


class Field(NamedTuple):
    name: str
    spark_type: str  # as Spark's DDL writes it


# A candle's values, in the order every candle table of the project uses.
CANDLE_VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "trades")
# Numbers as doubles, `trades` too: NaN, infinities and fractions are seen (and rejected), not
# nulled.
FIELDS = (
    Field("symbol", "STRING"),
    Field("event_time_ms", "BIGINT"),
    *(Field(name, "DOUBLE") for name in CANDLE_VALUES),
    # Where the candle was traded; a message without it (a file's) is from FILE_EXCHANGE.
    Field("exchange", "STRING"),
)
FIELD_NAMES = tuple(field.name for field in FIELDS)
REQUIRED_FIELDS = ("symbol", "event_time_ms", "open", "high", "low", "close", "volume")
# What Spark's from_json reads of a message (the rest of the lineage is not needed there).
SPARK_SCHEMA = ", ".join(f"`{field.name}` {field.spark_type}" for field in FIELDS)
SOURCE_FILE = "source_file"
SOURCE_DIGEST = "source_digest"
SOURCE_LINE = "source_line"
EXCHANGE = "exchange"
# The exchange of every candle replayed from a file: one named source, so a file's BTCUSDT and an
# exchange's never share a window.
FILE_EXCHANGE = "file"
CLOSED = "closed"
CONNECTION = "connection"  # the live connection (or "rest") a candle came through
RECEIVED_MS = "received_ms"


class Candle(NamedTuple):
    symbol: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None
    trades: int | None

    @property
    def event_ms(self) -> int:
        return self.open_time_ms

    def key(self) -> bytes:
        """One partition per symbol keeps its candles in order."""
        return self.symbol.encode()

    def to_json(self, lineage: str, line: int, shift_ms: int = 0) -> bytes:
        """The message value of a valid candle: compact JSON with typed numbers, the event time
        in epoch ms and the lineage. Built directly (the rules leave finite numbers, whose
        `repr` is valid JSON, and symbols of A-Z 0-9 _ - that need no escaping): this is the
        replay's hot path. `lineage` is the file's part of it, already JSON (`file_lineage`)."""
        return (
            f'{{"symbol":"{self.symbol}","event_time_ms":{self.open_time_ms + shift_ms},'
            f'"open":{self.open!r},"high":{self.high!r},"low":{self.low!r},'
            f'"close":{self.close!r},"volume":{self.volume!r},'
            f'"quote_volume":{_json_number(self.quote_volume)},'
            f'"trades":{_json_number(self.trades)},'
            f'{lineage},"{SOURCE_LINE}":{line}}}'
        ).encode()

    def to_live_json(self, exchange: str, closed: bool, connection: str, received_ms: int) -> bytes:
        """The message value of a valid candle from a live feed, built directly as `to_json` is
        (exchange and connection names are plain identifiers, checked by the feed)."""
        return (
            f'{{"symbol":"{self.symbol}","event_time_ms":{self.open_time_ms},'
            f'"open":{self.open!r},"high":{self.high!r},"low":{self.low!r},'
            f'"close":{self.close!r},"volume":{self.volume!r},'
            f'"quote_volume":{_json_number(self.quote_volume)},'
            f'"trades":{_json_number(self.trades)},"{EXCHANGE}":"{exchange}",'
            f'"{CLOSED}":{"true" if closed else "false"},"{CONNECTION}":"{connection}",'
            f'"{RECEIVED_MS}":{received_ms}}}'
        ).encode()


def _json_number(value: float | int | None) -> str:
    return "null" if value is None else repr(value)


def file_lineage(path: Path, digest: str) -> str:
    """What every message of a file says of it, as JSON members: its path and a digest of its
    content (a file changed at the same path is another source)."""
    return f'"{SOURCE_FILE}":{json.dumps(str(path))},{digest_member(digest)}'


def digest_member(digest: str) -> str:
    """The JSON member naming the content's digest, as compact JSON writes it (messages and dead
    letters of a file hold it verbatim)."""
    return f'"{SOURCE_DIGEST}":"{digest}"'


def decode(value: bytes) -> dict[str, Any]:
    """A message's members (candle and lineage)."""
    message: dict[str, Any] = json.loads(value)
    return message
