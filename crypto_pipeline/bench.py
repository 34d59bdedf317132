"""Benchmarks: measured on the local stack, printed as a Markdown table row for bench/results.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from crypto_pipeline.clients import ensure_topic
from crypto_pipeline.console import say
from crypto_pipeline.replay.generator import generate, write_csv
from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.settings import Settings
from crypto_pipeline.stack.artifacts import StackError, kafka_jars, require_tool

BENCH_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
JAVA_RESULT = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def bench_rows_file(settings: Settings, rows: int) -> Path:
    """A generated file of exactly `rows` candles, cached under the stack directory."""
    path = settings.stack_dir / "bench" / f"generated_{rows}.csv.gz"
    if path.exists():
        return path
    per_symbol_days = rows / len(BENCH_SYMBOLS) / 1440
    say(f"[bench] generating {rows:,} rows into {path}")
    candles = generate(BENCH_SYMBOLS, datetime(2025, 1, 1, tzinfo=UTC), per_symbol_days, "1m", 11)
    write_csv(candles[:rows], path)
    return path


def java_producer_performance(
    settings: Settings, topic: str, records: int, record_size: int
) -> float:
    """Kafka's own producer benchmark with the same batching, acks and compression."""
    java = require_tool("java")
    ensure_topic(settings, topic, partitions=3)  # the broker does not auto-create topics
    command = [
        java,
        "-Xmx1g",
        "-cp",
        f"{kafka_jars(settings)}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={settings.kafka_bootstrap_servers}",
        "acks=all",
        "linger.ms=20",
        f"batch.size={512 * 1024}",
        "compression.type=lz4",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    matches = JAVA_RESULT.findall(output.stdout)
    if output.returncode != 0 or not matches:
        raise StackError(f"ProducerPerformance failed: {output.stderr.strip()[-500:]}")
    return float(matches[-1][1])


def bench_producer(settings: Settings, rows: int) -> None:
    path = bench_rows_file(settings, rows)
    topic = f"bench.producer.{int(time.time())}"
    say(f"[bench] replaying {rows:,} rows at --speed max into {topic}")
    summary = replay(ReplayOptions(path=path, topic=topic, partitions=3), settings)
    python_rate = summary.messages_per_s
    record_size = round(summary.bytes_sent / max(summary.sent, 1))
    say(f"[bench] ProducerPerformance: {rows:,} records of {record_size} bytes")
    java_rate = java_producer_performance(settings, f"{topic}.java", rows, record_size)
    ratio = python_rate / java_rate
    say(f"python replay producer : {python_rate:>12,.0f} messages/s")
    say(f"Kafka ProducerPerformance: {java_rate:>10,.0f} messages/s")
    say(f"ratio python/java      : {ratio:>12.2f}")
    say("")
    say("| date | machine | rows | record bytes | python msg/s | java msg/s | ratio |")
    say(
        f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {rows:,} | {record_size} "
        f"| {python_rate:,.0f} | {java_rate:,.0f} | {ratio:.2f} |"
    )


def _run_spark_job(settings: Settings, topic: str, checkpoint: Path, sinks: str) -> float:
    """Wall-clock seconds of one available-now run of the job (Spark start-up included)."""
    command = [sys.executable, "-m", "spark_jobs.main", "--trigger", "available-now"]
    args = ["--topic", topic, "--mongo-database", topic.replace(".", "_"), "--measurement", topic]
    started = time.monotonic()
    result = subprocess.run(
        [*command, *args, "--checkpoint-dir", str(checkpoint), "--sinks", sinks],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"the Spark job failed: {result.stderr.strip()[-800:]}")
    return time.monotonic() - started


def bench_stream(settings: Settings, rows: int) -> None:
    path = bench_rows_file(settings, rows)
    topic = f"bench.stream.{int(time.time())}"
    say(f"[bench] replaying {rows:,} rows into {topic}")
    replay(ReplayOptions(path=path, topic=topic), settings)
    checkpoints = settings.stack_dir / "bench" / "checkpoints" / topic
    results = {}
    for sinks in ("noop", "mongo,influx"):
        say(f"[bench] Spark job, available-now, windows 5m/1h/4h, sinks {sinks}")
        seconds = _run_spark_job(settings, topic, checkpoints / sinks.replace(",", "_"), sinks)
        results[sinks] = seconds
        say(f"[bench]   {seconds:.1f} s, {rows / seconds:,.0f} events/s")
    say("")
    say("| date | machine | rows | sinks | seconds | events/s |")
    for sinks, seconds in results.items():
        say(
            f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {rows:,} | {sinks} "
            f"| {seconds:.1f} | {rows / seconds:,.0f} |"
        )
