"""The pure transformation on hand-made input, as a real stream (file source, two micro-batches):
out-of-order events, a duplicate, and an event later than the watermark. Expected values are
written out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from spark_jobs.transform import build_aggregates, dead_letters, parse_messages, valid_candles

MIN = 60_000
RAW_SCHEMA = "value STRING, topic STRING, partition INT, offset BIGINT, timestamp TIMESTAMP"


def message(t_min: float, o: float, h: float, lo: float, c: float, v: float, **extra: Any) -> str:
    body = {"symbol": "BTCUSDT", "event_time_ms": int(t_min * MIN), "open": o, "high": h}
    body.update({"low": lo, "close": c, "volume": v, **extra})
    return json.dumps(body)


def write_records(folder: Path, name: str, values: list[tuple[int, str]]) -> None:
    lines = [
        json.dumps(
            {"value": v, "topic": "t", "partition": 0, "offset": o, "timestamp": "2025-01-01"}
        )
        for o, v in values
    ]
    (folder / name).write_text("\n".join(lines) + "\n")


def run_available_now(spark: SparkSession, source: Path, checkpoint: Path, out: list) -> Any:
    raw = spark.readStream.schema(RAW_SCHEMA).json(str(source))
    aggregates = build_aggregates(valid_candles(parse_messages(raw)), "5m", "10 minutes")
    query = (
        aggregates.writeStream.outputMode("update")
        .option("checkpointLocation", str(checkpoint))
        .foreachBatch(lambda batch, _: out.extend(r.asDict() for r in batch.collect()))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return query


def test_out_of_order_duplicate_and_late_events(spark: SparkSession, tmp_path: Path) -> None:
    source, checkpoint = tmp_path / "in", tmp_path / "ckpt"
    source.mkdir()
    outputs: list[dict[str, Any]] = []
    write_records(
        source,
        "1.json",
        [
            (0, message(0, 10, 12, 9, 11, 1, quote_volume=10, trades=1)),
            (1, message(2, 11, 13, 10, 12, 2, quote_volume=24, trades=2)),
            (2, message(1, 10.5, 11.5, 10, 11, 1, quote_volume=11, trades=1)),  # out of order
            (3, message(2, 11, 13, 10, 12, 2, quote_volume=24, trades=2)),  # duplicate
            (4, message(31, 20, 21, 19, 20.5, 1, quote_volume=20, trades=1)),  # watermark -> 21m
        ],
    )
    run_available_now(spark, source, checkpoint, outputs)
    write_records(
        source,
        "2.json",
        [
            (5, message(3, 99, 99, 99, 99, 100, quote_volume=9900, trades=9)),  # late: dropped
            (6, message(32, 20.5, 22, 20, 21, 2, quote_volume=42, trades=3)),
        ],
    )
    query = run_available_now(spark, source, checkpoint, outputs)

    final = {}
    for row in outputs:  # update mode: the last emitted row of a window is its final state
        final[row["window_start"].isoformat()] = row
    assert {k: (v["open"], v["high"], v["low"], v["close"]) for k, v in final.items()} == {
        "1970-01-01T00:00:00": (10.0, 13.0, 9.0, 12.0),
        "1970-01-01T00:30:00": (20.0, 22.0, 19.0, 21.0),
    }
    first, second = final["1970-01-01T00:00:00"], final["1970-01-01T00:30:00"]
    assert (first["volume"], first["quote_volume"], first["vwap"]) == (4.0, 45.0, 11.25)
    assert (first["trades"], first["rows"]) == (4, 3)
    assert (first["first_event_ms"], first["last_event_ms"]) == (0, 2 * MIN)
    assert (second["volume"], second["quote_volume"], second["vwap"]) == (3.0, 62.0, 62.0 / 3)
    assert (second["trades"], second["rows"]) == (4, 2)
    dropped = sum(
        op.numRowsDroppedByWatermark for p in query.recentProgress for op in p.stateOperators
    )
    assert dropped == 1


def batch_frame(spark: SparkSession, values: list[str]) -> DataFrame:
    rows = [(v, "t", 0, i, None) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def test_vwap_falls_back_to_typical_price_without_quote_volume(spark: SparkSession) -> None:
    raw = batch_frame(spark, [message(0, 10, 12, 9, 11, 1), message(1, 11, 14, 11, 13, 3)])
    [row] = build_aggregates(valid_candles(parse_messages(raw)), "5m", "1 minute").collect()
    # typical prices (12+9+11)/3 = 32/3 and (14+11+13)/3 = 38/3; volumes 1 and 3.
    assert row["vwap"] == (32 / 3 * 1 + 38 / 3 * 3) / 4
    assert (row["quote_volume"], row["trades"]) == (None, None)


def test_invalid_records_become_dead_letters_with_reasons(spark: SparkSession) -> None:
    raw = batch_frame(
        spark,
        [
            "not json",
            json.dumps({"symbol": "X", "event_time_ms": 0, "open": 1, "high": 2, "low": 1}),
            message(0, 1, 2, 3, 1.5, 1),
            message(0, 1, 2, 0.5, 2.5, 1),
            message(0, 1, 2, 0.5, 1.5, -1),
            message(0, 1, 2, 0.5, 1.5, 1),
        ],
    )
    letters = [
        (r["key"], json.loads(r["value"])) for r in dead_letters(parse_messages(raw)).collect()
    ]
    assert [(key, value["reason"]) for key, value in letters] == [
        ("t-0-0", "not a JSON candle"),
        ("t-0-1", "missing or mistyped close"),
        ("t-0-2", "high < low"),
        ("t-0-3", "close outside [low, high]"),
        ("t-0-4", "negative volume"),
    ]
    assert letters[0][1]["raw"] == "not json"
