"""`crypto-pipeline bench trades --compute-only`, the Spark side: the trades topic read by a
streaming query (available-now, the job's Kafka source and micro-batch cap), each micro-batch's
records reduced to one-second partials on the executors (spark_jobs/trade_seconds.py) and merged
on the driver into the windows of every length. Nothing is written: this measures the compute.
Steady rate: the trades after the first micro-batch over the time from its end to the last one's
end (the first batch carries the start-up)."""

from __future__ import annotations

import time
from typing import Any

import pyarrow.compute as pc
from pyspark.sql import DataFrame

from crypto_pipeline.benchmarking import machine_description
from crypto_pipeline.console import say
from crypto_pipeline.windows import window_ms
from spark_jobs.interface.config import JobConfig
from spark_jobs.session import build_spark_session, kafka_source
from spark_jobs.trade_seconds import OUTPUT_DDL, merge_partials, task_partials


def bench_trades(job: JobConfig, windows: list[str]) -> dict[str, Any]:
    spark = build_spark_session(job, "crypto-pipeline-bench-trades")
    lengths = [window_ms(label) for label in windows]
    batches: list[tuple[float, int, int]] = []  # (end, trades in, windows out)
    stage_s = {"executors": 0.0, "driver merge": 0.0}  # of the batches after the first

    def on_batch(records: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        out = records.mapInArrow(task_partials(job.future_tolerance_s * 1000), OUTPUT_DDL)
        table = out.toArrow()
        merged = time.monotonic()
        partials = table.filter(pc.equal(table.column("kind"), "partial"))
        dead = table.num_rows - partials.num_rows
        trades = int(pc.sum(partials.column("trades")).as_py() or 0) + dead
        emitted = sum(merge_partials(partials, length).num_rows for length in lengths)
        batches.append((time.monotonic(), trades, emitted))
        if batch_id:
            stage_s["executors"] += merged - started
            stage_s["driver merge"] += batches[-1][0] - merged
        say(f"[bench trades] batch {batch_id}: {trades:,} trades -> {emitted:,} windows")

    started = time.monotonic()
    stream = kafka_source(spark.readStream, job).option("startingOffsets", "earliest")
    if job.max_offsets_per_trigger:
        stream = stream.option("maxOffsetsPerTrigger", job.max_offsets_per_trigger)
    query = (
        stream.load()
        .select("value", "partition", "offset", "timestamp")
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
