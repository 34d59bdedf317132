"""`crypto-pipeline bench api`: the candles API on the local stack.

- `GET /api/candles` of 10,000 windows (one series, 1m) among other series' windows: latency
  p50/p99 over HTTP, against the same `_id` range read with pymongo (the database's share);
- the live push: N WebSocket clients following one series while updates are written to the
  candles topic at a steady rate; per delivery, from the update's Kafka timestamp (the broker's
  append time) to its arrival at the client, with 1 client and with N in the same run.

The windows are written straight into MongoDB (and the updates into the topic) as the job writes
them: what is measured is the API, not the job."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer

from crypto_api.candle_store import id_range
from crypto_cli.bench.latency_bench import percentile
from crypto_cli.serve_command import ApiProcess
from crypto_pipeline.benchmarking import machine_description
from crypto_pipeline.clients import ensure_topic, kafka_admin, mongo_client
from crypto_pipeline.console import say
from crypto_pipeline.formats import candle_update, window_document
from crypto_pipeline.formats.window_values import FRONTIER, series_key
from crypto_pipeline.settings import Settings, candles_topic

START_MS = 1_735_689_600_000  # 2025-01-01
MINUTE_MS = 60_000
SERIES = ("BENCH0", "BENCH1", "BENCH2")
PAGES = (10_000, 1_000)  # the figure's page, and the chart page's
REQUESTS = 30


def _documents(symbol: str, windows: int) -> list[dict[str, Any]]:
    starts = [START_MS + i * MINUTE_MS for i in range(windows)]
    columns: dict[str, list[Any]] = {
        "exchange": ["bench"] * windows,
        "symbol": [symbol] * windows,
        "window": ["1m"] * windows,
        "window_start_ms": starts,
        "window_end_ms": [s + MINUTE_MS for s in starts],
        **{name: [100.0 + i % 7 for i in range(windows)] for name in ("open", "high", "low")},
        "close": [100.5] * windows,
        "volume": [float(i) for i in range(windows)],
        "quote_volume": [1000.0] * windows,
        "vwap": [100.2] * windows,
        "trades": [42] * windows,
        "rows": [1] * windows,
        "first_event_ms": starts,
        "last_event_ms": starts,
        "input_offsets": [{"0": i} for i in range(windows)],
    }
    return window_document.encode(columns)


def fill(settings: Settings, database: str, windows: int) -> None:
    with mongo_client(settings.mongo.uri) as client:
        collection = client[database][settings.mongo.collection]
        writers = client[database][settings.mongo.writers_collection]
        for symbol in SERIES:
            say(f"[bench] writing {windows:,} 1m windows of bench:{symbol}")
            documents = _documents(symbol, windows)
            for chunk in range(0, windows, 1_000):
                collection.insert_many(documents[chunk : chunk + 1_000], ordered=False)
            end = START_MS + windows * MINUTE_MS
            frontier = {"_id": FRONTIER + series_key("bench", symbol), "ends": {"1m": end}}
            writers.insert_one(frontier)


def http_latencies(
    api: ApiProcess, settings: Settings, database: str, page: int
) -> dict[str, list[float]]:
    """Milliseconds per GET of a page of `page` windows, and per pymongo read of the range."""
    end = START_MS + page * MINUTE_MS
    query = f"exchange=bench&symbol={SERIES[0]}&window=1m&start={START_MS}&end={end}&limit={page}"
    timings: dict[str, list[float]] = {"api": [], "pymongo": []}
    with mongo_client(settings.mongo.uri) as client:
        collection = client[database][settings.mongo.collection]
        for _ in range(REQUESTS):
            started = time.perf_counter()
            body = json.loads(api.get(f"/api/candles?{query}"))
            timings["api"].append((time.perf_counter() - started) * 1000)
            assert len(body["candles"]) == page, len(body["candles"])
            started = time.perf_counter()
            found = list(collection.find(id_range("bench", SERIES[0], "1m", START_MS, end)))
            timings["pymongo"].append((time.perf_counter() - started) * 1000)
            assert len(found) == page
    return timings


async def _fan_out(
    api: ApiProcess, topic: str, settings: Settings, clients: int, updates: int, rate: float
) -> tuple[list[float], int]:
    """Delivery latencies (ms) of `updates` updates at `rate`/s to `clients` clients."""
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    url = (
        api.url.replace("http://", "ws://")
        + f"api/live?exchange=bench&symbol={SERIES[0]}&window=1m"
    )
    connections = [await connect(url, compression=None, max_size=None) for _ in range(clients)]
    # Every client subscribed before the first update (the API counts them).
    while json.loads(api.get("/api/health"))["live"]["clients"] < clients:
        await asyncio.sleep(0.2)

    async def receive(connection: Any) -> None:
        for _ in range(updates):
            update = json.loads(await connection.recv())
            latencies.append(time.time() * 1000 - update["published_ms"])

    receivers = [asyncio.create_task(receive(c)) for c in connections]
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=0)
    document = _documents(SERIES[0], 1)[0]
    for index in range(updates):
        document["volume"] = float(index)
        key, value = candle_update.encode(document)
        producer.send(topic, key=key, value=value)
        producer.flush()
        await asyncio.sleep(1 / rate)
    producer.close()
    _, pending = await asyncio.wait(receivers, timeout=60)
    for task in pending:
        task.cancel()
    for connection in connections:
        await connection.close()
    return latencies, clients * updates - len(latencies)


def bench_api(settings: Settings, clients: int, updates: int, rate: float, windows: int) -> None:
    name = f"bench_api_{int(time.time())}"
    topic = candles_topic(name)
    work = settings.stack_dir / "bench" / name
    work.mkdir(parents=True)
    ensure_topic(settings.kafka.bootstrap_servers, topic, partitions=1, compacted=True)
    env = {"KAFKA_TOPIC": name, "MONGO_DATABASE": name, "STACK_DIR": str(work)}
    try:
        fill(settings, name, windows)
        api = ApiProcess(env, 0, work / "api.log")
        try:
            timings = {}
            for page in PAGES:
                say(f"[bench] {REQUESTS} GETs of {page:,} windows; the same range with pymongo")
                timings[page] = http_latencies(api, settings, name, page)
            fan_out = {}
            for count in (1, clients):
                say(f"[bench] {count:,} WebSocket clients, {updates} updates at {rate:g}/s")
                fan_out[count] = asyncio.run(_fan_out(api, topic, settings, count, updates, rate))
        finally:
            api.stop()
    finally:
        with mongo_client(settings.mongo.uri) as client:
            client.drop_database(name)
        admin = kafka_admin(settings.kafka.bootstrap_servers)
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
        shutil.rmtree(work, ignore_errors=True)
    day, machine = f"{datetime.now(tz=UTC):%Y-%m-%d}", machine_description()
    say("")
    say("| date | machine | what | p50 ms | p99 ms | max ms | reference p50 / p99 ms |")
    for page, timing in timings.items():
        api_ms, mongo_ms = timing["api"], timing["pymongo"]
        say(
            f"| {day} | {machine} | GET /api/candles, {page:,} windows of "
            f"{len(SERIES) * windows:,} | {percentile(api_ms, 0.5):.0f} "
            f"| {percentile(api_ms, 0.99):.0f} | {max(api_ms):.0f} | pymongo, same range: "
            f"{percentile(mongo_ms, 0.5):.0f} / {percentile(mongo_ms, 0.99):.0f} |"
        )
    alone = fan_out[1][0]
    for count, (latencies, missing) in fan_out.items():
        say(
            f"| {day} | {machine} | /api/live, {count:,} clients, {updates} updates at {rate:g}/s "
            f"({missing} not delivered) | {percentile(latencies, 0.5):.0f} "
            f"| {percentile(latencies, 0.99):.0f} | {max(latencies):.0f} "
            f"| 1 client: {percentile(alone, 0.5):.0f} / {percentile(alone, 0.99):.0f} |"
        )


def add_api_bench(bench_commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = bench_commands.add_parser(
        "api",
        help="the candles API: GET of 10,000 windows p50/p99 vs pymongo, and WebSocket delivery "
        "latency to N clients vs 1",
    )
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--updates", type=int, default=150, help="updates per run")
    parser.add_argument("--rate", type=float, default=5.0, help="updates/s")
    parser.add_argument("--windows", type=int, default=12_000, help="windows per series (3)")
    parser.set_defaults(handler=_bench_api)


def _bench_api(args: argparse.Namespace, settings: Settings) -> int:
    bench_api(settings, args.clients, args.updates, args.rate, args.windows)
    return 0
