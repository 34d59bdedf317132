"""The executors' step of candles from trades in real Spark, on a trade file replayed into real
Kafka with a repeated line and a bad line, and a poison record from another producer: Spark
hands each partition's records to `task_partials` as Arrow (the output matches OUTPUT_DDL), the
poison record is a dead letter, and the partials merged into windows equal a pandas resampling
of the file read with the csv module."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pytest
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.replay.trade_generator import generate_trades, write_canonical_trades
from crypto_pipeline.settings import Settings
from spark_jobs.trade_records import NOT_A_TRADE
from spark_jobs.trade_seconds import OUTPUT_DDL, merge_partials, task_partials
from tests.expected_trade_candles import resample_trades

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z


def resampled(path: Path, window_ms: int) -> pd.DataFrame:
    """The file's good lines (read with the csv module) resampled independently."""
    with open(path, newline="") as stream:
        trades = pd.DataFrame(list(csv.DictReader(stream))).assign(exchange="file")
    trades = trades.astype({"time_ms": "int64", "price": "float64", "qty": "float64"})
    return resample_trades(trades[trades.price > 0], window_ms)  # the bad line: a dead letter


@pytest.mark.parametrize("window_ms", [1_000, 60_000])
def test_spark_tasks_partials_merge_into_the_windows_of_the_file(
    local_stack: Settings, spark: SparkSession, unique_name: str, tmp_path: Path, window_ms: int
) -> None:
    path = tmp_path / "trades.csv"
    write_canonical_trades(generate_trades(["BTCUSDT", "ETHUSDT"], T0, 240, seed=12), path)
    lines = path.read_text().splitlines()
    lines += [lines[40], f"{T0},BTCUSDT,1,-5,1,buy"]  # a trade twice; a bad price
    path.write_text("\n".join(lines) + "\n")
    summary = replay(
        ReplayOptions(path=path, topic=unique_name, partitions=3),
        local_stack.kafka.bootstrap_servers,
        show_progress=False,
    )
    assert summary.rejected == 1  # the replay refuses the bad line
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka.bootstrap_servers)
    producer.send(summary.topic, key=b"x", value=b"garbage{", partition=1).get(timeout=30)
    producer.close()  # a poison record from another producer: a dead letter

    records = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", local_stack.kafka.bootstrap_servers)
        .option("subscribe", summary.topic)
        .load()
        .select("value", "partition", "offset", "timestamp")
    )
    output = records.mapInArrow(task_partials(300_000), OUTPUT_DDL).toArrow()

    assert records.rdd.getNumPartitions() == 3
    dead = output.filter(pc.equal(output.column("kind"), "dead")).to_pylist()
    assert [(row["raw"], row["reason"], row["partition"]) for row in dead] == [
        ("garbage{", NOT_A_TRADE, 1)
    ]
    partials = output.filter(pc.equal(output.column("kind"), "partial"))
    windows = merge_partials(partials, window_ms).to_pandas()
    actual = windows.rename(columns={"second_ms": "start"}).sort_values(
        ["exchange", "symbol", "start"], ignore_index=True
    )
    pd.testing.assert_frame_equal(actual, resampled(path, window_ms), check_dtype=False, rtol=1e-9)
