"""The job building candles from trades (`--source trades`) on real Kafka, Spark, FerretDB and
InfluxDB. A generated trade file with quiet minutes is replayed and the job run in several
micro-batches; then the file's first part is replayed again (copies in a later run) beside a
poison record and a trade under another trade's key, and the job run again. Every window in both
sinks equals a pandas resampling of the file's distinct trades read with the csv module; quiet
minutes have no candle; the two bad records are dead letters with their reasons."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from kafka import KafkaProducer

from crypto_pipeline import candle_rules as rules
from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.replay.trade_generator import Trades, generate_trades, write_canonical_trades
from crypto_pipeline.settings import Settings
from spark_jobs.trade_seconds import NOT_A_TRADE
from tests.expected_trade_candles import resample_trades
from tests.integration.job_helpers import job_for, replay_file, run_job
from tests.integration.kafka_helpers import consume_all

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
WINDOWS = {"1s": 1_000, "1m": 60_000, "5m": 300_000}


def write_trades(path: Path) -> None:
    """Two symbols over 15 minutes; BTCUSDT has no trade in minutes 4 to 6."""
    generated = generate_trades(["BTCUSDT", "ETHUSDT"], T0, 900, seed=5)
    minute = (generated.time_ms - T0) // 60_000
    kept = ~((generated.symbol == "BTCUSDT") & (minute >= 4) & (minute <= 6))
    columns = {f.name: getattr(generated, f.name)[kept] for f in dataclasses.fields(Trades)}
    write_canonical_trades(Trades(**columns), path)


def expected(path: Path, window_ms: int) -> dict[tuple[str, int], dict[str, float]]:
    with open(path, newline="") as stream:
        trades = pd.DataFrame(list(csv.DictReader(stream))).assign(exchange="file")
    trades = trades.astype({"time_ms": "int64", "price": "float64", "qty": "float64"})
    reference = resample_trades(trades, window_ms)
    return {
        (row.symbol, row.start): {
            "open": row.open,
            "high": row.high,
            "low": row.low,
            "close": row.close,
            "volume": row.volume,
            "quote_volume": row.quote_volume,
            "trades": row.trades,
            "first_event_ms": row.first_ms,
            "last_event_ms": row.last_ms,
            "taker_buy_volume": row.taker_buy_volume,
            "taker_sell_volume": row.taker_sell_volume,
        }
        for row in reference.itertuples()
    }


def test_trade_candles_in_both_sinks_equal_the_resampling_of_the_distinct_trades(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    path, again = tmp_path / "trades.csv", tmp_path / "again.csv"
    write_trades(path)
    lines = path.read_text().splitlines()
    again.write_text("\n".join(lines[: len(lines) // 3]) + "\n")  # header and the first third
    first = replay_file(local_stack, path, unique_name, partitions=3)
    job = job_for(
        local_stack,
        unique_name,
        tmp_path / "checkpoint",
        source="trades",
        windows=tuple(WINDOWS),
        max_offsets_per_trigger=4_000,
    )
    assert job.kafka.topic == first.topic == f"{unique_name}.trades"
    finished = run_job(job)
    assert finished.returncode == 0, finished.stderr[-3000:]

    replay_file(local_stack, again, unique_name, partitions=3)
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka.bootstrap_servers)
    impostor = {"time_ms": T0, "symbol": "BTCUSDT", "trade_id": "1", "price": 1.0, "qty": 1.0}
    producer.send(first.topic, key=b"x", value=b"garbage{")
    producer.send(first.topic, key=b"file:BTCUSDT:2", value=json.dumps(impostor).encode())
    producer.flush()
    producer.close()
    finished = run_job(job)
    assert finished.returncode == 0, finished.stderr[-3000:]

    stored = {"mongo": read_mongo(job.mongo)[0], "influx": read_influx(job.influx)}
    assert job.mongo.collection.endswith("_from_trades")
    for sink, windows in stored.items():
        for label, window_ms in WINDOWS.items():
            actual = {
                (symbol, start): values
                for (exchange, symbol, window, start), values in windows.items()
                if window == label and exchange == "file"
            }
            reference = expected(path, window_ms)
            assert actual.keys() == reference.keys(), (sink, label)
            for key, values in reference.items():
                for name, value in values.items():
                    assert np.isclose(actual[key][name], value, rtol=1e-9), (sink, label, key, name)
    btc_minutes = {start for symbol, start in expected(path, 60_000) if symbol == "BTCUSDT"}
    assert {(start - T0) // 60_000 for start in btc_minutes} == set(range(15)) - {4, 5, 6}

    letters = consume_all(local_stack, f"{first.topic}.dlq", expected=2)
    reasons = sorted(json.loads(record.value)["reason"] for record in letters)
    assert reasons == sorted([NOT_A_TRADE, rules.TRADE_KEY_MISMATCH])
