"""`crypto-pipeline live` and `python -m crypto_pipeline.live` (what the Dagster job runs): one
feed process from its options and the settings, until Ctrl-C or SIGTERM (which flush what is
buffered), with a progress line every few seconds and a health point in InfluxDB."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time

from influxdb_client.client.write_api import SYNCHRONOUS

from crypto_pipeline.clients import influx_client
from crypto_pipeline.console import say
from crypto_pipeline.live.exchanges import EXCHANGES, exchange_named
from crypto_pipeline.live.feed import FeedConfig, LiveFeed
from crypto_pipeline.live.feed_sink import DEFAULT_BUFFER_BYTES, FeedSink
from crypto_pipeline.live.feed_status import (
    feed_state,
    health_point,
    read_feed_status,
    resume_points,
)
from crypto_pipeline.live.market import canonical_symbol
from crypto_pipeline.live.refill import RestClient
from crypto_pipeline.replay.request import time_ms
from crypto_pipeline.settings import InfluxTarget, Settings, live_status_file

PROGRESS_EVERY_S = 10.0
HEALTH_EVERY_S = 5.0
HEALTH_TIMEOUT_MS = 3_000


def add_feed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exchange", required=True, choices=sorted(EXCHANGES))
    parser.add_argument(
        "--symbols", required=True, help="e.g. BTCUSDT,ETHUSDT (any spelling: BTC-USDT, btcusdt)"
    )
    parser.add_argument("--interval", default="1m", help="candle interval (default 1m)")
    parser.add_argument("--trades", action="store_true", help="also the trades, to <topic>.trades")
    parser.add_argument("--topic", help="Kafka topic (default: $KAFKA_TOPIC)")
    parser.add_argument(
        "--ws-url", help="websocket base URL (default: $LIVE_WS_URL, else the exchange's own)"
    )
    parser.add_argument(
        "--rest-url", help="REST base URL (default: $LIVE_REST_URL, else the exchange's own)"
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=60.0,
        help="no data for this long while subscribed: reconnect (default 60)",
    )
    parser.add_argument(
        "--since",
        help="first start only: refill the closed candles since this "
        "time (ISO-8601 or epoch ms); later starts resume where the last stopped",
    )
    parser.add_argument(
        "--buffer-mb",
        type=int,
        default=DEFAULT_BUFFER_BYTES // 2**20,
        help="memory for messages Kafka has not taken yet (default 64)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run_feed(args: argparse.Namespace, settings: Settings) -> int:
    exchange = exchange_named(args.exchange)
    symbols = tuple(dict.fromkeys(canonical_symbol(s) for s in args.symbols.split(",") if s))
    if not symbols:
        raise ValueError("--symbols names no symbol")
    exchange.native_interval(args.interval)
    topic = args.topic or settings.kafka.topic
    status_file = live_status_file(settings.stack_dir, exchange.name, topic)
    last = read_feed_status(status_file)
    if last is not None and feed_state(last) == "running":
        raise ValueError(
            f"a {exchange.name} feed (pid {last['pid']}) is already sending to {topic}"
        )
    config = FeedConfig(
        exchange=exchange,
        symbols=symbols,
        interval=args.interval,
        ws_url=args.ws_url or settings.live_ws_url or exchange.default_ws_url,
        rest_url=args.rest_url or settings.live_rest_url or exchange.default_rest_url,
        trades=args.trades,
        stall_s=args.stall_s,
        since_ms=None if args.since is None else time_ms(args.since),
        status_file=status_file,
    )
    sink = FeedSink(
        settings.kafka.bootstrap_servers,
        topic,
        exchange.name,
        settings.future_event_tolerance_s * 1000,
        buffer_bytes=args.buffer_mb * 2**20,
    )
    feed = LiveFeed(config, sink, RestClient(exchange, config.rest_url), resume_points(status_file))
    say(
        f"live: {exchange.name} {shown_symbols(symbols)} {args.interval} -> {topic}"
        f"{' and ' + sink.trades_topic if args.trades else ''} (websocket {config.ws_url}, "
        f"REST {config.rest_url}); Ctrl-C stops"
    )
    try:
        asyncio.run(_until_signalled(feed, settings.influx, not args.quiet))
    finally:
        sink.close()
    say(f"live: stopped; {progress_line(feed)}")
    return 0


def shown_symbols(symbols: tuple[str, ...], at_most: int = 5) -> str:
    more = f" and {len(symbols) - at_most} more" if len(symbols) > at_most else ""
    return ",".join(symbols[:at_most]) + more


def stop_on_signals() -> asyncio.Event:
    """An event the running loop sets on Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    return stop


async def _until_signalled(feed: LiveFeed, influx: InfluxTarget, progress: bool) -> None:
    stop = stop_on_signals()
    reporters = [asyncio.create_task(_publish_health(feed, influx, stop))]
    if progress:
        reporters.append(asyncio.create_task(_report(feed, stop)))
    try:
        await feed.run(stop)
    finally:
        for reporter in reporters:
            reporter.cancel()


async def _publish_health(feed: LiveFeed, influx: InfluxTarget, stop: asyncio.Event) -> None:
    """The feed's health point every HEALTH_EVERY_S, for the dashboard. Best effort: InfluxDB
    being away never stops the feed (a write waits at most HEALTH_TIMEOUT_MS), but is said once
    per outage."""
    failing = False
    with influx_client(influx, HEALTH_TIMEOUT_MS) as client:
        writer = client.write_api(write_options=SYNCHRONOUS)
        while not stop.is_set():
            line = health_point(feed.status, influx.feeds_measurement, time.time())
            try:
                await asyncio.to_thread(
                    writer.write, influx.bucket, record=line, write_precision="ms"
                )
                failing = False
            except Exception as error:  # any failure: the feed goes on
                if not failing:
                    say(f"live: health not written to InfluxDB ({type(error).__name__}: {error})")
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEALTH_EVERY_S)


async def _report(feed: LiveFeed, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PROGRESS_EVERY_S)
        say(f"live: {progress_line(feed)}")


def progress_line(feed: LiveFeed) -> str:
    status, counts = feed.status, feed.sink.counts
    return (
        f"connected {status.connected_streams}/{status.streams}, "
        f"closed {counts['closed']:,}, revisions {counts['revisions']:,}, "
        f"refilled {counts['refilled']:,}, trades {counts['trades']:,}, "
        f"dead letters {counts['dead_letters']:,}, reconnects {status.reconnects}"
    )
