"""`crypto-pipeline bench stream --compute-only`: the job available-now over a large topic, its
steady rate against Kafka's own consumer on the same topic."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime

from crypto_cli.bench.workloads import bench_job, bench_topic, run_job
from crypto_pipeline.benchmarking import machine_description
from crypto_pipeline.clients import (
    mongo_client,
)
from crypto_pipeline.console import say
from crypto_pipeline.settings import Settings
from local_stack.artifacts import StackError, kafka_jars, require_tool
from spark_jobs.interface.config import WINDOW_SINKS


def kafka_consumer_performance(settings: Settings, topic: str, messages: int) -> float:
    """Kafka's own consumer benchmark on the same topic: messages/s, the ceiling of any reader."""
    output = subprocess.run(
        [
            require_tool("java"),
            *["-Xmx1g", "-cp", f"{kafka_jars(settings)}/*"],
            "org.apache.kafka.tools.ConsumerPerformance",
            *["--bootstrap-server", settings.kafka.bootstrap_servers, "--topic", topic],
            *["--messages", str(messages), "--timeout", "120000", "--hide-header"],
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    lines = [line for line in output.stdout.splitlines() if line.count(",") >= 9]
    if output.returncode != 0 or not lines:
        raise StackError(f"ConsumerPerformance failed: {output.stderr.strip()[-500:]}")
    return float(lines[-1].split(",")[9])  # fetch.nMsg.sec: without the group's start-up


def bench_stream(settings: Settings, rows: int, compute_only: bool = False) -> None:
    """The job available-now over `rows` candles on SPARK_MASTER: steady-state rate (first batch
    start to last batch end) apart from start-up, compute only and (unless `compute_only`) into
    both sinks, against Kafka's consumer."""
    topic = bench_topic(settings, rows)
    say("[bench] Kafka ConsumerPerformance on the topic")
    ceiling = kafka_consumer_performance(settings, topic, rows)
    run_id = int(time.time())
    results = {}
    # The job's sinks with and without the candles topic: its cost.
    every = (("noop",), ("mongo", "influx"), WINDOW_SINKS)
    for sinks in (("noop",),) if compute_only else every:
        label = ",".join(sinks)
        checkpoint = settings.stack_dir / "bench" / "checkpoints" / f"{topic}.{run_id}.{label}"
        say(
            f"[bench] the job on {settings.spark_master}, available-now, windows 5m,1h,4h, "
            f"sinks {label}"
        )
        # Empty sinks every run: a database grown by earlier runs would measure its own size.
        job = bench_job(settings, topic, checkpoint, f"{topic}.{run_id}", sinks=sinks)
        try:
            summary = run_job(job)
        finally:
            with mongo_client(job.mongo.uri) as client:
                client.drop_database(job.mongo.database)
        results[label] = summary
        steady = summary["input_rows"] / summary["processing_seconds"]
        say(
            f"[bench]   {steady:,.0f} events/s steady over {summary['batches']} batches, "
            f"{summary['wall_seconds']:.1f} s in all; seconds per stage "
            f"{summary['seconds_per_stage']}"
        )
    say("")
    say(f"Kafka ConsumerPerformance on {topic}: {ceiling:,.0f} messages/s")
    say(
        "| date | machine | rows | sinks | batches | start-up s | steady s | steady events/s "
        "| of the Kafka consumer | seconds per stage |"
    )
    for label, summary in results.items():
        steady_seconds = summary["processing_seconds"]
        steady = summary["input_rows"] / steady_seconds
        stages = ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds_per_stage"].items())
        say(
            f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()}, Spark "
            f"{settings.spark_master} | {rows:,} | {label} "
            f"| {summary['batches']} | {summary['wall_seconds'] - steady_seconds:.1f} "
            f"| {steady_seconds:.1f} | {steady:,.0f} | {steady / ceiling:.2f} | {stages} |"
        )
