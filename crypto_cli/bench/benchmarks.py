"""Benchmarks: measured on the local stack, printed as a Markdown table row for bench/results.md."""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crypto_pipeline.clients import (
    end_offsets,
    ensure_topic,
    influx_client,
    mongo_client,
    read_records,
)
from crypto_pipeline.console import say
from crypto_pipeline.readback import flux_string
from crypto_pipeline.replay.generator import INTERVALS_MS, generate, write_csv
from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.settings import KafkaTarget, Settings
from crypto_pipeline.windows import window_ms
from local_stack.artifacts import StackError, kafka_jars, require_tool
from spark_jobs.interface import launch
from spark_jobs.interface.config import DEFAULT_WINDOWS, JobConfig
from spark_jobs.interface.summary import read_summary

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


def bench_producer(settings: Settings, rows: int, memory_rows: int) -> None:
    """Both replay engines and Kafka's own producer on the same broker in one run, then the
    bulk replay's peak memory for `rows` and for `memory_rows`."""
    path = bench_rows_file(settings, rows)
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
        f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {rows:,} | {record_size} "
        f"| {paced_rate:,.0f} | {bulk_rate:,.0f} | {java_rate:,.0f} | {paced_rate / java_rate:.2f} "
        f"| {bulk_rate / java_rate:.2f} |"
    )
    if not memory_rows:
        return
    peaks = {}
    for count in sorted({rows, memory_rows}):
        file = bench_rows_file(settings, count)
        say(f"[bench] peak memory of a bulk replay of {count:,} rows")
        peaks[count] = peak_replay_rss(settings, file, f"{topic}.rss.{count}")
    say("")
    say("| date | rows | file bytes | bulk replay peak RSS (all processes) |")
    for count, peak in peaks.items():
        size = bench_rows_file(settings, count).stat().st_size
        say(f"| {datetime.now(tz=UTC):%Y-%m-%d} | {count:,} | {size:,} | {peak / 2**20:,.0f} MiB |")


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


def bench_topic(settings: Settings, rows: int) -> str:
    """A topic holding `rows` generated candles (5 symbols, 3 partitions), loaded once: later
    runs reuse it."""
    topic = f"bench.stream.{rows}"
    bootstrap = settings.kafka.bootstrap_servers
    loaded = sum(end_offsets(bootstrap, topic).values())
    if loaded == rows:
        say(f"[bench] reusing {topic} ({rows:,} rows)")
        return topic
    if loaded:
        raise StackError(
            f"{topic} holds {loaded:,} rows, not {rows:,}: `crypto-pipeline stack reset`"
        )
    path = bench_rows_file(settings, rows)
    say(f"[bench] loading {rows:,} rows into {topic} (once)")
    replay(ReplayOptions(path=path, topic=topic, partitions=3), bootstrap)
    return topic


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
    for sinks in (("noop",),) if compute_only else (("noop",), ("mongo", "influx")):
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


class SinkPoller:
    """How far each sink has got per symbol (the newest event its windows show), without loading
    either: it follows the 4h windows (few documents cover much event time) from where it last
    saw each symbol, MongoDB documents looked up by `_id`, InfluxDB over that bounded range."""

    WINDOW, AHEAD = "4h", 30

    def __init__(self, job: JobConfig, first_events: dict[str, int]) -> None:
        self.job = job
        self.size_ms = window_ms(self.WINDOW)
        self.seen = {sink: {s: e - 1 for s, e in first_events.items()} for sink in SINKS}
        self.mongo = mongo_client(job.mongo.uri)
        self.influx = influx_client(job.influx)

    def close(self) -> None:
        self.mongo.close()
        self.influx.close()

    def _start(self, event_ms: int) -> int:
        return event_ms - event_ms % self.size_ms

    def poll(self) -> dict[str, dict[str, int]]:
        for sink, visible in (("mongo", self._mongo()), ("influx", self._influx())):
            for symbol, event in visible.items():
                self.seen[sink][symbol] = max(self.seen[sink][symbol], event)
        return {sink: dict(seen) for sink, seen in self.seen.items()}

    def _mongo(self) -> dict[str, int]:
        """Each symbol's windows from the one last seen on, one `_id` lookup each, up to the first
        not written yet (FerretDB serves a lookup by `_id` from its index, `$in` by a scan)."""
        collection = self.mongo[self.job.mongo.database][self.job.mongo.collection]
        visible: dict[str, int] = {}
        for symbol, event in self.seen["mongo"].items():
            for step in range(self.AHEAD):
                start = self._start(event) + step * self.size_ms
                doc = collection.find_one({"_id": f"{symbol}|{self.WINDOW}|{start}"})
                if doc is not None:
                    visible[symbol] = doc["last_event_ms"]
                elif symbol in visible or step > 0:  # past the newest written window
                    break
        return visible

    def _influx(self) -> dict[str, int]:
        start = min(self._start(event) for event in self.seen["influx"].values())
        stop = max(self._start(event) for event in self.seen["influx"].values())
        stop += self.AHEAD * self.size_ms
        query = (
            f"from(bucket: {flux_string(self.job.influx.bucket)})"
            f" |> range(start: {start // 1000}, stop: {stop // 1000})"
            f" |> filter(fn: (r) => r._measurement == {flux_string(self.job.influx.measurement)}"
            f' and r.window == {flux_string(self.WINDOW)} and r._field == "last_event_ms")'
            ' |> group(columns: ["symbol"]) |> max()'
        )
        tables = self.influx.query_api().query(query)
        return {r.values["symbol"]: int(r.get_value()) for t in tables for r in t.records}


