"""The job's micro-batch step on hand-made input, as a real stream (file source, two runs on one
checkpoint: the second starts from the state file the first left): out-of-order events, a
duplicate, an event later than the watermark, several window lengths from one read, dead
letters. Expected values are written out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from crypto_pipeline.settings import Settings
from spark_jobs.batches import BatchWriter
from spark_jobs.interface.config import JobConfig
from spark_jobs.transform import keyed_records, parse_messages

MIN = 60_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
RAW_SCHEMA = "value STRING, topic STRING, partition INT, offset BIGINT, timestamp TIMESTAMP"
# When the records were produced (their Kafka timestamp): after their candles, as in real life.
PRODUCED = "2025-01-02T00:00:00"


def message(t_min: float, o: float, h: float, lo: float, c: float, v: float, **extra: Any) -> str:
    body = {"symbol": "BTCUSDT", "event_time_ms": T0 + int(t_min * MIN), "open": o, "high": h}
    body.update({"low": lo, "close": c, "volume": v, **extra})
    return json.dumps(body)


def write_records(folder: Path, name: str, values: list[tuple[int, str]]) -> None:
    lines = [
        json.dumps({"value": v, "topic": "t", "partition": 0, "offset": o, "timestamp": PRODUCED})
        for o, v in values
    ]
    (folder / name).write_text("\n".join(lines) + "\n")


def run_available_now(
    spark: SparkSession, source: Path, checkpoint: Path, out: list[dict[str, Any]]
) -> None:
    """One available-now run of the job's step (windows 5m and 1h, watermark 10 minutes, nothing
    sent anywhere): every window it emits, then a summary of each batch, appended to `out`."""
    config = JobConfig.from_settings(
        Settings.from_env({}),
        checkpoint_dir=str(checkpoint),
        windows=("5m", "1h"),
        watermark="10 minutes",
        sinks=("noop",),
    )
    writer = BatchWriter(config, checkpoint / "state", lambda batch_id, totals: None)

    def step(batch: DataFrame, batch_id: int) -> None:
        windows, letters, totals = writer.compute(batch, batch_id)
        out.extend({"kind": "window", **row} for row in windows.aggregates.to_dict("records"))
        out.extend({"kind": "dead_letter", **row} for row in letters.to_dict("records"))
        out.append({"kind": "summary", "totals": totals})

    raw = spark.readStream.schema(RAW_SCHEMA).json(str(source))
    query = (
        keyed_records(parse_messages(raw))
        .writeStream.option("checkpointLocation", str(checkpoint / "query"))
        .foreachBatch(step)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()


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
            # Late for its closed 5m window, still counted in its open hour.
            (5, message(3, 99, 99, 99, 99, 100, quote_volume=9900, trades=9)),
            (6, message(32, 20.5, 22, 20, 21, 2, quote_volume=42, trades=3)),
        ],
    )
    run_available_now(spark, source, checkpoint, outputs)

    final = {}
    for row in outputs:  # the last emitted row of a window is its final state
        if row["kind"] == "window":
            final[(row["window"], (row["window_start_ms"] - T0) // MIN)] = row
    assert {k: (v["open"], v["high"], v["low"], v["close"]) for k, v in final.items()} == {
        ("5m", 0): (10.0, 13.0, 9.0, 12.0),
        ("5m", 30): (20.0, 22.0, 19.0, 21.0),
        ("1h", 0): (10.0, 99.0, 9.0, 21.0),
    }
    first, second = final[("5m", 0)], final[("5m", 30)]
    assert (first["volume"], first["quote_volume"], first["vwap"]) == (4.0, 45.0, 11.25)
    assert (first["trades"], first["rows"]) == (4, 3)
    assert (first["first_event_ms"], first["last_event_ms"]) == (T0, T0 + 2 * MIN)
    assert (second["volume"], second["quote_volume"], second["vwap"]) == (3.0, 62.0, 62.0 / 3)
    assert (second["trades"], second["rows"]) == (4, 2)
    assert (final[("1h", 0)]["volume"], final[("1h", 0)]["rows"]) == (107.0, 6)
    totals = [row["totals"] for row in outputs if row["kind"] == "summary"]
    late = [
        {s: (r.rows, r.first_event_ms, r.last_event_ms) for s, r in t.late.items()} for t in totals
    ]
    assert late == [{}, {"file:BTCUSDT": (1, T0 + 3 * MIN, T0 + 3 * MIN)}]  # the late event
    # The state keeps the candles of windows that can still change: the hour [0, 60).
    assert [(t.state_symbols, t.state_candles) for t in totals] == [(1, 4), (1, 6)]
    assert sorted(path.name for path in (checkpoint / "state").iterdir()) == ["0.arrow", "1.arrow"]


def batch_frame(spark: SparkSession, values: list[str]) -> DataFrame:
    rows = [(v, "t", 0, i, None) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, RAW_SCHEMA)


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
    keyed = keyed_records(parse_messages(raw)).where("symbol IS NULL")
    letters = [(r["dead_letter_key"], json.loads(r["dead_letter_value"])) for r in keyed.collect()]
    assert [(key, value["reason"]) for key, value in letters] == [
        ("t-0-0", "not a JSON candle"),
        ("t-0-1", "missing or mistyped close"),
        ("t-0-2", "high < low"),
        ("t-0-3", "close outside [low, high]"),
        ("t-0-4", "negative volume"),
    ]
    assert letters[0][1]["raw"] == "not json"


def test_dead_letters_come_from_the_same_read_as_the_candles(
    spark: SparkSession, tmp_path: Path
) -> None:
    source, checkpoint = tmp_path / "in", tmp_path / "ckpt"
    source.mkdir()
    write_records(source, "1.json", [(0, "not json"), (1, message(0, 1, 2, 0.5, 1.5, 1))])
    outputs: list[dict[str, Any]] = []
    run_available_now(spark, source, checkpoint, outputs)
    assert sorted((r["kind"], r.get("symbol")) for r in outputs if r["kind"] != "summary") == [
        ("dead_letter", None),
        ("window", "file:BTCUSDT"),  # the series: a file's candles
        ("window", "file:BTCUSDT"),
    ]
    (letter,) = [r for r in outputs if r["kind"] == "dead_letter"]
    assert letter["dead_letter_key"] == "t-0-0"
    assert json.loads(letter["dead_letter_value"])["reason"] == "not a JSON candle"
