"""Trades -> one-second partial candles, computed on Spark's executors (issue 23): the part of
building candles from trades whose work grows with the trades, so it grows with the executors.

Each task of a micro-batch reads its Kafka records as Arrow (`mapInArrow`), parses their JSON
with Arrow's C++ reader, applies the shared trade rules (crypto_pipeline/candle_rules.py) as
array operations, counts each distinct trade once, and reduces them with numpy to one row per
(exchange, symbol, second): what reaches the driver grows with the seconds that have trades, not
with the trades. Measured against Spark SQL doing the same (`from_json`, then `groupBy` with
`min_by`/`max_by`) in bench/results.md: the SQL plan reached about a third of this rate.

A partial holds what windows of any length are merged from: open and close, the first and last
trade by (event time, trade id) with their times and ids so partials merge; high, low, volume,
quote volume (price x quantity), trades, taker-buy and taker-sell volume. Trade ids order as
numbers when they are numbers (by length, then text), in a fixed order otherwise (Bybit's UUIDs).

Duplicates: a trade's Kafka key is exchange:symbol:trade_id, so its copies are in one Kafka
partition; a task reads one partition's range, so copies within a micro-batch meet in one task
and count once. Copies in different micro-batches are the merge's to handle (next step).

A record that breaks a rule becomes a dead-letter row with its reason, as candles do; a block
Arrow cannot parse whole is parsed line by line, so one bad record costs only its own line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from crypto_pipeline import candle_rules as rules
from crypto_pipeline.formats import trade_message as message
from crypto_pipeline.formats.candle_message import EXCHANGE, FILE_EXCHANGE
from crypto_pipeline.formats.window_values import SERIES_SEPARATOR, split_series
from spark_jobs.sorted_runs import run_bounds

SECOND_MS = 1000
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
PARTIAL_FIELDS = (
    ("exchange", pa.string()),
    ("symbol", pa.string()),
    ("second_ms", pa.int64()),
    ("open", pa.float64()),
    ("high", pa.float64()),
    ("low", pa.float64()),
    ("close", pa.float64()),
    ("volume", pa.float64()),
    ("quote_volume", pa.float64()),
    ("trades", pa.int64()),
    ("taker_buy_volume", pa.float64()),
    ("taker_sell_volume", pa.float64()),
    ("first_ms", pa.int64()),
    ("first_id", pa.string()),
    ("last_ms", pa.int64()),
    ("last_id", pa.string()),
)
DEAD_FIELDS = (
    ("raw", pa.string()),
    ("reason", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
)
OUTPUT = pa.schema([("kind", pa.string()), *PARTIAL_FIELDS, *DEAD_FIELDS])
# What Spark's mapInArrow is told the output is: OUTPUT in Spark's DDL.
SPARK_TYPES = {
    pa.string(): "STRING",
    pa.int64(): "BIGINT",
    pa.int32(): "INT",
    pa.float64(): "DOUBLE",
}
OUTPUT_DDL = ", ".join(f"`{field.name}` {SPARK_TYPES[field.type]}" for field in OUTPUT)


def _parse(values: pa.Array) -> pa.Table:
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


def _id_order(ids: pa.Array) -> list[np.ndarray]:
    """lexsort keys (least significant first) that order trade ids as numbers when every id is
    a number without leading zeros, else by (length, text)."""
    numeric = pc.all(pc.match_substring_regex(ids, r"^(?:0|[1-9][0-9]{0,17})\z")).as_py()
    if numeric:
        return [pc.cast(ids, pa.int64()).to_numpy()]
    return [ids.to_numpy(zero_copy_only=False), pc.utf8_length(ids).to_numpy()]


def second_partials(records: pa.RecordBatch, future_ms: int) -> pa.Table:
    """One micro-batch task's records (value, partition, offset, timestamp) -> its partials and
    dead letters (OUTPUT)."""
    values = records.column("value").cast(pa.binary())
    fields = _parse(values)
    produced_ms = pc.cast(records.column("timestamp"), pa.timestamp("ms")).cast(pa.int64())
    reasons = reject_reasons(fields, produced_ms.fill_null(0).to_numpy(), future_ms)
    if "key" in records.schema.names:  # the job's records (the step alone may run without)
        mismatch = _key_mismatch(fields, records.column("key"))
        reasons[(reasons == None) & mismatch] = rules.TRADE_KEY_MISMATCH  # noqa: E711
    bad = np.flatnonzero(reasons != None)  # noqa: E711 (element-wise)
    dead = pa.table(
        {
            "kind": pa.array(["dead"] * len(bad), pa.string()),
            # The few bad records' text, whatever their bytes (not UTF-8 is a reason too).
            "raw": pa.array(
                [(raw or b"").decode("utf-8", "replace") for raw in values.take(bad).to_pylist()],
                pa.string(),
            ),
            "reason": pa.array(reasons[bad].tolist(), pa.string()),
            "partition": records.column("partition").take(bad).cast(pa.int32()),
            "offset": records.column("offset").take(bad).cast(pa.int64()),
        }
    )
    good = fields.filter(pa.array(reasons == None))  # noqa: E711
    return (
        pa.concat_tables([_partials(good), dead], promote_options="default")
        .select(OUTPUT.names)
        .cast(OUTPUT)
    )


def _key_mismatch(fields: pa.Table, keys: pa.Array) -> np.ndarray:
    """Records whose Kafka key is not their trade's `Trade.key()`: the job counts a trade once
    per key, so a key that named another trade could hide it."""
    exchange = pc.fill_null(fields.column(EXCHANGE), FILE_EXCHANGE)
    expected = pc.binary_join_element_wise(
        exchange, fields.column("symbol"), fields.column(message.TRADE_ID), SERIES_SEPARATOR
    )
    same = pc.equal(keys.cast(pa.binary()), expected.cast(pa.binary()))
    return ~pc.fill_null(same, False).to_numpy(zero_copy_only=False)


def _partials(trades: pa.Table) -> pa.Table:
    if trades.num_rows == 0:
        return OUTPUT.empty_table().select(["kind", *(name for name, _ in PARTIAL_FIELDS)])
    exchange = pc.fill_null(trades.column(EXCHANGE), FILE_EXCHANGE).combine_chunks()
    symbol = trades.column("symbol").combine_chunks()
    series = pc.binary_join_element_wise(exchange, symbol, SERIES_SEPARATOR).dictionary_encode()
    codes = series.indices.to_numpy()
    ids = trades.column(message.TRADE_ID).combine_chunks()
    time_ms = trades.column(message.TIME_MS).to_numpy()
    id_keys = _id_order(ids)
    # Each distinct trade (series, id) once, the copy of the earliest event time (copies of a key
    # are one trade; `replay --loop`, which would shift a trade's time, refuses trade files).
    by_trade = np.lexsort((time_ms, *id_keys, codes))
    kept = by_trade[run_bounds(*(key[by_trade] for key in (codes, *id_keys)))[0]]
    # Then in (series, second, time, id) order, each run of a second reduced at once.
    second = time_ms - time_ms % SECOND_MS
    order = kept[np.lexsort((*(key[kept] for key in id_keys), time_ms[kept], codes[kept]))]
    code, sec, time_sorted = codes[order], second[order], time_ms[order]
    starts, ends = run_bounds(code, sec)
    price = trades.column(message.PRICE).to_numpy()[order]
    quantity = trades.column(message.QUANTITY).to_numpy()[order]
    side = trades.column(message.SIDE).fill_null("").to_numpy(zero_copy_only=False)[order]
    names = series.dictionary.to_numpy(zero_copy_only=False)[code[starts]]
    exchange_symbol = [split_series(name) for name in names.tolist()]
    ordered_ids = ids.take(pa.array(order))
    return pa.table(
        {
            "kind": pa.array(["partial"] * len(starts), pa.string()),
            "exchange": [pair[0] for pair in exchange_symbol],
            "symbol": [pair[1] for pair in exchange_symbol],
            "second_ms": sec[starts],
            "open": price[starts],
            "high": np.maximum.reduceat(price, starts),
            "low": np.minimum.reduceat(price, starts),
            "close": price[ends],
            "volume": np.add.reduceat(quantity, starts),
            "quote_volume": np.add.reduceat(price * quantity, starts),
            "trades": (ends - starts + 1).astype(np.int64),
            "taker_buy_volume": np.add.reduceat(np.where(side == "buy", quantity, 0.0), starts),
            "taker_sell_volume": np.add.reduceat(np.where(side == "sell", quantity, 0.0), starts),
            "first_ms": time_sorted[starts],
            "first_id": ordered_ids.take(pa.array(starts)),
            "last_ms": time_sorted[ends],
            "last_id": ordered_ids.take(pa.array(ends)),
        }
    )


def task_partials(future_ms: int) -> Any:
    """The function Spark's mapInArrow runs in each task, for records of the trades topic."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tables = [batch for batch in batches if batch.num_rows]
        if tables:
            records = pa.Table.from_batches(tables).combine_chunks().to_batches()[0]
            yield from second_partials(records, future_ms).to_batches()

    return run


