"""Benchmarks of the job's own parts: the windowed step's state with many symbols
(`crypto-pipeline bench state`, no server), the sink writers on one micro-batch
(`crypto-pipeline bench sinks`) and candles from trades (`crypto-pipeline bench trades`, Spark:
spark_jobs/trade_bench.py). The CLI runs them as `python -m spark_jobs.component_bench`
(spark_jobs/interface/launch.py), so nothing outside the job imports its parts.

State: the first batch (every symbol new), a one-candle micro-batch (state read, step, version
written), a restart's state load, and, as the reference in the same run, writing the whole state
once (what every batch paid when each version was a full copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from crypto_pipeline.benchmarking import BENCH_SYMBOLS, machine_description
from crypto_pipeline.clients import mongo_client
from crypto_pipeline.console import say
from crypto_pipeline.formats import window_document
from crypto_pipeline.formats.candle_message import FILE_EXCHANGE
from crypto_pipeline.formats.window_values import series_key
from crypto_pipeline.windows import interval_ms
from spark_jobs.interface.config import DEFAULT_WATERMARK, DEFAULT_WINDOWS, JobConfig
from spark_jobs.open_windows import CANDLE_COLUMNS, advance_all, window_lengths
from spark_jobs.sinks import aggregate_columns, write_influx, write_mongo
from spark_jobs.state_store import StateStore

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
MINUTE = 60_000

# The job's series keys (exchange and symbol) of the bench symbols.
SERIES = [series_key(FILE_EXCHANGE, symbol) for symbol in BENCH_SYMBOLS]


def _candles(
    symbols: list[str], minutes: int, first_minute: int, first_offset: int
) -> pd.DataFrame:
    count = len(symbols) * minutes
    times = T0 + MINUTE * (first_minute + np.tile(np.arange(minutes), len(symbols)))
    rng = np.random.default_rng(7)
    low = rng.uniform(1, 100, count)
    high = low * 1.01
    return pd.DataFrame(
        {
            "symbol": np.repeat(symbols, minutes),
            "event_time_ms": times,
            "partition": 0,
            "offset": first_offset + np.arange(count),
            "open": low,
            "high": high,
            "low": low,
            "close": high,
            "volume": rng.uniform(0, 10, count),
            "quote_volume": rng.uniform(0, 1000, count),
            "trades": rng.integers(1, 100, count).astype("float64"),
        }
    )[["symbol", *CANDLE_COLUMNS]]


def bench_state(symbols: int, minutes: int, batches: int) -> None:
    windows = window_lengths(DEFAULT_WINDOWS)
    delay_ms = interval_ms(DEFAULT_WATERMARK)
    names = [f"S{n:05d}" for n in range(symbols)]
    with tempfile.TemporaryDirectory(prefix="bench-state-") as folder:
        store = StateStore(Path(folder))
        say(f"[bench state] first batch: {symbols:,} symbols x {minutes} candles ...")
        started = time.monotonic()
        state = store.load(0)
        step = advance_all(state, _candles(names, minutes, 0, 0), windows, delay_ms)
        store.save(0, state, step.states)
        first_s = time.monotonic() - started

        steps, sizes = [], []
        rng = np.random.default_rng(11)
        offset = symbols * minutes
        for batch_id in range(1, batches + 1):
            symbol = names[int(rng.integers(symbols))]
            candle = _candles([symbol], 1, minutes + batch_id, offset + batch_id)
            started = time.monotonic()
            state = store.load(batch_id)
            step = advance_all(state, candle, windows, delay_ms)
            sizes.append(store.save(batch_id, state, step.states))
            store.prune(batch_id)
            steps.append(time.monotonic() - started)

        loads = []
        for _ in range(3):
            started = time.monotonic()
            restarted = StateStore(Path(folder)).load(batches + 1)
            restarted[names[0]]  # the first symbol a batch asks for
            loads.append(time.monotonic() - started)

        started = time.monotonic()
        whole = restarted.table()
        with pa.OSFile(str(Path(folder) / "whole.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, whole.schema) as writer:
                writer.write_table(whole)
        full_write_s = time.monotonic() - started

    median_step = statistics.median(steps)
    say(f"machine: {machine_description()}")
    say(f"state: {len(restarted):,} symbols, {restarted.candles:,} candles")
    say(f"first batch (every symbol new): {first_s:.1f} s")
    say(
        f"one-candle batch, windowed step: median {median_step * 1000:.0f} ms, "
        f"max {max(steps) * 1000:.0f} ms over {batches} batches; version written "
        f"{statistics.median(sizes) / 1024:.1f} KiB"
    )
    say(f"restart, state load: best {min(loads) * 1000:.0f} ms of 3")
    say(
        f"reference, the whole state written once: {full_write_s * 1000:.0f} ms "
        f"({full_write_s / median_step:.1f}x the one-candle batch)"
    )


def _aggregate_rows(count: int) -> pd.DataFrame:
    """`count` distinct 1-minute aggregates of BENCH_SYMBOLS, as the job's state step emits
    them."""
    start_ms = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    index = np.arange(count)
    price = 100.0 + index % 97
    volume = 10.0 + index % 13
    window_start = start_ms + (index // len(SERIES)) * 60_000
    return pd.DataFrame(
        {
            "symbol": np.array(SERIES)[index % len(SERIES)],
            "window": "1m",
            "window_start_ms": window_start,
            "window_end_ms": window_start + 60_000,
            "open": price,
            "high": price + 1.5,
            "low": price - 1.25,
            "close": price + 0.5,
            "volume": volume,
            "quote_volume": volume * price,
            "vwap": price + 0.1,
            "trades": 5 + index % 7,
            "rows": 1,
            "first_event_ms": window_start,
            "last_event_ms": window_start,
            # The version of each window's input: one candle, its own offset on partition 0.
            "input_offsets": [{"0": int(offset)} for offset in index],
        }
    )


def bench_sinks(job: JobConfig, docs: int) -> None:
    """The job's own sink functions on one micro-batch of `docs` windows, once into empty sinks
    (every window new: inserted, as windows past the frontiers are) and once more (every window
    replaced), against a plain `insert_many` of the same documents into an empty collection as
    the reference; and the new windows upserted instead, into another empty collection."""
    columns = aggregate_columns(_aggregate_rows(docs))
    documents = window_document.encode(columns)
    with mongo_client(job.mongo.uri) as client:
        collection = client[job.mongo.database][f"{job.mongo.collection}_reference"]
        started = time.monotonic()
        collection.insert_many(documents, ordered=False)
        reference = docs / (time.monotonic() - started)
    new = frozenset(doc["_id"] for doc in documents)
    upserted = dataclasses.replace(
        job, mongo=dataclasses.replace(job.mongo, collection=f"{job.mongo.collection}_upserted")
    )
    runs = {  # the upserts of new windows first: the server holds less than for the inserts
        ("mongodb", "new, upserted"): lambda: write_mongo(columns, upserted),
        ("mongodb", "new"): lambda: write_mongo(columns, job, new),
        ("mongodb", "existing"): lambda: write_mongo(columns, job),
        ("influxdb", "new"): lambda: write_influx(columns, job),
        ("influxdb", "existing"): lambda: write_influx(columns, job),
    }
    results = {}
    for (sink, state), write in runs.items():
        say(f"[bench] {sink}: {docs:,} {state} windows")
        started = time.monotonic()
        write()
        results[(sink, state)] = f"{docs / (time.monotonic() - started):,.0f}"
    say("")
    say(f"MongoDB at {job.mongo.redacted_uri}, InfluxDB at {job.influx.url}")
    say(
        "| date | machine | windows | sink | new /s | existing /s | insert_many /s (reference) "
        "| new, upserted /s |"
    )
    for sink, baseline in (("mongodb", f"{reference:,.0f}"), ("influxdb", "")):
        say(
            f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {docs:,} | {sink} "
            f"| {results[(sink, 'new')]} | {results[(sink, 'existing')]} | {baseline} "
            f"| {results.get((sink, 'new, upserted'), '')} |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spark_jobs.component_bench")
    commands = parser.add_subparsers(dest="component", required=True)
    state = commands.add_parser("state")
    state.add_argument("--symbols", type=int, required=True)
    state.add_argument("--minutes", type=int, required=True)
    state.add_argument("--batches", type=int, required=True)
    sinks = commands.add_parser("sinks", help="then the job's options (its sinks' targets)")
    sinks.add_argument("--docs", type=int, required=True)
    commands.add_parser("trades", help="then the trades job's options")
    args, job_args = parser.parse_known_args(argv)
    if args.component == "state":
        bench_state(args.symbols, args.minutes, args.batches)
    elif args.component == "trades":
        from spark_jobs.trade_bench import bench_trades

        say(f"[bench trades] {json.dumps(bench_trades(JobConfig.from_args(job_args, os.environ)))}")
    else:
        bench_sinks(JobConfig.from_args(job_args, os.environ), args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
