"""`crypto-pipeline bench trades --live`: candles from trades at an exchange's rate. The trades
job runs continuously (1 s trigger, windows 1s,1m,5m,1h) while a paced librdkafka producer on the
same machine (crypto_cli/bench/paced_trades.py) sends `rate` trades/s for `seconds`, each stamped
with the time it was sent. Per trade: from that time to the first poll (every POLL_S) at which
the sink's 1m window of its symbol shows a trade at least as new. Trades of the first WARM_UP_S
seconds are left out of the figures. At the end every sink's 1m windows must count exactly the
trades sent."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from crypto_cli.bench.latency_bench import WARM_UP_S, SinkClients, job_batches, percentile
from crypto_cli.bench.paced_trades import BENCH_EXCHANGE
from crypto_cli.bench.workloads import continuous_bench_job, wait_for_start
from crypto_pipeline.benchmarking import BENCH_SYMBOLS, machine_description
from crypto_pipeline.console import say
from crypto_pipeline.formats.window_values import window_id
from crypto_pipeline.processes import stop_child
from crypto_pipeline.readback import flux_string, read_influx, read_mongo
from crypto_pipeline.settings import Settings
from spark_jobs.interface import launch
from spark_jobs.interface.config import TRADES, JobConfig, split_names

WINDOWS = "1s,1m,5m,1h"
MINUTE_MS = 60_000
POLL_S = 0.2
SINKS = ("mongo", "influx")


class NewestTrades(SinkClients):
    """The newest trade each sink shows per symbol, from the 1m windows: MongoDB documents
    looked up by `_id` (the current minute and the one before), InfluxDB over the last minutes."""

    def poll(self, now_ms: int) -> dict[str, dict[str, int]]:
        collection = self.mongo[self.job.mongo.database][self.job.mongo.collection]
        minute = now_ms - now_ms % MINUTE_MS
        mongo: dict[str, int] = {}
        for symbol in BENCH_SYMBOLS:
            for start in (minute, minute - MINUTE_MS):
                doc = collection.find_one({"_id": window_id(BENCH_EXCHANGE, symbol, "1m", start)})
                if doc is not None:
                    mongo[symbol] = int(doc["last_event_ms"])
                    break
        query = (
            f"from(bucket: {flux_string(self.job.influx.bucket)})"
            " |> range(start: -3m)"
            f" |> filter(fn: (r) => r._measurement == {flux_string(self.job.influx.measurement)}"
            ' and r.window == "1m" and r._field == "last_event_ms")'
            ' |> group(columns: ["symbol"]) |> max()'
        )
        tables = self.influx.query_api().query(query)
        influx = {r.values["symbol"]: int(r.get_value()) for t in tables for r in t.records}
        return {"mongo": mongo, "influx": influx}


@dataclass
class LiveTradesRun:
    rate: int
    seconds: int
    sent: dict[str, int]  # symbol -> trades sent
    sent_per_s: float
    latencies_ms: dict[str, tuple[np.ndarray, np.ndarray]]  # sink -> (latency, trades)
    batch_ms: list[int]
    counted: dict[str, dict[str, int]]  # sink -> symbol -> trades its 1m windows count

    @property
    def kept_up(self) -> bool:
        """Each symbol's trades counted exactly in both sinks, every trade shown, and batches no
        longer than the trigger on average."""
        if not self.batch_ms:
            return False
        mean_ms = sum(self.batch_ms) / len(self.batch_ms)
        shown = all(np.isfinite(values).all() for values, _ in self.latencies_ms.values())
        return shown and all(n == self.sent for n in self.counted.values()) and mean_ms <= 1000


def latencies(
    ticks: np.ndarray, polls: list[tuple[int, dict[str, int]]], symbols: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per tick and symbol after the warm-up: the first poll showing a trade at least as new as
    the tick's, minus the tick's time (infinite if none did); weighed by the tick's trades of
    that symbol. A poll's time is when it returned."""
    poll_ms = np.array([at for at, _ in polls] + [0], dtype=np.int64)
    steady = ticks[:, 0] >= ticks[0, 0] + WARM_UP_S * 1000
    values, weights = [], []
    for column, symbol in enumerate(symbols, start=1):
        shown = np.maximum.accumulate(np.array([seen.get(symbol, -1) for _, seen in polls]))
        sent_ms, count = ticks[steady, 0], ticks[steady, column]
        first = np.searchsorted(shown, sent_ms, side="left")
        values.append(np.where(first < len(polls), poll_ms[first] - sent_ms, np.inf))
        weights.append(count)
    return np.concatenate(values), np.concatenate(weights)


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    if not weights.sum():
        return float("nan")
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1])])


