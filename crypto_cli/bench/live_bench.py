"""`crypto-pipeline bench live`: how many exchange messages one feed process handles (parse,
candle rules, Kafka), against a bare websocket client reading the same frames in the same run.

A server process sends pre-encoded in-progress kline frames of `symbols` symbols (Binance's
format, from the simulator's encoder) as fast as the client reads them, once per connection."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from dataclasses import replace

import websockets
from websockets.asyncio.server import ServerConnection, serve

from crypto_pipeline.benchmarking import machine_description
from crypto_pipeline.console import say
from crypto_pipeline.live.exchanges import EXCHANGES
from crypto_pipeline.live.feed import FeedConfig, LiveFeed
from crypto_pipeline.live.feed_sink import FeedSink
from crypto_pipeline.live.refill import RestClient
from crypto_pipeline.live.simulator.protocols import protocols
from crypto_pipeline.live.simulator.simulated_market import SimCandle
from crypto_pipeline.settings import Settings


def bench_symbols(count: int) -> list[str]:
    return [f"S{i:04d}USDT" for i in range(count)]


def frames(symbols: list[str], count: int) -> list[str]:
    """`count` in-progress revisions, round-robin over the symbols, values changing each time."""
    encoder = protocols(set(symbols), "1m")["binance"]
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    result = []
    for i in range(count):
        price = 100.0 + (i % 997) / 100
        candle = SimCandle(
            now_ms,
            100.0,
            max(price, 100.0),
            min(price, 100.0),
            price,
            1.0 + i / 1000,
            price * (1.0 + i / 1000),
            1 + i // len(symbols),
        )
        result.append(encoder.kline_frame(symbols[i % len(symbols)], candle, False, now_ms))
    return result


def _serve(port_queue: multiprocessing.Queue[int], payload: list[str]) -> None:
    async def once(ws: ServerConnection) -> None:
        await ws.recv()  # the subscription
        for frame in payload:
            await ws.send(frame)
        await ws.wait_closed()

    async def main() -> None:
        async with serve(once, "127.0.0.1", 0, compression=None, max_queue=None) as server:
            port_queue.put(server.sockets[0].getsockname()[1] if server.sockets else 0)
            await asyncio.Future()

    asyncio.run(main())


def _start_server(payload: list[str]) -> tuple[multiprocessing.process.BaseProcess, int]:
    context = multiprocessing.get_context("fork")
    ports: multiprocessing.Queue[int] = context.Queue()
    process = context.Process(target=_serve, args=(ports, payload), daemon=True)
    process.start()
    return process, ports.get(timeout=30)


async def _bare_client(url: str, count: int) -> float:
    async with websockets.connect(url, compression=None, max_size=2**22) as ws:
        await ws.send("{}")
        started = time.perf_counter()
        for _ in range(count):
            await ws.recv()
        return count / (time.perf_counter() - started)


async def _feed(feed: LiveFeed, count: int) -> float:
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    while feed.sink.counts["revisions"] == 0:
        await asyncio.sleep(0.001)
        if task.done():
            task.result()  # the feed failed: say why
    started = time.perf_counter()
    while feed.sink.counts["revisions"] < count:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    await asyncio.to_thread(feed.sink.flush, 60)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return count / elapsed


def bench_live(settings: Settings, messages: int, symbols: int) -> None:
    names = bench_symbols(symbols)
    say(f"[bench] encoding {messages:,} kline frames of {symbols} symbols")
    payload = frames(names, messages)
    reference_server, port = _start_server(payload)
    try:
        reference = asyncio.run(_bare_client(f"ws://127.0.0.1:{port}/ws", messages))
    finally:
        reference_server.kill()
    say(f"[bench] bare websocket client: {reference:,.0f} frames/s")
    feed_server, port = _start_server(payload)
    topic = f"bench_live_{int(time.time())}"
    binance = EXCHANGES["binance"]
    config = FeedConfig(binance, tuple(names), "1m", f"ws://127.0.0.1:{port}", "http://unused")
    sink = FeedSink(
        settings.kafka.bootstrap_servers, topic, "binance", settings.future_event_tolerance_s * 1000
    )
    try:
        config = replace(config, stall_s=600, check_symbols=False)  # no REST in this benchmark
        feed = LiveFeed(config, sink, RestClient(binance, "http://unused"))
        rate = asyncio.run(_feed(feed, messages))
    finally:
        sink.close()
        feed_server.kill()
    say(f"[bench] feed (parse, rules, Kafka {topic}): {rate:,.0f} messages/s")
    say(
        f"| {time.strftime('%Y-%m-%d')} | {machine_description()} | {messages:,} | {symbols} | "
        f"{rate:,.0f} | {reference:,.0f} | {rate / reference:.2f} |"
    )


def add_live_bench(bench_commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    live_bench = bench_commands.add_parser(
        "live",
        help="messages/s one live feed process handles (parse, rules, Kafka) vs a bare "
        "websocket client on the same frames",
    )
    live_bench.add_argument("--messages", type=int, default=200_000)
    live_bench.add_argument("--symbols", type=int, default=500)
    live_bench.add_argument(
        "--latency",
        action="store_true",
        help="instead: latency from the exchange to both sinks, --symbols updating every "
        "--update-every-s, with the continuous job",
    )
    live_bench.add_argument("--update-every-s", type=float, default=2.0)
    live_bench.add_argument("--seconds", type=int, default=180)
    live_bench.set_defaults(handler=_bench_live)


def _bench_live(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_cli.bench.live_latency_bench import bench_live_latency

    if args.latency:
        bench_live_latency(settings, args.symbols, args.update_every_s, args.seconds)
    else:
        bench_live(settings, args.messages, args.symbols)
    return 0
