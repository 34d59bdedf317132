"""`crypto-pipeline bench trades --compute-only`: candles from trades on SPARK_MASTER, the
executors' one-second partials and the driver's merge into every window length, nothing written
(spark_jobs/trade_bench.py), against Kafka's own consumer on the same topic in the same run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from datetime import UTC, datetime

from crypto_cli.bench.stream_bench import kafka_consumer_performance
from crypto_cli.bench.workloads import bench_job, bench_topic
from crypto_pipeline.console import say
from crypto_pipeline.settings import Settings
from local_stack.artifacts import StackError
from spark_jobs.interface import launch
from spark_jobs.interface.config import TRADES, split_names

RESULT_PREFIX = "[bench trades] {"


def bench_trades(settings: Settings, rows: int, windows: str, per_batch: int) -> None:
    topic = bench_topic(settings, rows, kind="trades")
    say("[bench] Kafka ConsumerPerformance on the topic")
    ceiling = kafka_consumer_performance(settings, topic, rows)
    name = f"{topic}.{int(time.time())}"
    job = bench_job(
        settings,
        topic,
        settings.stack_dir / "bench" / "checkpoints" / name,
        name,
        max_offsets_per_trigger=per_batch,
    )
    # The trades job's settings on the benchmark's own trades topic.
    job = dataclasses.replace(job, source=TRADES, windows=split_names(windows))
    say(f"[bench] candles from trades on {settings.spark_master}, windows {windows}")
    command = launch.component_bench_command("trades", job.to_args())
    process = subprocess.Popen(
        command, env=launch.process_environment(job), stdout=subprocess.PIPE, text=True
    )
    result = None
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) - 1 :])
        else:
            say(line.rstrip())
    if process.wait() != 0 or result is None:
        raise StackError(f"the trades benchmark failed (exit {process.returncode})")
    steady = result["steady_trades_per_s"]
    stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in result["stage_s"].items())
    say(f"Kafka ConsumerPerformance on {topic}: {ceiling:,.0f} messages/s")
    say("")
    say(
        "| date | machine | trades | windows | trades per batch | batches | start-up s "
        "| steady s | steady trades/s | of the Kafka consumer (same run) | seconds per stage |"
    )
    say(
        f"| {datetime.now(tz=UTC):%Y-%m-%d} | {result['machine']} | {result['trades']:,} "
        f"| {windows} | {per_batch:,} | {result['batches']} | {result['start_up_s']:.1f} "
        f"| {result['steady_s']:.1f} | {steady:,.0f} | {steady / ceiling:.2f} "
        f"({ceiling:,.0f} msg/s) | {stages} |"
    )
