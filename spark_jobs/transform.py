"""Pure transformations: raw Kafka records -> validated candles -> windowed OHLCV aggregates.

Every function takes and returns DataFrames and works the same on a batch DataFrame (tests) and on a
stream (the job). Nothing here reads or writes anything.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from spark_jobs.config import window_duration

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
CANDLE_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trades")


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


def valid_candles(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reject_reason").isNull()).withColumn(
        "event_time", F.timestamp_millis("event_time_ms")
    )


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Invalid records as DLQ messages: a deterministic key (topic-partition-offset, so a retried
    batch is recognisable) and a JSON value with the raw record and the reason."""
    return parsed.where(F.col("reject_reason").isNotNull()).select(
        F.concat_ws("-", "topic", "partition", "offset").alias("key"),
        F.to_json(
            F.struct(
                F.col("raw_value").alias("raw"),
                F.col("reject_reason").alias("reason"),
                F.col("topic"),
                F.col("partition"),
                F.col("offset"),
                F.lit("spark").alias("stage"),
            )
        ).alias("value"),
    )


def build_aggregates(candles: DataFrame, window: str, watermark: str) -> DataFrame:
    """OHLCV per (symbol, window start) for one window length ('5m', '1h', ...).

    The state keeps each window's candles, so a candle delivered twice (a replayed file, a
    reprocessed batch) counts once: per event time the one with the highest (partition, offset)
    wins. Open and close come from the earliest and latest event time, never from arrival order.
    """
    entry = F.struct(
        F.col("event_time_ms"),
        F.col("partition"),
        F.col("offset"),
        *[F.col(name) for name in CANDLE_FIELDS],
    )
    grouped = (
        candles.withWatermark("event_time", watermark)
        .groupBy(F.col("symbol"), F.window("event_time", window_duration(window)).alias("w"))
        .agg(F.collect_list(entry).alias("entries"))
    )
    # Sorted by (event_time_ms, partition, offset); keep the last entry of each event time.
    ordered = F.array_sort("entries")
    deduplicated = F.filter(
        ordered,
        lambda x, i: (
            (i == F.size(ordered) - 1)
            | (F.element_at(ordered, i + 2)["event_time_ms"] != x["event_time_ms"])
        ),
    )
    c = F.col("candles")

    def total(name: str) -> Column:
        return F.aggregate(
            F.transform(c, lambda x: x[name]), F.lit(0).cast(DoubleType()), lambda a, v: a + v
        )

    def total_or_null(name: str, kind: str) -> Column:
        """Sum of a column that may be absent: null if any candle of the window lacks it."""
        values = F.transform(c, lambda x: x[name])
        zero = F.lit(0).cast(kind)
        return F.when(F.exists(values, lambda v: v.isNull()), F.lit(None).cast(kind)).otherwise(
            F.aggregate(values, zero, lambda a, v: a + v)
        )

    volume = total("volume")
    quote_volume = total_or_null("quote_volume", "double")
    typical_turnover = F.aggregate(
        c,
        F.lit(0).cast(DoubleType()),
        lambda a, x: a + (x["high"] + x["low"] + x["close"]) / 3 * x["volume"],
    )
    vwap = F.when(volume <= 0, F.lit(None).cast(DoubleType())).otherwise(
        F.coalesce(quote_volume, typical_turnover) / volume
    )
    return grouped.select(
        F.col("symbol"),
        F.lit(window).alias("window"),
        F.col("w.start").alias("window_start"),
        F.col("w.end").alias("window_end"),
        deduplicated.alias("candles"),
    ).select(
        "symbol",
        "window",
        "window_start",
        "window_end",
        F.element_at(c, 1)["open"].alias("open"),
        F.array_max(F.transform(c, lambda x: x["high"])).alias("high"),
        F.array_min(F.transform(c, lambda x: x["low"])).alias("low"),
        F.element_at(c, -1)["close"].alias("close"),
        volume.alias("volume"),
        quote_volume.alias("quote_volume"),
        vwap.alias("vwap"),
        total_or_null("trades", "bigint").alias("trades"),
        F.size(c).alias("rows"),
        F.element_at(c, 1)["event_time_ms"].alias("first_event_ms"),
        F.element_at(c, -1)["event_time_ms"].alias("last_event_ms"),
    )


def document_id(symbol: Column, window: Column, window_start: Column) -> Column:
    """The deterministic `_id` of an aggregate: `SYMBOL|window|window start in epoch ms`."""
    start_ms = F.unix_millis(window_start).cast("string")
    return F.concat_ws("|", symbol, window, start_ms)
