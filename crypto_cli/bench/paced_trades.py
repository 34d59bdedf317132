"""The load of `bench trades --live`: a paced librdkafka producer (confluent-kafka) sending
trades stamped with the time they are sent, as a live feed would, at a fixed rate for a fixed
time, in its own process. Run as `python -m crypto_cli.bench.paced_trades`.

Every 10 ms it sends the trades due since the start (rate x elapsed), spread evenly over the
symbols, each symbol's ids sequential. It writes what it sent per tick and symbol (`--sent`, a
.npy of [time ms, trades of each symbol]), which the benchmark's latencies are weighed by."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from crypto_pipeline.clients import librdkafka_config
from crypto_pipeline.formats import trade_message as message
from crypto_pipeline.formats.candle_message import CONNECTION, EXCHANGE, RECEIVED_MS

TICK_S = 0.01
BENCH_EXCHANGE = "binance"
BENCH_CONNECTION = "bench"


def trade_value(symbol: str, trade_id: int, time_ms: int, price: float, quantity: float) -> bytes:
    """A live trade message (trade_message.Trade.to_live_json's fields), formatted directly: the
    sending loop has about 20 us per trade at 50,000 trades/s on one core."""
    side = "buy" if trade_id % 3 else "sell"
    return (
        f'{{"{message.TIME_MS}":{time_ms},"symbol":"{symbol}","{message.TRADE_ID}":"{trade_id}",'
        f'"{message.PRICE}":{price},"{message.QUANTITY}":{quantity},"{message.SIDE}":"{side}",'
        f'"{EXCHANGE}":"{BENCH_EXCHANGE}","{CONNECTION}":"{BENCH_CONNECTION}",'
        f'"{RECEIVED_MS}":{time_ms}}}'
    ).encode()


def send_paced(
    bootstrap: str, topic: str, symbols: list[str], rate: int, seconds: float
) -> np.ndarray:
    """Sends `rate` trades/s for `seconds`; per tick, [time ms, trades of each symbol]."""
    failures: list[str] = []

    def on_failure(error: KafkaError | None, _: Message) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer({**librdkafka_config(bootstrap), "linger.ms": 5, "on_delivery": on_failure})
    next_id = [1] * len(symbols)
    ticks: list[list[int]] = []
    sent, started = 0, time.time()
    while (elapsed := time.time() - started) < seconds:
        now_ms = int(time.time() * 1000)
        due = int(rate * elapsed) - sent
        counts = [0] * len(symbols)
        for index in range(sent, sent + due):
            which = index % len(symbols)
            trade_id = next_id[which]
            next_id[which] += 1
            counts[which] += 1
            value = trade_value(
                symbols[which],
                trade_id,
                now_ms,
                100.0 + trade_id % 500 / 100,
                0.001 * (1 + trade_id % 7),
            )
            key = f"{BENCH_EXCHANGE}:{symbols[which]}:{trade_id}".encode()
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:  # the local queue is full: let it drain
                    producer.poll(0.005)
        sent += due
        ticks.append([now_ms, *counts])
        producer.poll(0)
        time.sleep(max(0.0, started + (len(ticks) * TICK_S) - time.time()))
    if producer.flush(60) or failures:
        raise SystemExit(f"paced trades: not every trade was delivered ({failures[:1]})")
    return np.array(ticks, dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m crypto_cli.bench.paced_trades")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--symbols", required=True, help="comma-separated")
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--sent", type=Path, required=True)
    args = parser.parse_args()
    ticks = send_paced(args.bootstrap, args.topic, args.symbols.split(","), args.rate, args.seconds)
    np.save(args.sent, ticks)


if __name__ == "__main__":
    main()
