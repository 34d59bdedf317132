"""The MongoDB document of a window, both sides: written by the Spark job's sink and the
backfill, read back by the checks, the tests and the benchmarks.

`_id = exchange|SYMBOL|window|window start ms`; exchange and symbol; window start and end as
dates; the aggregate values (null where undefined); the version of the window's input
(`input_offsets`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from crypto_pipeline.clients import Document
from crypto_pipeline.formats.window_values import (
    INPUT_OFFSETS,
    AggregateKey,
    epoch_ms,
    stored_fields,
    window_id,
)


def as_date(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def encode(columns: dict[str, list[Any]]) -> list[Document]:
    """The documents of windows given as columns of plain values (key fields, `window_end_ms`,
    AGGREGATE_FIELDS and INPUT_OFFSETS; None for null)."""
    documents, fields = [], stored_fields(columns)
    for index, symbol in enumerate(columns["symbol"]):
        start_ms = columns["window_start_ms"][index]
        exchange = columns["exchange"][index]
        document: Document = {
            "_id": window_id(exchange, symbol, columns["window"][index], start_ms),
            "exchange": exchange,
            "symbol": symbol,
            "window": columns["window"][index],
            "window_start": as_date(start_ms),
            "window_end": as_date(columns["window_end_ms"][index]),
        }
        for name in fields:
            document[name] = columns[name][index]
        document[INPUT_OFFSETS] = columns[INPUT_OFFSETS][index]
        documents.append(document)
    return documents


def decode(document: Document) -> tuple[AggregateKey, dict[str, Any]]:
    """A document's key and aggregate values."""
    key = (
        document["exchange"],
        document["symbol"],
        document["window"],
        epoch_ms(document["window_start"]),
    )
    return key, {name: document.get(name) for name in stored_fields(document)}
