"""`crypto-pipeline live` (a feed from an exchange into Kafka) and `crypto-pipeline exchange-sim`
(the simulated exchange the tests and the demo use)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from crypto_pipeline.console import say
from crypto_pipeline.live.runner import add_feed_arguments, run_feed, stop_on_signals
from crypto_pipeline.live.simulator.server import FAULTS, ExchangeSimulator
from crypto_pipeline.processes import stop_child
from crypto_pipeline.settings import Settings


def _exchange_sim(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(serve_simulator(args))
    return 0


async def serve_simulator(args: argparse.Namespace) -> None:
    simulator = ExchangeSimulator(
        [s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        interval=args.interval,
        speed=args.speed,
        seed=args.seed,
        disconnect_every_s=args.disconnect_every_s,
        history_minutes=args.history_minutes,
        push_every_s=args.push_every_s,
    )
    server = await simulator.serve("127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    say(
        f"exchange simulator ({', '.join(simulator.protocols)}) on 127.0.0.1:{port}, "
        f"{args.speed:g}x real time; point a feed at it with "
        f"LIVE_WS_URL=ws://127.0.0.1:{port} LIVE_REST_URL=http://127.0.0.1:{port}; "
        f"faults: GET /sim/fault?exchange=NAME&kind={'|'.join(FAULTS)}; Ctrl-C stops"
    )
    await stop_on_signals().wait()
    server.close()
    await server.wait_closed()


def add_live_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    live = commands.add_parser(
        "live",
        help="send an exchange's live candles (and trades) into Kafka: reconnects, refills "
        "every gap over REST, bad frames to dead letters",
    )
    add_feed_arguments(live)
    live.set_defaults(handler=run_feed)

    sim = commands.add_parser(
        "exchange-sim",
        help="a simulated exchange (Binance, Bybit and OKX protocols) on 127.0.0.1, with faults "
        "on request, for tests and the demo",
    )
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT")
    sim.add_argument("--interval", default="1m")
    sim.add_argument("--speed", type=float, default=1.0, help="clock speed-up (default 1)")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument(
        "--disconnect-every-s",
        type=float,
        help="close every connection after this long, as exchanges do every 24 h",
    )
    sim.add_argument(
        "--history-minutes", type=int, default=0, help="candles already closed at the start"
    )
    sim.add_argument(
        "--push-every-s",
        type=float,
        default=0.2,
        help="how often each symbol's candle is updated (default 0.2)",
    )
    sim.set_defaults(handler=_exchange_sim)


def start_feed_process(
    settings: Settings,
    simulator: SimulatorProcess,
    exchange: str,
    symbols: list[str],
    topic: str,
    log: Path,
    *options: str,
) -> subprocess.Popen[bytes]:
    """A feed from the simulator as its own process (`python -m crypto_pipeline.live`, what the
    Dagster job runs), its output in `log`."""
    command = [
        *[sys.executable, "-m", "crypto_pipeline.live", "--exchange", exchange],
        *["--symbols", ",".join(symbols), "--topic", topic],
        *["--ws-url", simulator.ws_url, "--rest-url", simulator.rest_url, *options],
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers},
        )


class SimulatorProcess:
    """`crypto-pipeline exchange-sim` in its own process on a free port (the demo's exchange)."""

    def __init__(self, *options: str) -> None:
        command = [sys.executable, "-m", "crypto_cli", "exchange-sim", "--port", "0", *options]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        if found is None:
            self.stop()
            raise OSError(f"the exchange simulator did not start: {line.strip()!r}")
        self.port = int(found.group(1))
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.rest_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_child(self.process)
