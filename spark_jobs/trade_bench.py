"""`crypto-pipeline bench trades --compute-only`, the Spark side: the trades job without its
sinks. The trades topic is read by a streaming query (available-now, the job's Kafka source and
micro-batch cap), each micro-batch reduced to one-second partials on the executors and copies
dropped against the ids counted before (spark_jobs/trade_job.unique_partials), then merged on
the driver into the state and every window length (spark_jobs/trade_windows.py). Nothing is
written.
Steady rate: the trades after the first micro-batch over the time from its end to the last one's
end (the first batch carries the start-up)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pyarrow.compute as pc
from pyspark.sql import DataFrame

from crypto_pipeline.benchmarking import machine_description
from crypto_pipeline.console import say
from crypto_pipeline.windows import interval_ms
from spark_jobs.interface.config import JobConfig
from spark_jobs.open_windows import window_lengths
from spark_jobs.session import build_spark_session, read_source
from spark_jobs.trade_job import TASKS_PER_CORE, unique_partials
from spark_jobs.trade_windows import TradeState, advance_trades


def bench_trades(job: JobConfig) -> dict[str, Any]:
    spark = build_spark_session(job, "crypto-pipeline-bench-trades")
    lengths = window_lengths(job.windows)
    delay_ms, horizon_ms = interval_ms(job.watermark), interval_ms(job.dedupe_horizon)
    state = TradeState.empty()
    batches: list[tuple[float, int, int]] = []  # (end, trades in, windows out)
    stage_s = {"executors": 0.0, "driver": 0.0}  # of the batches after the first

    def on_batch(output: DataFrame, batch_id: int) -> None:
        nonlocal state
        started = time.monotonic()
        now_ms = int(time.time() * 1000)
        partials, dead, ids = unique_partials(output, job, state.ids, now_ms)
        merged = time.monotonic()
        trades = int(pc.sum(partials.column("trades")).as_py() or 0) + dead.num_rows
        step = advance_trades(
            replace(state, ids=ids), partials, lengths, delay_ms, horizon_ms, now_ms
        )
        state = step.state
        batches.append((time.monotonic(), trades, len(step.windows)))
        if batch_id:
            stage_s["executors"] += merged - started
            stage_s["driver"] += batches[-1][0] - merged
        say(f"[bench trades] batch {batch_id}: {trades:,} trades -> {len(step.windows):,} windows")

    started = time.monotonic()
    query = (
        read_source(spark, job, TASKS_PER_CORE)
        .writeStream.foreachBatch(on_batch)
        .option("checkpointLocation", job.checkpoint_dir)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    spark.stop()
    if len(batches) < 2:
        raise SystemExit("bench trades: fewer than two micro-batches; give more --rows")
    steady_s = batches[-1][0] - batches[0][0]
    steady_trades = sum(trades for _, trades, _ in batches[1:])
    return {
        "machine": machine_description(),
        "trades": sum(trades for _, trades, _ in batches),
        "batches": len(batches),
        "start_up_s": batches[0][0] - started,
        "steady_s": steady_s,
        "steady_trades_per_s": steady_trades / steady_s,
        "windows": sum(emitted for _, _, emitted in batches),
        "stage_s": stage_s,
    }
