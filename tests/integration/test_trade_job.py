"""The job building candles from trades (`--source trades`) on real Kafka, Spark, FerretDB and
InfluxDB, compared with a pandas resampling of the files' distinct trades read with the csv
module.
- A generated trade file with quiet minutes is replayed and the job run in several micro-batches;
  then the file's first part is replayed again (copies in a later run) beside a poison record and
  a copy of a trade under another Kafka key, and the job run again: every window in both sinks
  equals the resampling, quiet minutes have no candle, the poison record is a dead letter.
- Per-symbol files in any order: an older file of a symbol after a newer one is late; Dagster's
  late-rows sensor asks for the trades' backfill, which recomputes its windows, and both sinks
  equal the resampling of all files."""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from kafka import KafkaProducer

from crypto_assets.aggregation.repairs import late_rows_sensor
from crypto_assets.definitions import build_definitions
from crypto_assets.quality.stream_health import streaming_health_sensor
from crypto_pipeline.clients import mongo_client
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.replay.trade_generator import Trades, generate_trades, write_canonical_trades
from crypto_pipeline.settings import Settings, trade_candles, trades_topic
from spark_jobs.interface.config import JobConfig
from spark_jobs.interface.heartbeat import write_heartbeat
from spark_jobs.trade_records import NOT_A_TRADE
from tests.expected_trade_candles import resample_trades
from tests.integration.dagster_helpers import backfills_requested, resources_for
from tests.integration.grafana_helpers import assert_panels_have_rows
from tests.integration.job_helpers import job_for, mongo_of, replay_file, run_job
from tests.integration.kafka_helpers import consume_all

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
WINDOWS = {"1s": 1_000, "1m": 60_000, "5m": 300_000}


def write_trades(
    path: Path, symbols: list[str], start_ms: int = T0, quiet: tuple[str, range] | None = None
) -> None:
    """The symbols' trades over 15 minutes; `quiet`: a symbol's minutes without trades."""
    generated = generate_trades(symbols, start_ms, 900, seed=len(path.name))
    kept = np.ones(len(generated), dtype=bool)
    if quiet is not None:
        minute = (generated.time_ms - start_ms) // 60_000
        kept = ~((generated.symbol == quiet[0]) & np.isin(minute, list(quiet[1])))
    columns = {f.name: getattr(generated, f.name)[kept] for f in dataclasses.fields(Trades)}
    write_canonical_trades(Trades(**columns), path)


