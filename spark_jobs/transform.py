"""What Spark computes of each micro-batch, the same on a batch DataFrame and a stream: raw Kafka
records -> parsed and validated -> one row per record with the candle of a valid record or the
dead letter of an invalid one (`keyed_records`). The topic is read and parsed once; the windowed
aggregation of every window length runs on those rows (spark_jobs/open_windows.py). Nothing here
reads or writes anything.
"""

from __future__ import annotations

import operator
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from crypto_pipeline import candle_rules as rules
from crypto_pipeline.formats import candle_message, dead_letter
from crypto_pipeline.formats.window_values import SERIES_SEPARATOR
from spark_jobs.open_windows import CANDLE_COLUMNS


def _reject_reason(m: Column, produced: Column, future_tolerance_ms: int) -> Column:
    """Why a message is not a valid candle, or null when it is: the shared candle rules
    (crypto_pipeline/candle_rules.py) in the order the producer checks them; the clock of the
    future rule is when the record was produced (its Kafka timestamp)."""
    no_fields = reduce(operator.and_, [m[name].isNull() for name in candle_message.REQUIRED_FIELDS])
    reason = F.when(m.isNull() | no_fields, F.lit("not a JSON candle"))
    for name in candle_message.REQUIRED_FIELDS:
        reason = reason.when(m[name].isNull(), F.lit(f"missing or mistyped {name}"))
    # Java's `$` accepts a final line terminator, `\z` does not.
    reason = (
        reason.when(~m.symbol.rlike(f"^(?:{rules.SYMBOL_PATTERN})\\z"), F.lit(rules.BAD_SYMBOL))
        .when(
            m.exchange.isNotNull() & ~m.exchange.rlike(f"^(?:{rules.EXCHANGE_PATTERN})\\z"),
            F.lit(rules.BAD_EXCHANGE),
        )
        .when(
            (m.event_time_ms < rules.MIN_EVENT_MS) | (m.event_time_ms >= rules.MAX_EVENT_MS),
            F.lit(rules.EVENT_TIME_OUT_OF_RANGE),
        )
        .when(
            m.event_time_ms > F.unix_millis(produced) + F.lit(future_tolerance_ms),
            F.lit(rules.FUTURE_EVENT_TIME),
        )
    )
    for name in rules.NUMERIC_FIELDS:
        value = m[name].cast("double")
        reason = reason.when(
            F.isnan(value) | (F.abs(value) == float("inf")), F.lit(rules.not_finite(name))
        ).when(F.abs(value) > rules.magnitude_limit(name), F.lit(rules.too_large(name)))
        if name not in rules.PRICE_FIELDS:
            reason = reason.when(value < 0, F.lit(rules.negative(name)))
    reason = reason.when(m.trades != F.floor(m.trades), F.lit(rules.not_whole("trades")))
    return (
        reason.when(m.high < m.low, F.lit(rules.HIGH_BELOW_LOW))
        .when((m.open < m.low) | (m.open > m.high), F.lit(rules.OPEN_OUTSIDE))
        .when((m.close < m.low) | (m.close > m.high), F.lit(rules.CLOSE_OUTSIDE))
    )


def parse_messages(
    raw: DataFrame, future_tolerance_ms: int = rules.DEFAULT_FUTURE_TOLERANCE_S * 1000
) -> DataFrame:
    """Kafka records (value, topic, partition, offset, timestamp) -> one row per record with the
    decoded message fields and `reject_reason` (null for a valid candle)."""
    text = F.col("value").cast("string")
    # FAILFAST would stop the stream on one bad record; PERMISSIVE gives nulls we turn into reasons.
    message = F.from_json(text, candle_message.SPARK_SCHEMA, {"mode": "PERMISSIVE"})
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
        *[F.col(f"m.{name}").alias(name) for name in candle_message.FIELD_NAMES],
        _reject_reason(F.col("m"), F.col("kafka_timestamp"), future_tolerance_ms).alias(
            "reject_reason"
        ),
    )


def dead_letter_key(parsed: DataFrame) -> Column:
    """Deterministic (topic-partition-offset), so a retried batch is recognisable."""
    return F.concat_ws(
        dead_letter.RECORD_KEY_SEPARATOR, *[parsed[name] for name in dead_letter.RECORD_FIELDS]
    )


def dead_letter_value(parsed: DataFrame) -> Column:
    """The raw record and why it was rejected (crypto_pipeline/formats/dead_letter.py)."""
    return F.to_json(
        F.struct(
            parsed["raw_value"].alias(dead_letter.RAW),
            parsed["reject_reason"].alias(dead_letter.REASON),
            *[parsed[name] for name in dead_letter.RECORD_FIELDS],
            F.lit(dead_letter.SPARK_STAGE).alias(dead_letter.STAGE),
        )
    )


def series_key(parsed: DataFrame) -> Column:
    """`exchange:SYMBOL` (crypto_pipeline/formats/window_values.py), a file's exchange named."""
    exchange = F.coalesce(parsed["exchange"], F.lit(candle_message.FILE_EXCHANGE))
    return F.concat(exchange, F.lit(SERIES_SEPARATOR), parsed["symbol"])


def keyed_records(parsed: DataFrame) -> DataFrame:
    """What the windowed step needs of each record: the series and candle of a valid record, the
    dead letter (key, JSON value) of an invalid one. The job's `symbol` column holds the series
    key from here on: a state, watermark and window per exchange and symbol."""
    valid = parsed["reject_reason"].isNull()
    return parsed.select(
        F.when(valid, series_key(parsed)).alias("symbol"),
        # Cast only where valid: an infinite `trades` would overflow the cast.
        *[
            F.when(valid, parsed[name].cast("long")).alias(name)
            if name == "trades"
            else parsed[name]
            for name in CANDLE_COLUMNS
        ],
        F.when(~valid, dead_letter_key(parsed)).alias("dead_letter_key"),
        F.when(~valid, dead_letter_value(parsed)).alias("dead_letter_value"),
    )