SINKS = ("mongo", "influx")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class LatencyRun:
    rate: int
    seconds: int
    produced: int
    latencies_ms: dict[str, list[float]]
    batch_ms: list[int]
    processed: int

    @property
    def kept_up(self) -> bool:
        """The job read everything that was sent, and its batches took no longer than the 1 s
        trigger on average (longer ones would let a backlog grow)."""
        if not self.batch_ms:  # every batch within the warm-up: nothing says it kept up
            return False
        mean_ms = sum(self.batch_ms) / len(self.batch_ms)
        return self.processed >= self.produced and mean_ms <= 1000


def latency_run(settings: Settings, rate: int, seconds: int) -> LatencyRun:
    """The live job (windows 5m,1h,4h, 1 s trigger) while a separate producer process sends
    `rate` rows/s for `seconds`: per message, from its Kafka timestamp to the first poll at
    which each sink shows its event. Messages and batches of the first WARM_UP_S seconds (the
    JVM compiling, first connections) are left out of the figures."""
    rows = rate * seconds
    path = bench_rows_file(settings, rows)
    topic = f"bench.latency.{rate}.{int(time.time())}"
    bootstrap = settings.kafka.bootstrap_servers
    ensure_topic(bootstrap, topic, partitions=3)
    work = settings.stack_dir / "bench" / topic
    work.mkdir(parents=True)
    job = bench_job(
        settings,
        topic,
        work / "checkpoint",
        topic,
        trigger="1 second",
        windows=DEFAULT_WINDOWS,
        status_file=str(work / "status.json"),
    )
    log_path = work / "job.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            launch.driver_command(job), env=launch.process_environment(job), stdout=log, stderr=log
        )
    first, last = _event_range(path)
    poller = SinkPoller(job, first)
    try:
        while not (work / "status.json").exists():
            if process.poll() is not None:
                raise StackError(f"the streaming job exited during start-up; see {log_path}")
            time.sleep(0.5)
        # 1-minute candles of len(BENCH_SYMBOLS) symbols: one row per 60 s / symbols of event time.
        speed = rate * INTERVALS_MS["1m"] / 1000 / len(BENCH_SYMBOLS)
        say(f"[bench] {rate:,} rows/s for {seconds} s into {topic}; polling both sinks")
        producer = subprocess.Popen(
            [
                *[sys.executable, "-m", "crypto_cli", "replay", str(path)],
                *["--topic", topic, "--speed", f"{speed}", "--quiet"],
            ],
            stdout=subprocess.DEVNULL,
        )
        timelines: dict[str, list[tuple[float, dict[str, int]]]] = {sink: [] for sink in SINKS}
        deadline = time.time() + seconds + 120
        while time.time() < deadline:
            polled = poller.poll()
            now = time.time()
            for sink, visible in polled.items():
                timelines[sink].append((now, visible))
            caught_up = all(
                all(v.get(s, -1) >= e for s, e in last.items()) for v in polled.values()
            )
            if producer.poll() is not None and caught_up:
                break
            time.sleep(0.2)
        producer.wait()
    finally:
        poller.close()
        process.terminate()
        process.wait(timeout=120)
    produced = _sent_messages(settings, topic)
    latencies = {sink: _latencies(timeline, produced) for sink, timeline in timelines.items()}
    batch_ms, processed = _job_batches(log_path)
    return LatencyRun(rate, seconds, len(produced), latencies, batch_ms, processed)