def merge_partials(partials: pa.Table, window_ms: int) -> pa.Table:
    """Partials (of any tasks; one second may have several) merged into windows of `window_ms`:
    open and close from the partial holding the first and the last trade by (time, id), ids
    compared by (length, text), which is numeric order for numbers."""
    if partials.num_rows == 0:
        return partials.select([name for name, _ in PARTIAL_FIELDS])
    series = pc.binary_join_element_wise(
        partials.column("exchange"), partials.column("symbol"), SERIES_SEPARATOR
    ).combine_chunks()
    codes = series.dictionary_encode().indices.to_numpy()
    second = partials.column("second_ms").to_numpy()
    window = second - second % window_ms
    column = {
        name: partials.column(name).to_numpy(zero_copy_only=False) for name, _ in PARTIAL_FIELDS
    }
    first_len = pc.utf8_length(partials.column("first_id")).to_numpy()
    last_len = pc.utf8_length(partials.column("last_id")).to_numpy()
    by_open = np.lexsort((column["first_id"], first_len, column["first_ms"], window, codes))
    by_close = np.lexsort((column["last_id"], last_len, column["last_ms"], window, codes))
    start_ms = window[by_open]
    starts, ends = run_bounds(codes[by_open], start_ms)
    opened, closed = by_open[starts], by_close[ends]  # both orders group the same runs

    def total(name: str) -> np.ndarray:
        return np.add.reduceat(column[name][by_open], starts)

    return pa.table(
        {
            "exchange": column["exchange"][opened],
            "symbol": column["symbol"][opened],
            "second_ms": start_ms[starts],
            "open": column["open"][opened],
            "high": np.maximum.reduceat(column["high"][by_open], starts),
            "low": np.minimum.reduceat(column["low"][by_open], starts),
            "close": column["close"][closed],
            "volume": total("volume"),
            "quote_volume": total("quote_volume"),
            "trades": total("trades"),
            "taker_buy_volume": total("taker_buy_volume"),
            "taker_sell_volume": total("taker_sell_volume"),
            "first_ms": column["first_ms"][opened],
            "first_id": column["first_id"][opened],
            "last_ms": column["last_ms"][closed],
            "last_id": column["last_id"][closed],
        }
    )
