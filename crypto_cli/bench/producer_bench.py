"""`crypto-pipeline bench producer`: the replay's rate against Kafka's own producer in the same
run, and the bulk replay's peak memory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from crypto_cli.bench.workloads import bench_file, tree_rss_bytes
from crypto_pipeline.benchmarking import machine_description
from crypto_pipeline.clients import (
    ensure_topic,
)
from crypto_pipeline.console import say
from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.settings import Settings
from local_stack.artifacts import StackError, kafka_jars, require_tool

JAVA_RESULT = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


def java_producer_performance(
    settings: Settings, topic: str, records: int, record_size: int
) -> float:
    """Kafka's own producer benchmark with the same batching, acks and compression."""
    java = require_tool("java")
    # The broker does not auto-create topics.
    ensure_topic(settings.kafka.bootstrap_servers, topic, partitions=3)
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
        f"bootstrap.servers={settings.kafka.bootstrap_servers}",
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


def replay_rate(settings: Settings, path: Path, topic: str, engine: str) -> tuple[float, int]:
    """Messages/s of one `--speed max` replay with the engine, and its mean record size."""
    say(f"[bench] {engine} replay of {path.name} into {topic}")
    options = ReplayOptions(path=path, topic=topic, partitions=3, engine=engine)
    summary = replay(options, settings.kafka.bootstrap_servers)
    return summary.messages_per_s, round(summary.bytes_sent / max(summary.sent, 1))


def peak_replay_rss(settings: Settings, path: Path, topic: str) -> int:
    """Peak resident memory of `crypto-pipeline replay --engine bulk` (all its processes)."""
    command = [sys.executable, "-m", "crypto_cli", "replay", str(path), "--quiet"]
    process = subprocess.Popen(
        [*command, "--engine", "bulk", "--topic", topic],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers},
        stdout=subprocess.DEVNULL,
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        time.sleep(0.1)
    if process.returncode != 0:
        raise StackError(f"the bulk replay of {path} exited with {process.returncode}")
    return peak


def bench_producer(settings: Settings, rows: int, memory_rows: int, kind: str) -> None:
    """Both replay engines and Kafka's own producer on the same broker in one run, on a file of
    `rows` candles or trades (`kind`), then the bulk replay's peak memory for `rows` and for
    `memory_rows`."""
    path = bench_file(settings, rows, kind)
    topic = f"bench.producer.{int(time.time())}"
    paced_rate, record_size = replay_rate(settings, path, f"{topic}.paced", "paced")
    bulk_rate, _ = replay_rate(settings, path, f"{topic}.bulk", "bulk")
    say(f"[bench] ProducerPerformance: {rows:,} records of {record_size} bytes")
    java_rate = java_producer_performance(settings, f"{topic}.java", rows, record_size)
    say(f"paced replay (kafka-python)  : {paced_rate:>12,.0f} messages/s")
    say(f"bulk replay (librdkafka)     : {bulk_rate:>12,.0f} messages/s")
    say(f"Kafka ProducerPerformance    : {java_rate:>12,.0f} messages/s")
    say("")
    say(
        "| date | machine | rows | record bytes | paced msg/s | bulk msg/s | java msg/s "
        "| paced/java | bulk/java |"
    )
    say(
        f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {rows:,} {kind} "
        f"| {record_size} "
        f"| {paced_rate:,.0f} | {bulk_rate:,.0f} | {java_rate:,.0f} | {paced_rate / java_rate:.2f} "
        f"| {bulk_rate / java_rate:.2f} |"
    )
    if not memory_rows:
        return
    peaks = {}
    for count in sorted({rows, memory_rows}):
        file = bench_file(settings, count, kind)
        say(f"[bench] peak memory of a bulk replay of {count:,} rows")
        peaks[count] = peak_replay_rss(settings, file, f"{topic}.rss.{count}")
    say("")
    say("| date | rows | file bytes | bulk replay peak RSS (all processes) |")
    for count, peak in peaks.items():
        size = bench_file(settings, count, kind).stat().st_size
        say(f"| {datetime.now(tz=UTC):%Y-%m-%d} | {count:,} | {size:,} | {peak / 2**20:,.0f} MiB |")
