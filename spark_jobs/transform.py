"""Pure transformations: raw Kafka records -> parsed and validated -> one stateful step per symbol
that yields the OHLCV aggregates of every configured window length, the late candles and the dead
letters, all from one read of the topic.

`parse_messages` works the same on a batch DataFrame and a stream; `ohlcv_stream` is the streaming
step (Spark's `applyInPandasWithState`, keyed by symbol, the state and the window arithmetic in
spark_jobs/open_windows.py); the `*_of` functions split its output inside `foreachBatch`. Nothing
here reads or writes anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout
from pyspark.sql.types import (
    BinaryType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from spark_jobs.config import interval_ms, window_ms
from spark_jobs.open_windows import (
    AGGREGATE_COLUMNS,
    CANDLE_COLUMNS,
    SymbolState,
    WindowLength,
    advance,
    decode_candles,
    encode_candles,
)

MESSAGE_SCHEMA = StructType(
    [
        StructField("symbol", StringType()),
        StructField("event_time_ms", LongType()),
        StructField("open", DoubleType()),
        StructField("high", DoubleType()),
        StructField("low", DoubleType()),
        StructField("close", DoubleType()),
        StructField("volume", DoubleType()),
        StructField("quote_volume", DoubleType()),
        StructField("trades", LongType()),
        StructField("source_file", StringType()),
        StructField("source_line", LongType()),
    ]
)
REQUIRED_FIELDS = ("symbol", "event_time_ms", "open", "high", "low", "close", "volume")


def _reject_reason(m: Column) -> Column:
    """Why a message is not a valid candle, or null when it is."""
    no_fields = F.coalesce(*[m[name].cast("string") for name in REQUIRED_FIELDS]).isNull()
    reason = F.when(m.isNull() | no_fields, F.lit("not a JSON candle"))
    for name in REQUIRED_FIELDS:
        reason = reason.when(m[name].isNull(), F.lit(f"missing or mistyped {name}"))
    return (
        reason.when(m.high < m.low, F.lit("high < low"))
        .when((m.open < m.low) | (m.open > m.high), F.lit("open outside [low, high]"))
        .when((m.close < m.low) | (m.close > m.high), F.lit("close outside [low, high]"))
        .when(m.volume < 0, F.lit("negative volume"))
    )


def parse_messages(raw: DataFrame) -> DataFrame:
    """Kafka records (value, topic, partition, offset, timestamp) -> one row per record with the
    decoded message fields and `reject_reason` (null for a valid candle)."""
    text = F.col("value").cast("string")
    # FAILFAST would stop the stream on one bad record; PERMISSIVE gives nulls we turn into reasons.
    message = F.from_json(text, MESSAGE_SCHEMA, {"mode": "PERMISSIVE"})
    return raw.select(
        text.alias("raw_value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        message.alias("m"),
    ).select(
        "raw_value",
        "topic",
        "partition",
        "offset",
        "kafka_timestamp",
        *[F.col(f"m.{name}").alias(name) for name in MESSAGE_SCHEMA.fieldNames()],
        _reject_reason(F.col("m")).alias("reject_reason"),
    )


def dead_letter_key(parsed: DataFrame) -> Column:
    """Deterministic (topic-partition-offset), so a retried batch is recognisable."""
    return F.concat_ws("-", parsed["topic"], parsed["partition"], parsed["offset"])


def dead_letter_value(parsed: DataFrame) -> Column:
    """The raw record and why it was rejected, as JSON."""
    return F.to_json(
        F.struct(
            parsed["raw_value"].alias("raw"),
            parsed["reject_reason"].alias("reason"),
            parsed["topic"],
            parsed["partition"],
            parsed["offset"],
            F.lit("spark").alias("stage"),
        )
    )


# The group of the invalid records (no valid candle has an empty symbol).
DEAD_LETTERS = ""
KIND_WINDOW, KIND_DEAD_LETTER, KIND_SUMMARY = "window", "dead_letter", "summary"

STATE_SCHEMA = StructType(
    [
        StructField("watermark_ms", LongType()),
        StructField("max_event_ms", LongType()),
        StructField("candles", BinaryType()),  # Arrow IPC (arrays do not round-trip to Python)
    ]
)
_LONG = ("window_start_ms", "window_end_ms", "trades", "rows", "first_event_ms", "last_event_ms")
OUTPUT_SCHEMA = StructType(
    [
        StructField("kind", StringType()),
        StructField("symbol", StringType()),
        StructField("window", StringType()),
        *[
            StructField(name, LongType() if name in _LONG else DoubleType())
            for name in AGGREGATE_COLUMNS[1:]
        ],
        StructField("dead_letter_key", StringType()),
        StructField("dead_letter_value", StringType()),
        # Summary, one row per group and batch: what the batch did and what the state holds.
        StructField("windows_emitted", LongType()),
        StructField("dead_letters", LongType()),
        StructField("late_rows", LongType()),
        StructField("late_first_ms", LongType()),
        StructField("late_last_ms", LongType()),
        StructField("state_candles", LongType()),
        StructField("state_bytes", LongType()),
    ]
)
OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.fieldNames())
ALL_NULL_CONCAT = "The behavior of DataFrame concatenation with empty or all-NA entries"
_LONG_OUTPUTS = {f.name for f in OUTPUT_SCHEMA.fields if isinstance(f.dataType, LongType)}


def keyed_records(parsed: DataFrame) -> DataFrame:
    """What the stateful step needs of each record: its group (the symbol, or DEAD_LETTERS), the
    candle of a valid record, the dead letter of an invalid one."""
    valid = parsed["reject_reason"].isNull()
    return parsed.select(
        F.when(valid, parsed["symbol"]).otherwise(F.lit(DEAD_LETTERS)).alias("group"),
        *[parsed[name] for name in CANDLE_COLUMNS],
        F.when(~valid, dead_letter_key(parsed)).alias("dead_letter_key"),
        F.when(~valid, dead_letter_value(parsed)).alias("dead_letter_value"),
    )


def ohlcv_stream(parsed: DataFrame, windows: Sequence[str], watermark: str) -> DataFrame:
    """One stateful step per symbol over every window length: OUTPUT_SCHEMA rows of kind
    `window` (an aggregate that changed), `dead_letter` and `summary`."""
    step = partial(
        update_group,
        windows=tuple(WindowLength(label, window_ms(label)) for label in windows),
        delay_ms=interval_ms(watermark),
    )
    return (
        keyed_records(parsed)
        .groupBy("group")
        .applyInPandasWithState(
            step, OUTPUT_SCHEMA, STATE_SCHEMA, "update", GroupStateTimeout.NoTimeout
        )
    )


def _frame(length: int, /, **columns: Any) -> pd.DataFrame:
    """An OUTPUT_SCHEMA frame of `length` rows; columns not given are null."""
    frame = pd.DataFrame(index=range(length))
    for name in OUTPUT_COLUMNS:
        value = columns.get(name)
        if isinstance(value, pd.Series):
            value = value.to_numpy()
        if name in _LONG_OUTPUTS:
            values = [value] * length if value is None or isinstance(value, int) else value
            frame[name] = pd.array(values, dtype="Int64")
        else:
            frame[name] = value
    return frame


def update_group(
    key: tuple[str],
    frames: Iterator[pd.DataFrame],
    state: GroupState,
    windows: Sequence[WindowLength],
    delay_ms: int,
) -> Iterator[pd.DataFrame]:
    """The Python side of `ohlcv_stream`, for one group and one micro-batch."""
    # Spark concatenates the frames yielded here; their null columns are intended.
    warnings.filterwarnings("ignore", ALL_NULL_CONCAT, FutureWarning)
    (group,) = key
    records = pd.concat(list(frames), ignore_index=True)
    if group == DEAD_LETTERS:
        yield _frame(
            len(records),
            kind=KIND_DEAD_LETTER,
            dead_letter_key=records["dead_letter_key"],
            dead_letter_value=records["dead_letter_value"],
        )
        yield _frame(1, kind=KIND_SUMMARY, symbol=None, dead_letters=len(records))
        return
    if state.exists:
        watermark_ms, max_event_ms, candles = state.get
        current = SymbolState(watermark_ms, max_event_ms, decode_candles(bytes(candles)))
    else:
        current = SymbolState.empty()
    step = advance(current, records, windows, delay_ms)
    encoded = encode_candles(step.state.candles)
    state.update((step.state.watermark_ms, step.state.max_event_ms, encoded))
    aggregates = step.aggregates
    yield _frame(
        len(aggregates),
        kind=KIND_WINDOW,
        symbol=group,
        **{name: aggregates[name] for name in AGGREGATE_COLUMNS},
    )
    late = step.late["event_time_ms"]
    yield _frame(
        1,
        kind=KIND_SUMMARY,
        symbol=group,
        windows_emitted=len(aggregates),
        late_rows=len(late),
        late_first_ms=int(late.min()) if len(late) else None,
        late_last_ms=int(late.max()) if len(late) else None,
        state_candles=len(step.state.candles),
        state_bytes=len(encoded),
    )


def aggregates_of(batch: DataFrame) -> DataFrame:
    """The changed aggregates of a micro-batch, as both sinks store them."""
    return batch.where(F.col("kind") == KIND_WINDOW).select(
        "symbol",
        "window",
        F.timestamp_millis("window_start_ms").alias("window_start"),
        F.timestamp_millis("window_end_ms").alias("window_end"),
        *AGGREGATE_COLUMNS[3:],
    )


def dead_letters_of(batch: DataFrame) -> DataFrame:
    """The micro-batch's dead letters as Kafka records (key, value)."""
    return batch.where(F.col("kind") == KIND_DEAD_LETTER).select(
        F.col("dead_letter_key").alias("key"), F.col("dead_letter_value").alias("value")
    )


def summaries_of(batch: DataFrame) -> DataFrame:
    return batch.where(F.col("kind") == KIND_SUMMARY)


def document_id(symbol: Column, window: Column, window_start: Column) -> Column:
    """The deterministic `_id` of an aggregate: `SYMBOL|window|window start in epoch ms`."""
    start_ms = F.unix_millis(window_start).cast("string")
    return F.concat_ws("|", symbol, window, start_ms)