def expected(paths: list[Path], window_ms: int) -> dict[tuple[str, int], dict[str, float]]:
    frames = []
    for path in paths:
        with open(path, newline="") as stream:
            frames.append(pd.DataFrame(list(csv.DictReader(stream))).assign(exchange="file"))
    trades = pd.concat(frames).astype({"time_ms": "int64", "price": "float64", "qty": "float64"})
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
            "rows": row.trades,
            "vwap": row.quote_volume / row.volume,
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
    write_trades(path, ["BTCUSDT", "ETHUSDT"], quiet=("BTCUSDT", range(4, 7)))
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
    # A copy of the file's first trade from another producer, under another key: counted once.
    time_ms, symbol, trade_id, price, qty, side = lines[1].split(",")
    copy = {"time_ms": int(time_ms), "symbol": symbol, "trade_id": trade_id}
    copy |= {"price": float(price), "qty": float(qty), "side": side}
    producer.send(first.topic, key=b"x", value=b"garbage{")
    producer.send(first.topic, key=b"another key", value=json.dumps(copy).encode())
    producer.flush()
    producer.close()
    finished = run_job(job)
    assert finished.returncode == 0, finished.stderr[-3000:]

    assert job.mongo.collection.endswith("_from_trades")
    assert_sinks_equal(job, [path])
    btc_minutes = {start for symbol, start in expected([path], 60_000) if symbol == "BTCUSDT"}
    minutes = {(start - T0) // 60_000 for start in btc_minutes}
    assert len(minutes) >= 10 and not minutes & {4, 5, 6}  # quiet minutes: no candle

    letters = consume_all(local_stack, f"{first.topic}.dlq", expected=1)
    assert [json.loads(record.value)["reason"] for record in letters] == [NOT_A_TRADE]


def assert_sinks_equal(job: JobConfig, paths: list[Path]) -> None:
    stored = {"mongo": read_mongo(job.mongo)[0], "influx": read_influx(job.influx)}
    for sink, windows in stored.items():
        for label, window_ms in WINDOWS.items():
            actual = {
                (symbol, start): values
                for (exchange, symbol, window, start), values in windows.items()
                if window == label and exchange == "file"
            }
            reference = expected(paths, window_ms)
            assert actual.keys() == reference.keys(), (sink, label)
            for key, values in reference.items():
                for name, value in values.items():
                    assert np.isclose(actual[key][name], value, rtol=1e-9), (sink, label, key, name)


def test_per_symbol_files_in_any_order_are_exact_after_the_late_ledgers_backfill(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    hour = 3_600_000
    newer, older, other = (tmp_path / n for n in ("btc_newer.csv", "btc_older.csv", "eth.csv"))
    write_trades(newer, ["BTCUSDT"], T0 + hour)
    write_trades(older, ["BTCUSDT"], T0)
    write_trades(other, ["ETHUSDT"], T0)
    resources = resources_for(local_stack, unique_name, tmp_path / "state")
    checkpoint = resources["spark"].checkpoint_dir(f"{unique_name}.trades")  # Dagster's rule
    options = {"windows": ",".join(WINDOWS), "watermark": "1 minute"}
    job = job_for(
        local_stack,
        unique_name,
        checkpoint,
        source="trades",
        windows=tuple(WINDOWS),
        watermark=options["watermark"],
    )
    for paths in ([newer], [older, other]):  # the job runs after each replay
        for path in paths:
            replay_file(local_stack, path, unique_name, partitions=2)
        finished = run_job(job)
        assert finished.returncode == 0, finished.stderr[-3000:]
    (entry,) = late_ledger.open_entries_in(job.mongo, job.kafka.topic)
    assert (entry.series, entry.kind) == ("file:BTCUSDT", late_ledger.LATE)

    # Dagster's late-rows sensor asks for a backfill of the trades' ledger, which repairs it.
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={n: resources[n] for n in ("kafka", "mongo", "influx")}
        )
        requests = late_rows_sensor(context)
        assert backfills_requested(requests) == ["trades"]
        assert isinstance(requests, list)
        request = requests[0]
        config = request.run_config["ops"]["backfill_windows"]["config"] | options
        backfill = (
            build_definitions(resources)
            .resolve_job_def("backfill_job")
            .execute_in_process(
                instance=instance, run_config={"ops": {"backfill_windows": {"config": config}}}
            )
        )
        assert backfill.success
    assert late_ledger.open_entries_in(job.mongo, job.kafka.topic) == []
    assert_sinks_equal(job, [newer, older, other])


def test_dagster_runs_the_trades_job_after_a_trade_replay_and_its_checks_can_fail(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "trades.csv"
    write_trades(path, ["BTCUSDT", "ETHUSDT"])
    resources = resources_for(local_stack, unique_name, tmp_path / "state")
    defs = build_definitions(resources)
    replay_config = {"ops": {"kafka_klines": {"config": {"path": str(path)}}}}
    job_config = {"ops": {"trade_candles": {"config": {"windows": "1s,1m,5m"}}}}

    def checks(max_lag_minutes: float = 15) -> dict[tuple[str, str], bool]:
        fresh_config = {"config": {"max_lag_minutes": max_lag_minutes}}
        result = defs.resolve_job_def("trade_candles_job").execute_in_process(
            instance=instance,
            run_config={"ops": {**job_config["ops"], "trade_fresh": fresh_config}},
            raise_on_error=False,
        )
        return {
            (e.asset_key.to_user_string(), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()
        }

    with dg.DagsterInstance.ephemeral() as instance:
        replayed = defs.resolve_job_def("replay_job").execute_in_process(
            instance=instance, run_config=replay_config
        )
        assert replayed.success
        passing = checks()
        assert passing == {
            (asset, check): True
            for asset in ("mongo_trade_candles", "influx_trade_candles")
            for check in (
                "sinks_agree",
                "matches_source",
                "nothing_left_behind",
                "late_rows_repaired",
                "fresh",
            )
        }
        # Grafana's market panels chart them, the source switched to trades.
        influx = resources["influx"].target
        for window in ("1s", "1m"):
            variables = {
                "bucket": influx.bucket,
                "source": trade_candles(unique_name),
                "exchange": "file",
                "symbol": "BTCUSDT",
                "window": window,
            }
            assert_panels_have_rows(influx, variables, klines=False)

        # One close in MongoDB changed: both sinks_agree and MongoDB's matches_source fail. The
        # windows of the last 5 minutes deleted from MongoDB, with a bound of 1 minute: its fresh
        # check fails too.
        mongo = mongo_of(local_stack, unique_name)
        with mongo_client(mongo.uri) as client:
            collection = client[mongo.database][trade_candles(mongo.collection)]
            collection.update_one({"window": "1m"}, {"$mul": {"close": 1.001}})
            collection.delete_many({"last_event_ms": {"$gte": T0 + 10 * 60_000}})
        failing = {key for key, passed in checks(max_lag_minutes=1).items() if not passed}
        assert failing == {
            ("mongo_trade_candles", "sinks_agree"),
            ("influx_trade_candles", "sinks_agree"),
            ("mongo_trade_candles", "matches_source"),
            ("mongo_trade_candles", "fresh"),
        }

        # The health sensor sees the trades job running (a heartbeat of this process) and asks
        # for the trades' freshness only: no candle job has run on this topic.
        spark = resources["spark"]
        write_heartbeat(
            spark.status_file(trades_topic(unique_name)),
            last_progress_at=time.time(),
            watermark_ms=0,
            processed_offsets={},
            late_rows={},
            state={},
        )
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            health = streaming_health_sensor(context)
        assert isinstance(health, dg.SensorResult)
        observed = {event.asset_key.to_user_string() for event in health.asset_events}
        assert observed == {"mongo_trade_candles", "influx_trade_candles"}
        assert [request.job_name for request in health.run_requests or []] == [
            "trade_freshness_job"
        ]
