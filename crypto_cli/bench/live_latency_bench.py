"""`crypto-pipeline bench live --latency`: how long a live candle update takes from the exchange
to both sinks. The simulated exchange updates `symbols` symbols every `update_every_s` (Binance's
protocol, real time); one feed process sends them to Kafka; the continuous job (1 s trigger)
writes them. Per update: from the moment the feed received it (`received_ms`; the exchange's
event time plus the loopback, under a millisecond here) to the first poll at which the sink's 5m
window of its symbol shows its close."""

from __future__ import annotations

import bisect
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crypto_cli.bench.latency_bench import WARM_UP_S, SinkClients, percentile
from crypto_cli.bench.live_bench import bench_symbols
from crypto_cli.bench.workloads import continuous_bench_job, wait_for_start
from crypto_cli.live_command import SimulatorProcess, start_feed_process
from crypto_pipeline.benchmarking import machine_description
from crypto_pipeline.clients import read_records
from crypto_pipeline.console import say
from crypto_pipeline.formats import candle_message
from crypto_pipeline.formats.window_values import epoch_ms
from crypto_pipeline.readback import flux_string
from crypto_pipeline.settings import Settings
from crypto_pipeline.windows import window_ms
from spark_jobs.interface import launch

WINDOW = "5m"
EXCHANGE = "binance"
# Each poll scans the recent windows in FerretDB: more often would take the job's CPU.
POLL_S = 0.5
# symbol -> (window start ms, close) as a sink shows it
Shown = dict[str, tuple[int, float]]


class SinkCloses(SinkClients):
    """The close of each symbol's newest 5m window in both sinks, one query per sink."""

    def poll(self) -> dict[str, Shown]:
        since = datetime.now(tz=UTC) - timedelta(minutes=10)
        collection = self.mongo[self.job.mongo.database][self.job.mongo.collection]
        mongo: Shown = {}
        for doc in collection.find(
            {"exchange": EXCHANGE, "window": WINDOW, "window_start": {"$gte": since}},
            {"symbol": 1, "window_start": 1, "close": 1},
        ):
            start = epoch_ms(doc["window_start"])
            if start >= mongo.get(doc["symbol"], (-1, 0.0))[0]:
                mongo[doc["symbol"]] = (start, float(doc["close"]))
        query = (
            f"from(bucket: {flux_string(self.job.influx.bucket)}) |> range(start: -10m)"
            f" |> filter(fn: (r) => r._measurement == {flux_string(self.job.influx.measurement)}"
            f' and r.window == "{WINDOW}" and r._field == "close")'
            ' |> group(columns: ["symbol"]) |> last()'
        )
        influx: Shown = {
            record.values["symbol"]: (
                epoch_ms(record.get_time()),
                float(record.get_value()),
            )
            for table in self.influx.query_api().query(query)
            for record in table.records
        }
        return {"mongodb": mongo, "influxdb": influx}


@dataclass
class Update:
    symbol: str
    window_start_ms: int
    close: float
    received_s: float


def updates_sent(settings: Settings, topic: str) -> list[Update]:
    """Every in-progress or closed update the feed sent, except one whose close repeats the
    symbol's previous (a sink showing it says nothing of this one)."""
    size = window_ms(WINDOW)
    updates: list[Update] = []
    previous: dict[str, float] = {}
    for value, _ in read_records(settings.kafka.bootstrap_servers, topic, timeout_s=600):
        message = candle_message.decode(value)
        symbol, close = message["symbol"], float(message["close"])
        if previous.get(symbol) != close:
            start = message["event_time_ms"] - message["event_time_ms"] % size
            updates.append(Update(symbol, start, close, message["received_ms"] / 1000))
        previous[symbol] = close
    return updates


def latencies(
    timeline: list[tuple[float, Shown]], updates: list[Update], steady_from: float
) -> tuple[list[float], int]:
    """Per update received after `steady_from`: the first poll after it showing its window's
    close; and how many were replaced before any poll saw them."""
    times = [t for t, _ in timeline]
    found, replaced = [], 0
    for update in updates:
        if update.received_s < steady_from:
            continue
        index = bisect.bisect_left(times, update.received_s)
        want = (update.window_start_ms, update.close)
        while index < len(timeline) and timeline[index][1].get(update.symbol) != want:
            shown = timeline[index][1].get(update.symbol)
            if shown is not None and shown[0] > want[0]:
                break  # a later window already: this update was replaced unseen
            index += 1
        if index < len(timeline) and timeline[index][1].get(update.symbol) == want:
            found.append((timeline[index][0] - update.received_s) * 1000)
        else:
            replaced += 1
    return found, replaced


def bench_live_latency(
    settings: Settings, symbols: int, update_every_s: float, seconds: int
) -> None:
    names = bench_symbols(symbols)
    job, work = continuous_bench_job(settings, f"bench.live.latency.{int(time.time())}")
    topic = job.kafka.topic
    processes: list[subprocess.Popen[bytes]] = []
    simulator = SimulatorProcess(
        "--symbols", ",".join(names), "--push-every-s", str(update_every_s)
    )
    sinks = SinkCloses(job)
    timeline: dict[str, list[tuple[float, Shown]]] = {"mongodb": [], "influxdb": []}
    try:
        with (work / "job.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    launch.driver_command(job),
                    env=launch.process_environment(job),
                    stdout=log,
                    stderr=log,
                )
            )
        wait_for_start(processes[0], work)
        feed_log = work / "feed.log"
        processes.append(
            start_feed_process(settings, simulator, EXCHANGE, names, topic, feed_log, "--quiet")
        )
        say(
            f"[bench] {symbols} symbols updating every {update_every_s:g} s for {seconds} s "
            f"-> {topic}; polling both sinks"
        )
        started = time.time()
        next_say = started + 30
        while time.time() < started + seconds:
            polled = sinks.poll()
            now = time.time()
            for sink, shown in polled.items():
                timeline[sink].append((now, shown))
            if now >= next_say:
                say(f"[bench] {now - started:.0f} s, {len(polled['mongodb'])} symbols in MongoDB")
                next_say += 30
            time.sleep(POLL_S)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=120)
        simulator.stop()
        sinks.close()
    updates = updates_sent(settings, topic)
    steady_from = started + WARM_UP_S
    say("")
    say(
        f"| date | machine | symbols | update every | seconds | updates after {WARM_UP_S} s "
        "| sink | latency p50 / p95 / p99 ms | replaced unseen |"
    )
    for sink, polls in timeline.items():
        found, replaced = latencies(polls, updates, steady_from)
        figures = " / ".join(f"{percentile(found, q):,.0f}" for q in (0.5, 0.95, 0.99))
        say(
            f"| {datetime.now(tz=UTC):%Y-%m-%d} | {machine_description()} | {symbols} "
            f"| {update_every_s:g} s | {seconds} | {len(found):,} | {sink} | {figures} "
            f"| {replaced:,} |"
        )
