"""`crypto-pipeline bench stream`: end-to-end latency of the continuous job at a fixed rate, from
a candle's send to its window in each sink."""

from __future__ import annotations

import bisect
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from crypto_cli.bench.workloads import bench_rows_file, continuous_bench_job, wait_for_start
from crypto_pipeline.benchmarking import BENCH_SYMBOLS, machine_description
from crypto_pipeline.clients import (
    influx_client,
    mongo_client,
    read_records,
)
from crypto_pipeline.console import say
from crypto_pipeline.formats import candle_message
from crypto_pipeline.formats.window_values import window_id
from crypto_pipeline.readback import flux_string
from crypto_pipeline.replay.generator import INTERVALS_MS
from crypto_pipeline.settings import Settings
from crypto_pipeline.windows import window_ms
from spark_jobs.interface import launch
from spark_jobs.interface.config import WINDOW_SINKS, JobConfig


class SinkClients:
    """A benchmark's clients of the job's two sinks, open while it polls them."""

    def __init__(self, job: JobConfig) -> None:
        self.job = job
        self.mongo = mongo_client(job.mongo.uri)
        self.influx = influx_client(job.influx)

    def close(self) -> None:
        self.mongo.close()
        self.influx.close()


class SinkPoller(SinkClients):
    """How far each sink has got per symbol (the newest event its windows show), without loading
    either: it follows the 4h windows (few documents cover much event time) from where it last
    saw each symbol, MongoDB documents looked up by `_id`, InfluxDB over that bounded range."""

    WINDOW, AHEAD = "4h", 30

    def __init__(self, job: JobConfig, first_events: dict[str, int]) -> None:
        super().__init__(job)
        self.size_ms = window_ms(self.WINDOW)
        self.seen = {sink: {s: e - 1 for s, e in first_events.items()} for sink in SINKS}

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
                doc = collection.find_one(
                    {"_id": window_id(candle_message.FILE_EXCHANGE, symbol, self.WINDOW, start)}
                )
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


def percentile(values: Sequence[float], q: float) -> float:
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
    sinks: tuple[str, ...] = WINDOW_SINKS

    @property
    def kept_up(self) -> bool:
        """The job read everything that was sent, and its batches took no longer than the 1 s
        trigger on average (longer ones would let a backlog grow)."""
        if not self.batch_ms:  # every batch within the warm-up: nothing says it kept up
            return False
        mean_ms = sum(self.batch_ms) / len(self.batch_ms)
        return self.processed >= self.produced and mean_ms <= 1000


def latency_run(
    settings: Settings, rate: int, seconds: int, sinks: tuple[str, ...] = WINDOW_SINKS
) -> LatencyRun:
    """The live job (windows 5m,1h,4h, 1 s trigger) while a separate producer process sends
    `rate` rows/s for `seconds`: per message, from its Kafka timestamp to the first poll at
    which each sink shows its event. Messages and batches of the first WARM_UP_S seconds (the
    JVM compiling, first connections) are left out of the figures."""
    rows = rate * seconds
    path = bench_rows_file(settings, rows)
    topic = f"bench.latency.{rate}.{int(time.time())}"
    job, work = continuous_bench_job(settings, topic, sinks=sinks)
    log_path = work / "job.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            launch.driver_command(job), env=launch.process_environment(job), stdout=log, stderr=log
        )
    first, last = _event_range(path)
    poller = SinkPoller(job, first)
    try:
        wait_for_start(process, work)
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
    batch_ms, processed = job_batches(log_path)
    return LatencyRun(rate, seconds, len(produced), latencies, batch_ms, processed, sinks)


def _event_range(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """The first and the last event time of each symbol in the file."""
    from crypto_pipeline.replay.input_files import read_rows

    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for row in read_rows(path):
        if row.record is not None:
            symbol, event = row.record.symbol, row.record.event_ms
            first[symbol] = min(first.get(symbol, event), event)
            last[symbol] = max(last.get(symbol, event), event)
    return first, last


def _sent_messages(settings: Settings, topic: str) -> list[tuple[str, int, float]]:
    """(symbol, event time, Kafka timestamp in s) of every message in the topic."""
    return [
        (message["symbol"], message["event_time_ms"], timestamp / 1000)
        for message, timestamp in (
            (candle_message.decode(value), timestamp)
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


def job_batches(log_path: Path, query: str = "ohlcv") -> tuple[list[int], int]:
    """The duration of every batch of `query` that read rows and started after the first
    WARM_UP_S seconds of batches, and the rows all batches read, from the job's log."""
    line_of_batch = re.compile(
        rf"{query} batch \d+: (?P<rows>\d+) rows, [\d.]+ rows/s, (?P<ms>\d+) ms"
    )
    matches = [line_of_batch.search(line) for line in log_path.read_text().splitlines()]
    batches = [m for m in matches if m]
    steady, elapsed_ms = [], 0
    for match in batches:
        if elapsed_ms >= WARM_UP_S * 1000:
            steady.append(int(match["ms"]))
        elapsed_ms += int(match["ms"])
    return steady, sum(int(m["rows"]) for m in batches)


def bench_latency(settings: Settings, rate: int, seconds: int, search: bool) -> None:
    """At `rate`: the job with its three sinks, and without the candles topic (its cost)."""
    runs = [
        latency_run(settings, rate, seconds),
        latency_run(settings, rate, seconds, sinks=("mongo", "influx")),
    ]
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
        "| latency p50 / p95 / p99 ms | batch p50 / p99 ms | kept up | the job's sinks |"
    )
    for run in runs:
        batches = f"{percentile(run.batch_ms, 0.5):,.0f} / {percentile(run.batch_ms, 0.99):,.0f}"
        for sink, latencies in run.latencies_ms.items():
            shown = " / ".join(f"{percentile(latencies, q):,.0f}" for q in (0.5, 0.95, 0.99))
            say(
                f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {run.rate:,} "
                f"| {run.seconds} | {len(latencies):,}/{run.produced:,} | {sink} | {shown} "
                f"| {batches} | {'yes' if run.kept_up else 'no'} | {','.join(run.sinks)} |"
            )
