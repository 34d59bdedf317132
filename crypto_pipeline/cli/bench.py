"""Benchmarks: measured on the local stack, printed as a Markdown table row for bench/results.md."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crypto_pipeline.clients import ensure_topic, influx_client, mongo_client
from crypto_pipeline.console import say
from crypto_pipeline.readback import influx_measurement_query
from crypto_pipeline.replay.generator import generate, write_csv
from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.settings import KafkaTarget, Settings
from crypto_pipeline.stack.artifacts import StackError, kafka_jars, require_tool
from spark_jobs.config import JobConfig

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


def bench_producer(settings: Settings, rows: int) -> None:
    path = bench_rows_file(settings, rows)
    topic = f"bench.producer.{int(time.time())}"
    say(f"[bench] replaying {rows:,} rows at --speed max into {topic}")
    options = ReplayOptions(path=path, topic=topic, partitions=3)
    summary = replay(options, settings.kafka.bootstrap_servers)
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


def bench_job(settings: Settings, topic: str, checkpoint: Path, **overrides: object) -> JobConfig:
    """The job on a benchmark topic, writing to a database and measurement named after it."""
    return JobConfig.from_settings(
        settings,
        kafka=KafkaTarget(settings.kafka.bootstrap_servers, topic),
        mongo=dataclasses.replace(settings.mongo, database=topic.replace(".", "_")),
        influx=dataclasses.replace(settings.influx, measurement=topic),
        checkpoint_dir=str(checkpoint),
        **overrides,
    )


def _run_spark_job(settings: Settings, topic: str, checkpoint: Path, sinks: str) -> float:
    """Wall-clock seconds of one available-now run of the job (Spark start-up included)."""
    job = bench_job(settings, topic, checkpoint, sinks=tuple(sinks.split(",")))
    started = time.monotonic()
    result = subprocess.run(
        job.driver_command(),
        env={**os.environ, **job.to_env()},
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
    replay(ReplayOptions(path=path, topic=topic), settings.kafka.bootstrap_servers)
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


def _visible_by_symbol_influx(job: JobConfig) -> dict[str, int]:
    query = influx_measurement_query(
        job.influx,
        job.influx.measurement,
        ' |> filter(fn: (r) => r._field == "last_event_ms") |> group(columns: ["symbol"]) |> max()',
    )
    with influx_client(job.influx) as client:
        tables = client.query_api().query(query)
    return {r.values["symbol"]: int(r.get_value()) for t in tables for r in t.records}


def _visible_by_symbol_mongo(job: JobConfig) -> dict[str, int]:
    with mongo_client(job.mongo.uri) as client:
        newest = client[job.mongo.database][job.mongo.collection].find(
            {}, {"symbol": 1, "last_event_ms": 1}, sort=[("last_event_ms", -1)], limit=50
        )
        visible: dict[str, int] = {}
        for doc in newest:
            visible[doc["symbol"]] = max(visible.get(doc["symbol"], 0), doc["last_event_ms"])
    return visible


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.95, 0.99)]
    return " / ".join(f"{v * 1000:,.0f}" for v in pick)


def bench_latency(settings: Settings, rate: int, seconds: int) -> None:
    """Continuous job (1 s trigger, 5m windows) with a steady replay at `rate` rows/s: latency
    from each message's Kafka timestamp to the first poll at which its window in a sink shows it."""
    import bisect
    import threading

    from crypto_pipeline.replay.generator import INTERVALS_MS

    rows = rate * seconds
    path = bench_rows_file(settings, rows)
    topic = f"bench.latency.{int(time.time())}"
    ensure_topic(settings.kafka.bootstrap_servers, topic, partitions=3)
    status = settings.stack_dir / "bench" / f"{topic}.status.json"
    checkpoint = settings.stack_dir / "bench" / "checkpoints" / topic
    config = bench_job(
        settings, topic, checkpoint, trigger="1 second", windows=("5m",), status_file=str(status)
    )
    job = subprocess.Popen(
        config.driver_command(),
        env={**os.environ, **config.to_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not status.exists():
            if job.poll() is not None:
                raise StackError("the streaming job exited during start-up")
            time.sleep(0.5)
        # 1-minute candles of len(BENCH_SYMBOLS) symbols: one row per 60 s / symbols of event time.
        speed = rate * INTERVALS_MS["1m"] / 1000 / len(BENCH_SYMBOLS)
        say(f"[bench] replaying {rows:,} rows at {rate:,} rows/s into {topic}; polling both sinks")
        options = ReplayOptions(path=path, topic=topic, speed=speed)
        producer = threading.Thread(
            target=replay, args=(options, settings.kafka.bootstrap_servers), daemon=True
        )
        producer.start()
        timelines: dict[str, list[tuple[float, dict[str, int]]]] = {"mongo": [], "influx": []}
        last_event = read_last_event_ms(path)
        deadline = time.time() + seconds + 120
        while time.time() < deadline:
            polled = {
                "influx": _visible_by_symbol_influx(config),
                "mongo": _visible_by_symbol_mongo(config),
            }
            now = time.time()
            for sink, visible in polled.items():
                timelines[sink].append((now, visible))
            if all(v and min(v.values()) >= last_event for v in polled.values()):
                break
            time.sleep(0.25)
        producer.join()
    finally:
        job.terminate()
        job.wait(timeout=120)

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    produced: list[tuple[str, int, float]] = []
    while len(produced) < rows:
        for batch in consumer.poll(timeout_ms=2000, max_records=50_000).values():
            for record in batch:
                message = json.loads(record.value)
                produced.append(
                    (message["symbol"], message["event_time_ms"], record.timestamp / 1000)
                )
    consumer.close()
    say("| date | machine | rate rows/s | messages | sink | latency p50 / p95 / p99 ms |")
    for sink, timeline in timelines.items():
        times = [t for t, _ in timeline]
        latencies = []
        for symbol, event, sent in produced:
            # First poll at which the sink shows this symbol's events up to `event`.
            index = bisect.bisect_left(times, sent)
            while index < len(timeline) and timeline[index][1].get(symbol, -1) < event:
                index += 1
            if index < len(timeline):
                latencies.append(timeline[index][0] - sent)
        say(
            f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {rate:,} "
            f"| {len(latencies):,}/{len(produced):,} | {sink} | {_percentiles(latencies)} |"
        )


def read_last_event_ms(path: Path) -> int:
    from crypto_pipeline.replay.formats import read_rows

    return max(row.candle.open_time_ms for row in read_rows(path) if row.candle is not None)


def _aggregate_rows(count: int) -> list[dict[str, object]]:
    """`count` distinct 1-minute aggregates of BENCH_SYMBOLS, as the job emits them."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for index in range(count):
        symbol = BENCH_SYMBOLS[index % len(BENCH_SYMBOLS)]
        window_start = start + timedelta(minutes=index // len(BENCH_SYMBOLS))
        price = 100.0 + index % 97
        rows.append(
            {
                "symbol": symbol,
                "window": "1m",
                "window_start": window_start,
                "window_end": window_start + timedelta(minutes=1),
                "open": price,
                "high": price + 1.5,
                "low": price - 1.25,
                "close": price + 0.5,
                "volume": 10.0 + index % 13,
                "quote_volume": (10.0 + index % 13) * price,
                "vwap": price + 0.1,
                "trades": 5 + index % 7,
                "rows": 1,
                "first_event_ms": int(window_start.timestamp() * 1000),
                "last_event_ms": int(window_start.timestamp() * 1000),
            }
        )
    return rows


def bench_sinks(settings: Settings, docs: int) -> None:
    """The job's own sink functions on one batch of `docs` windows, once into empty sinks (every
    window new) and once more (every window replaced), against a plain `insert_many` of the same
    documents into an empty collection as the reference."""
    from crypto_pipeline.build_cache import spark_connectors_dir
    from crypto_pipeline.spark import build_spark_session
    from spark_jobs.sinks import mongo_documents, write_influx, write_mongo

    name = f"bench_sinks_{int(time.time())}"
    job = bench_job(settings, name, settings.stack_dir / "bench" / "checkpoints" / name)
    spark = build_spark_session(
        job.spark_master, spark_connectors_dir(settings.cache_dir), "crypto-bench-sinks"
    )
    spark.sparkContext.setLogLevel("WARN")
    try:
        batch = spark.createDataFrame(_aggregate_rows(docs)).cache()
        batch.count()
        reference_docs = [row.asDict() for row in mongo_documents(batch).collect()]
        with mongo_client(job.mongo.uri) as client:
            collection = client[job.mongo.database][f"{job.mongo.collection}_reference"]
            started = time.monotonic()
            collection.insert_many(reference_docs, ordered=False)
            reference = docs / (time.monotonic() - started)
        # Spark compiles and starts its Python workers on the first job: not part of a write.
        warm_up = dataclasses.replace(
            job,
            mongo=dataclasses.replace(job.mongo, collection=f"{job.mongo.collection}_warm_up"),
            influx=dataclasses.replace(job.influx, measurement=f"{name}_warm_up"),
        )
        small = spark.createDataFrame(_aggregate_rows(100))
        write_mongo(small, 0, warm_up)
        write_influx(small, 0, warm_up)
        results = {}
        for sink, write in (("mongodb", write_mongo), ("influxdb", write_influx)):
            for state in ("new", "existing"):
                say(f"[bench] {sink}: {docs:,} {state} windows")
                started = time.monotonic()
                write(batch, 0, job)
                results[(sink, state)] = docs / (time.monotonic() - started)
    finally:
        spark.stop()
    say("")
    say(f"MongoDB at {job.mongo.redacted_uri}, InfluxDB at {job.influx.url}")
    say("| date | machine | windows | sink | new /s | existing /s | insert_many /s (reference) |")
    for sink in ("mongodb", "influxdb"):
        say(
            f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {docs:,} | {sink} "
            f"| {results[(sink, 'new')]:,.0f} | {results[(sink, 'existing')]:,.0f} "
            f"| {reference:,.0f} |"
        )
