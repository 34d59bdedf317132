"""What the benchmarks run on: generated candle files and topics (made once, reused), the Spark
job on a benchmark topic, and a process tree's memory."""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crypto_pipeline.benchmarking import BENCH_SYMBOLS
from crypto_pipeline.clients import end_offsets, ensure_topic
from crypto_pipeline.console import say
from crypto_pipeline.replay.generator import generate, write_csv
from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.replay.trade_generator import (
    Trades,
    generate_trades,
    write_canonical_trades,
)
from crypto_pipeline.settings import KafkaTarget, Settings, trades_topic
from local_stack.artifacts import StackError
from spark_jobs.interface import launch
from spark_jobs.interface.config import DEFAULT_WINDOWS, JobConfig
from spark_jobs.interface.summary import read_summary

BENCH_START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z


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


def bench_trades_file(settings: Settings, rows: int) -> Path:
    """A generated canonical trade file of exactly `rows` trades, cached as bench_rows_file."""
    path = settings.stack_dir / "bench" / f"generated_trades_{rows}.csv.gz"
    if path.exists():
        return path
    say(f"[bench] generating {rows:,} trades into {path}")
    rate = 200.0  # trades a second per symbol, usually (bursts and quiet minutes vary it)
    seconds = math.ceil(rows / (rate * len(BENCH_SYMBOLS)) * 1.5)
    trades = generate_trades(BENCH_SYMBOLS, BENCH_START_MS, seconds, seed=11, rate=rate)
    if len(trades) < rows:
        raise StackError(f"generated {len(trades):,} trades, fewer than {rows:,}")
    columns = {name: values[:rows] for name, values in dataclasses.asdict(trades).items()}
    write_canonical_trades(Trades(**columns), path)
    return path


def bench_file(settings: Settings, rows: int, kind: str) -> Path:
    """`bench_trades_file` or `bench_rows_file`, as `kind` ("trades" or "candles") says."""
    return (
        bench_trades_file(settings, rows) if kind == "trades" else bench_rows_file(settings, rows)
    )


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (the bulk replay's workers)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue  # exited meanwhile
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) * 1024 if match else 0
        pending += [int(child) for child in children]
    return total


def bench_job(
    settings: Settings, topic: str, checkpoint: Path, sink_name: str, **overrides: object
) -> JobConfig:
    """The job on a benchmark topic, writing to a database and measurement named `sink_name`."""
    return JobConfig.from_settings(
        settings,
        kafka=KafkaTarget(settings.kafka.bootstrap_servers, topic),
        mongo=dataclasses.replace(settings.mongo, database=sink_name.replace(".", "_")),
        influx=dataclasses.replace(settings.influx, measurement=sink_name),
        checkpoint_dir=str(checkpoint),
        **overrides,
    )


def continuous_bench_job(
    settings: Settings, topic: str, **overrides: object
) -> tuple[JobConfig, Path]:
    """The continuous job (1 s trigger, the default windows unless overridden) on a new
    3-partition benchmark topic (the trades job: its trades topic), and its work folder
    (checkpoint, heartbeat `status.json`, log)."""
    work = settings.stack_dir / "bench" / topic
    work.mkdir(parents=True)
    job = bench_job(
        settings,
        topic,
        work / "checkpoint",
        topic,
        **{
            "trigger": "1 second",
            "windows": DEFAULT_WINDOWS,
            "status_file": str(work / "status.json"),
            **overrides,
        },
    )
    ensure_topic(settings.kafka.bootstrap_servers, job.kafka.topic, partitions=3)
    return job, work


def wait_for_start(job: subprocess.Popen[bytes], work: Path) -> None:
    """Until the continuous job's heartbeat exists (its query started)."""
    while not (work / "status.json").exists():
        if job.poll() is not None:
            raise StackError(f"the streaming job exited during start-up; see {work / 'job.log'}")
        time.sleep(0.5)


def run_job(job: JobConfig) -> dict[str, Any]:
    """One available-now run of the job as its own process: its summary (the last log line),
    with `wall_seconds` (Spark start-up included) added."""
    started = time.monotonic()
    result = subprocess.run(
        launch.driver_command(job),
        env=launch.process_environment(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"the Spark job failed: {result.stderr.strip()[-800:]}")
    summary = read_summary(result.stderr)
    summary["wall_seconds"] = time.monotonic() - started
    return summary


def bench_topic(settings: Settings, rows: int, kind: str = "candles") -> str:
    """A topic holding `rows` generated candles or trades (5 symbols, 3 partitions), loaded
    once: later runs reuse it. Trades are in the topic's trades topic, as a replay sends them."""
    topic = f"bench.stream.{rows}" if kind == "candles" else f"bench.trades.{rows}"
    records_topic = trades_topic(topic) if kind == "trades" else topic
    bootstrap = settings.kafka.bootstrap_servers
    loaded = sum(end_offsets(bootstrap, records_topic).values())
    if loaded == rows:
        say(f"[bench] reusing {records_topic} ({rows:,} rows)")
        return records_topic
    if loaded:
        raise StackError(
            f"{records_topic} holds {loaded:,} rows, not {rows:,}: `crypto-pipeline stack reset`"
        )
    path = bench_file(settings, rows, kind)
    say(f"[bench] loading {rows:,} rows into {records_topic} (once)")
    replay(ReplayOptions(path=path, topic=topic, partitions=3), bootstrap)
    return records_topic