def counted_trades(job: JobConfig) -> dict[str, dict[str, int]]:
    """The trades each sink's 1m windows count, per symbol."""
    stored = {"mongo": read_mongo(job.mongo)[0], "influx": read_influx(job.influx)}
    counted: dict[str, dict[str, int]] = {sink: {} for sink in stored}
    for sink, windows in stored.items():
        for (_, symbol, window, _), values in windows.items():
            if window == "1m":
                counted[sink][symbol] = counted[sink].get(symbol, 0) + int(values["trades"])
    return counted


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        stop_child(process, timeout_s=120)


def live_trades_run(settings: Settings, rate: int, seconds: int) -> LiveTradesRun:
    topic = f"bench.trades-live.{rate}.{int(time.time())}"
    job, work = continuous_bench_job(settings, topic, source=TRADES, windows=split_names(WINDOWS))
    log_path, sent_path = work / "job.log", work / "sent.npy"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            launch.driver_command(job), env=launch.process_environment(job), stdout=log, stderr=log
        )
    polls: list[tuple[int, dict[str, dict[str, int]]]] = []
    producer: subprocess.Popen[bytes] | None = None
    newest: NewestTrades | None = None
    try:
        wait_for_start(process, work)
        newest = NewestTrades(job)
        say(f"[bench] {rate:,} trades/s for {seconds} s into {job.kafka.topic}; polling both sinks")
        producer = subprocess.Popen(
            [
                *[sys.executable, "-m", "crypto_cli.bench.paced_trades"],
                *["--bootstrap", settings.kafka.bootstrap_servers, "--topic", job.kafka.topic],
                *["--symbols", ",".join(BENCH_SYMBOLS), "--rate", str(rate)],
                *["--seconds", str(seconds), "--sent", str(sent_path)],
            ]
        )
        deadline, reported, started = time.time() + seconds + 120, time.time(), time.time()
        while time.time() < deadline:
            seen = newest.poll(int(time.time() * 1000))
            now_ms = int(time.time() * 1000)
            polls.append((now_ms, seen))
            if process.poll() is not None:
                raise SystemExit(f"bench trades: the job exited; see {log_path}")
            if producer.poll() is not None:
                if producer.returncode:
                    raise SystemExit(f"bench trades: the producer failed ({producer.returncode})")
                ticks = np.load(sent_path)
                # Each symbol's newest trade sent, shown in both sinks.
                newest_sent = {
                    symbol: ticks[ticks[:, column] > 0, 0].max()
                    for column, symbol in enumerate(BENCH_SYMBOLS, start=1)
                }
                if all(
                    shown.get(s, -1) >= ms
                    for shown in seen.values()
                    for s, ms in newest_sent.items()
                ):
                    break
            if time.time() - reported >= 10:
                reported = time.time()
                behind = {
                    sink: f"{(now_ms - min(shown.values(), default=polls[0][0])) / 1000:.1f} s"
                    for sink, shown in seen.items()
                }
                say(f"[bench] {time.time() - started:.0f} s: newest trade behind {behind}")
            time.sleep(POLL_S)
        ticks = np.load(sent_path)
        sent = dict(zip(BENCH_SYMBOLS, ticks[:, 1:].sum(axis=0).tolist(), strict=True))
        counted = counted_trades(job)
        # A trade of a partition read behind may still come: a few seconds more, not forever.
        for _ in range(10):
            if all(per_symbol == sent for per_symbol in counted.values()):
                break
            time.sleep(1)
            counted = counted_trades(job)
    finally:
        _stop(producer)
        if newest is not None:
            newest.close()
        _stop(process)
    return LiveTradesRun(
        rate,
        seconds,
        sent,
        sum(sent.values()) / ((ticks[-1, 0] - ticks[0, 0]) / 1000),
        {
            sink: latencies(ticks, [(at, seen[sink]) for at, seen in polls], BENCH_SYMBOLS)
            for sink in SINKS
        },
        job_batches(log_path, "trades")[0],
        counted,
    )


def bench_live_trades(settings: Settings, rate: int, seconds: int) -> None:
    run = live_trades_run(settings, rate, seconds)
    say("")
    say(
        "| date | machine | trades/s asked | trades/s sent | seconds | sink | counted / sent "
        f"| latency p50 / p95 / p99 ms (after {WARM_UP_S} s) | batch p50 / p99 ms | kept up |"
    )
    batches = f"{percentile(run.batch_ms, 0.5):,.0f} / {percentile(run.batch_ms, 0.99):,.0f}"
    for sink, (values, weights) in run.latencies_ms.items():
        shown = " / ".join(
            f"{weighted_percentile(values, weights, q):,.0f}" for q in (0.5, 0.95, 0.99)
        )
        say(
            f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {run.rate:,} "
            f"| {run.sent_per_s:,.0f} | {run.seconds} | {sink} "
            f"| {sum(run.counted[sink].values()):,} / {sum(run.sent.values()):,} | {shown} "
            f"| {batches} "
            f"| {'yes' if run.kept_up else 'no'} |"
        )