def _event_range(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """The first and the last event time of each symbol in the file."""
    from crypto_pipeline.replay.input_files import read_rows

    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for row in read_rows(path):
        if row.candle is not None:
            symbol, event = row.candle.symbol, row.candle.open_time_ms
            first[symbol] = min(first.get(symbol, event), event)
            last[symbol] = max(last.get(symbol, event), event)
    return first, last


def _sent_messages(settings: Settings, topic: str) -> list[tuple[str, int, float]]:
    """(symbol, event time, Kafka timestamp in s) of every message in the topic."""
    return [
        (message["symbol"], message["event_time_ms"], timestamp / 1000)
        for message, timestamp in (
            (json.loads(value), timestamp)
            for value, timestamp in read_records(
                settings.kafka.bootstrap_servers, topic, timeout_s=600
            )
        )
    ]


WARM_UP_S = 20


def _latencies(
    timeline: list[tuple[float, dict[str, int]]], produced: list[tuple[str, int, float]]
) -> list[float]:
    """Per message sent after the warm-up: the first poll after it was sent at which the sink
    shows its event."""
    times = [t for t, _ in timeline]
    latencies = []
    steady_from = min(sent for _, _, sent in produced) + WARM_UP_S
    for symbol, event, sent in produced:
        if sent < steady_from:
            continue
        index = bisect.bisect_left(times, sent)
        while index < len(timeline) and timeline[index][1].get(symbol, -1) < event:
            index += 1
        if index < len(timeline):
            latencies.append((timeline[index][0] - sent) * 1000)
    return latencies


BATCH_LINE = re.compile(r"ohlcv batch \d+: (?P<rows>\d+) rows, [\d.]+ rows/s, (?P<ms>\d+) ms")


def _job_batches(log_path: Path) -> tuple[list[int], int]:
    """The duration of every batch that read rows and started after the first WARM_UP_S seconds
    of batches, and the rows all batches read, from the job's log."""
    matches = [BATCH_LINE.search(line) for line in log_path.read_text().splitlines()]
    batches = [m for m in matches if m]
    steady, elapsed_ms = [], 0
    for match in batches:
        if elapsed_ms >= WARM_UP_S * 1000:
            steady.append(int(match["ms"]))
        elapsed_ms += int(match["ms"])
    return steady, sum(int(m["rows"]) for m in batches)


def bench_latency(settings: Settings, rate: int, seconds: int, search: bool) -> None:
    runs = [latency_run(settings, rate, seconds)]
    if search:  # doubling, then halving the step, with shorter runs
        low, high = (rate, None) if runs[0].kept_up else (None, rate)
        step_seconds = max(60, seconds // 2)
        probe = rate * 2 if runs[0].kept_up else rate // 2
        for _ in range(5):
            run = latency_run(settings, probe, step_seconds)
            runs.append(run)
            if run.kept_up:
                low = probe
            else:
                high = probe
            probe = probe * 2 if high is None else ((low or 0) + high) // 2
            if high is not None and low is not None and high - low <= max(250, low // 10):
                break
        say(f"[bench] highest rate that kept up: {low or 0:,} rows/s")
    say("")
    say(
        f"| date | machine | rows/s | seconds | messages after {WARM_UP_S} s | sink "
        "| latency p50 / p95 / p99 ms | batch p50 / p99 ms | kept up |"
    )
    for run in runs:
        batches = f"{_percentile(run.batch_ms, 0.5):,.0f} / {_percentile(run.batch_ms, 0.99):,.0f}"
        for sink, latencies in run.latencies_ms.items():
            shown = " / ".join(f"{_percentile(latencies, q):,.0f}" for q in (0.5, 0.95, 0.99))
            say(
                f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {run.rate:,} "
                f"| {run.seconds} | {len(latencies):,}/{run.produced:,} | {sink} | {shown} "
                f"| {batches} | {'yes' if run.kept_up else 'no'} |"
            )


def _aggregate_rows(count: int) -> pd.DataFrame:
    """`count` distinct 1-minute aggregates of BENCH_SYMBOLS, as the job's state step emits
    them."""
    start_ms = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    index = np.arange(count)
    price = 100.0 + index % 97
    volume = 10.0 + index % 13
    window_start = start_ms + (index // len(BENCH_SYMBOLS)) * 60_000
    return pd.DataFrame(
        {
            "symbol": np.array(BENCH_SYMBOLS)[index % len(BENCH_SYMBOLS)],
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
        }
    )


def bench_sinks(settings: Settings, docs: int) -> None:
    """The job's own sink functions on one micro-batch of `docs` windows, once into empty sinks
    (every window new) and once more (every window replaced), against a plain `insert_many` of
    the same documents into an empty collection as the reference."""
    from spark_jobs.sinks import aggregate_columns, mongo_documents, write_influx, write_mongo

    name = f"bench_sinks_{int(time.time())}"
    job = bench_job(settings, name, settings.stack_dir / "bench" / "checkpoints" / name, name)
    columns = aggregate_columns(_aggregate_rows(docs))
    with mongo_client(job.mongo.uri) as client:
        collection = client[job.mongo.database][f"{job.mongo.collection}_reference"]
        started = time.monotonic()
        collection.insert_many(mongo_documents(columns), ordered=False)
        reference = docs / (time.monotonic() - started)
    results = {}
    for sink, write in (("mongodb", write_mongo), ("influxdb", write_influx)):
        for state in ("new", "existing"):
            say(f"[bench] {sink}: {docs:,} {state} windows")
            started = time.monotonic()
            write(columns, job)
            results[(sink, state)] = docs / (time.monotonic() - started)
    say("")
    say(f"MongoDB at {job.mongo.redacted_uri}, InfluxDB at {job.influx.url}")
    say("| date | machine | windows | sink | new /s | existing /s | insert_many /s (reference) |")
    for sink in ("mongodb", "influxdb"):
        say(
            f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {docs:,} | {sink} "
            f"| {results[(sink, 'new')]:,.0f} | {results[(sink, 'existing')]:,.0f} "
            f"| {reference:,.0f} |"
        )
