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

Two steps (spark_jobs/trade_dedupe.py runs both in one task and adds each series' ids):
`checked_trades` (parse, rules; each valid trade with its identity `exchange:SYMBOL:trade_id`) and
`partials_of`. Within one task, copies of a trade count once in the partials.

A record that breaks a rule becomes a dead-letter row with its reason, as candles do; a block
Arrow cannot parse whole is parsed line by line, so one bad record costs only its own line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_pipeline.formats import trade_message as message
from crypto_pipeline.formats.candle_message import EXCHANGE, FILE_EXCHANGE
from crypto_pipeline.formats.window_values import SERIES_SEPARATOR, split_series
from spark_jobs.sorted_runs import run_bounds
from spark_jobs.trade_records import TRADE_FIELDS, parse_messages, reject_reasons

SECOND_MS = 1000
# A trade id that is a number: no leading zeros, and it fits an int64.
NUMERIC_ID = r"^(?:0|[1-9][0-9]{0,17})\z"
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
# Between the checks and the partials: a valid trade (kind "trade") or a dead letter, with the key
# its copies share.
CHECKED = pa.schema([("kind", pa.string()), ("copy_key", pa.string()), *TRADE_FIELDS, *DEAD_FIELDS])
SPARK_TYPES = {
    pa.string(): "STRING",
    pa.int64(): "BIGINT",
    pa.int32(): "INT",
    pa.float64(): "DOUBLE",
    pa.binary(): "BINARY",
}


def spark_ddl(schema: pa.Schema) -> str:
    """What Spark's mapInArrow is told its output is."""
    return ", ".join(f"`{field.name}` {SPARK_TYPES[field.type]}" for field in schema)


OUTPUT_DDL = spark_ddl(OUTPUT)
CHECKED_DDL = spark_ddl(CHECKED)


def _id_order(ids: pa.Array) -> list[np.ndarray]:
    """lexsort keys (least significant first) that order trade ids as numbers when every id is
    a number without leading zeros, else by (length, text)."""
    numeric = pc.all(pc.match_substring_regex(ids, NUMERIC_ID)).as_py()
    if numeric:
        return [pc.cast(ids, pa.int64()).to_numpy()]
    return [ids.to_numpy(zero_copy_only=False), pc.utf8_length(ids).to_numpy()]


def checked_trades(records: pa.RecordBatch, future_ms: int) -> pa.Table:
    """One task's records (value, partition, offset, timestamp) -> its valid trades and dead
    letters (CHECKED), each with the key its copies share: a valid trade's `exchange:SYMBOL:
    trade_id` (whatever its Kafka key says), a dead letter's own. Copies are dropped after this,
    so a bad record never takes the place of a good trade with the same id."""
    values = records.column("value").cast(pa.binary())
    fields = parse_messages(values)
    produced_ms = pc.cast(records.column("timestamp"), pa.timestamp("ms")).cast(pa.int64())
    reasons = reject_reasons(fields, produced_ms.fill_null(0).to_numpy(), future_ms)
    bad = np.flatnonzero(reasons != None)  # noqa: E711 (element-wise)
    partition = records.column("partition").take(bad).cast(pa.int32())
    offset = records.column("offset").take(bad).cast(pa.int64())
    dead = pa.table(
        {
            "kind": pa.array(["dead"] * len(bad), pa.string()),
            # Not a trade key: `#` is in no exchange name.
            "copy_key": pa.array(
                [
                    f"#{p}-{o}"
                    for p, o in zip(partition.to_pylist(), offset.to_pylist(), strict=True)
                ],
                pa.string(),
            ),
            # The few bad records' text, whatever their bytes (not UTF-8 is a reason too).
            "raw": pa.array(
                [(raw or b"").decode("utf-8", "replace") for raw in values.take(bad).to_pylist()],
                pa.string(),
            ),
            "reason": pa.array(reasons[bad].tolist(), pa.string()),
            "partition": partition,
            "offset": offset,
        }
    )
    good = fields.filter(pa.array(reasons == None))  # noqa: E711
    exchange = pc.fill_null(good.column(EXCHANGE), FILE_EXCHANGE)
    trades = good.set_column(good.schema.get_field_index(EXCHANGE), EXCHANGE, exchange)
    trades = trades.append_column(
        "copy_key",
        pc.binary_join_element_wise(
            exchange, good.column("symbol"), good.column(message.TRADE_ID), SERIES_SEPARATOR
        ),
    ).append_column("kind", pa.array(["trade"] * good.num_rows, pa.string()))
    return (
        pa.concat_tables([trades, dead], promote_options="default")
        .select(CHECKED.names)
        .cast(CHECKED)
    )


def partials_of(checked: pa.Table) -> pa.Table:
    """Checked trades and dead letters (CHECKED) -> the trades' partials and the dead letters
    (OUTPUT)."""
    kind = checked.column("kind")
    trades = checked.filter(pc.equal(kind, "trade")).select(TRADE_FIELDS.names).cast(TRADE_FIELDS)
    dead = checked.filter(pc.equal(kind, "dead")).select(["kind", *(n for n, _ in DEAD_FIELDS)])
    return (
        pa.concat_tables([_partials(trades), dead], promote_options="default")
        .select(OUTPUT.names)
        .cast(OUTPUT)
    )


def second_partials(records: pa.RecordBatch, future_ms: int) -> pa.Table:
    """One task's records -> its partials and dead letters (OUTPUT), copies within it once."""
    return partials_of(checked_trades(records, future_ms))


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


def per_task(step: Any) -> Any:
    """`step` (one Arrow table in, one out) as the function Spark's mapInArrow runs per task."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tables = [batch for batch in batches if batch.num_rows]
        if tables:
            yield from step(pa.Table.from_batches(tables).combine_chunks()).to_batches()

    return run


def task_checked_trades(future_ms: int) -> Any:
    """mapInArrow: the trades topic's records -> CHECKED."""
    return per_task(lambda table: checked_trades(table.to_batches()[0], future_ms))


def task_partials_of() -> Any:
    """mapInArrow: CHECKED rows (copies dropped in between) -> OUTPUT."""
    return per_task(partials_of)


def task_partials(future_ms: int) -> Any:
    """mapInArrow: the trades topic's records -> OUTPUT, copies within a task once."""
    return per_task(lambda table: second_partials(table.to_batches()[0], future_ms))


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
