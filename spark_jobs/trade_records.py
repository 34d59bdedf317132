"""The trades topic's records read on Spark's executors: each message's fields parsed with
Arrow's C++ JSON reader (line by line with the json module when a block does not parse, so one
bad record costs only its own line), and the shared trade rules (crypto_pipeline/candle_rules.py)
applied as array operations, in the replay's order, so a bad record gets the reason the replay
would give it."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from crypto_pipeline import candle_rules as rules
from crypto_pipeline.formats import trade_message as message
from crypto_pipeline.formats.candle_message import EXCHANGE

TRADE_FIELDS = pa.schema(
    [
        (message.TIME_MS, pa.int64()),
        ("symbol", pa.string()),
        (message.TRADE_ID, pa.string()),
        (message.PRICE, pa.float64()),
        (message.QUANTITY, pa.float64()),
        (message.SIDE, pa.string()),
        (EXCHANGE, pa.string()),
    ]
)
NOT_A_TRADE = "not a JSON trade"
# One output row is a partial (kind "partial") or a dead letter (kind "dead").


def parse_messages(values: pa.Array) -> pa.Table:
    """The messages' fields, one row per message (null fields where a message lacks one or is
    no JSON object); Arrow's reader for the block, the json module line by line if it fails.
    Each message is read as the member of a one-line object (`{"r":<message>}`), so a message
    that is not exactly one JSON value on one line (a line end, two objects, nothing, a null
    record) makes the block fail rather than shift the rows."""
    count = len(values)
    lines = pc.binary_join_element_wise(
        pa.array([b'{"r":'] * count, pa.binary()),
        pc.fill_null(values, b"null"),
        pa.array([b"}\n"] * count, pa.binary()),
        b"",
    )
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    data = lines.buffers()[2][int(offsets[lines.offset]) : int(offsets[lines.offset + len(lines)])]
    options = pa_json.ParseOptions(
        explicit_schema=pa.schema([("r", pa.struct(TRADE_FIELDS))]),
        unexpected_field_behavior="ignore",
    )
    try:
        # One thread: Spark runs a task per core already.
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=options,
        )
        if table.num_rows == count:
            messages = table.column("r").combine_chunks()
            return pa.Table.from_arrays(messages.flatten(), schema=TRADE_FIELDS)
    except pa.ArrowInvalid:
        pass
    return pa.Table.from_pylist([_parse_one(value) for value in values.to_pylist()], TRADE_FIELDS)


def _parse_one(value: bytes | None) -> dict[str, Any]:
    try:
        fields = json.loads(value or b"")
    except ValueError:
        return {}
    if not isinstance(fields, dict):
        return {}
    parsed: dict[str, Any] = {}
    for field in TRADE_FIELDS:
        item: Any = fields.get(field.name)
        if pa.types.is_string(field.type):
            parsed[field.name] = item if isinstance(item, str) else None
        elif pa.types.is_integer(field.type):
            whole = isinstance(item, int) and not isinstance(item, bool)
            parsed[field.name] = item if whole and -(2**63) <= item < 2**63 else None
        elif isinstance(item, int | float) and not isinstance(item, bool):
            try:
                parsed[field.name] = float(item)
            except OverflowError:  # an integer beyond floats: infinite, as Arrow reads it
                parsed[field.name] = math.inf
        else:
            parsed[field.name] = None
    return parsed


def _matches(texts: pa.ChunkedArray | pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(texts, f"^(?:{pattern})\\z"), False).to_numpy(
        zero_copy_only=False
    )


def _number_reason(values: np.ndarray, field: str) -> list[tuple[np.ndarray, str]]:
    with np.errstate(invalid="ignore"):
        return [
            (~np.isfinite(values), rules.not_finite(field)),
            (values > rules.MAX_MAGNITUDE, rules.too_large(field)),
            (values <= 0, f"{field} is not positive"),
        ]


def reject_reasons(fields: pa.Table, produced_ms: np.ndarray, future_ms: int) -> np.ndarray:
    """Each message's first broken rule (None: a valid trade), in the replay's order
    (crypto_pipeline/replay/trade_rows.validate): `trade_reason`, the exchange, the side, then
    the future rule against when the record was produced."""
    rows = fields.num_rows
    missing = {
        name: fields.column(name).is_null().to_numpy(zero_copy_only=False)
        for name in message.REQUIRED_FIELDS
    }
    time_ms = fields.column(message.TIME_MS).fill_null(0).to_numpy()
    price = fields.column(message.PRICE).fill_null(np.nan).to_numpy()
    quantity = fields.column(message.QUANTITY).fill_null(np.nan).to_numpy()
    exchange = fields.column(EXCHANGE)
    side = fields.column(message.SIDE)
    checks: list[tuple[np.ndarray, str]] = [
        (np.logical_and.reduce(list(missing.values())), NOT_A_TRADE),
        *((missing[name], f"missing or mistyped {name}") for name in message.REQUIRED_FIELDS),
        (~_matches(fields.column("symbol"), rules.SYMBOL_PATTERN), rules.BAD_SYMBOL),
        (~_matches(fields.column(message.TRADE_ID), rules.TRADE_ID_PATTERN), rules.BAD_TRADE_ID),
        (
            (time_ms < rules.MIN_EVENT_MS) | (time_ms >= rules.MAX_EVENT_MS),
            rules.EVENT_TIME_OUT_OF_RANGE,
        ),
        *_number_reason(price, "price"),
        *_number_reason(quantity, "quantity"),
        (
            exchange.is_valid().to_numpy(zero_copy_only=False)
            & ~_matches(exchange, rules.EXCHANGE_PATTERN),
            rules.BAD_EXCHANGE,
        ),
        (
            side.is_valid().to_numpy(zero_copy_only=False)
            & ~pc.fill_null(pc.is_in(side, pa.array(rules.TAKER_SIDES)), False).to_numpy(
                zero_copy_only=False
            ),
            rules.BAD_SIDE,
        ),
        # Last, as the replay checks it after a line's other rules (`beyond_clock`).
        (time_ms > produced_ms + future_ms, rules.FUTURE_EVENT_TIME),
    ]
    reason = np.full(rows, None, dtype=object)
    for broken, text in reversed(checks):  # the first rule broken wins
        reason[broken] = text
    return reason
