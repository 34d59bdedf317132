"""`crypto-pipeline bench state`: the windowed step's state with many symbols, where most are idle.

No server: the job's own step (spark_jobs/open_windows.py) and state store
(spark_jobs/state_store.py) on a temporary folder. Measured: the first batch (every symbol new), a
one-candle micro-batch (the windowed step: state read, step, version written), a restart's state
load, and, as the reference in the same run, writing the whole state once (what every batch paid
when each version was a full copy).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from crypto_cli.bench.benchmarks import machine_description
from crypto_pipeline.console import say
from crypto_pipeline.windows import interval_ms, window_ms
from spark_jobs.interface.config import DEFAULT_WATERMARK, DEFAULT_WINDOWS
from spark_jobs.open_windows import CANDLE_COLUMNS, WindowLength, advance_all
from spark_jobs.state_store import StateStore

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
MINUTE = 60_000


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
    windows = [WindowLength(label, window_ms(label)) for label in DEFAULT_WINDOWS]
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
