"""`crypto-pipeline serve`: the candles API and chart page (crypto_api), on API_HOST:API_PORT."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from crypto_pipeline.console import say
from crypto_pipeline.processes import stop_child
from crypto_pipeline.settings import LOOPBACK_HOSTS, Settings


def api_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/"


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from crypto_api.app import create_app

    host = args.host or settings.api_host
    port = settings.api_port if args.port is None else args.port
    if host not in LOOPBACK_HOSTS and not settings.api_token:
        raise ValueError(
            f"serving on {host} (not loopback) needs API_TOKEN in the environment or .env; "
            "every request must then carry it"
        )
    # Bound and listening before the URL is printed: a client that reads it can connect.
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((host, port))
    listening.listen(2048)
    app = create_app(settings)
    say(f"candles API and chart page on {api_url(host, listening.getsockname()[1])} (docs: /docs)")
    # websockets-sansio: a send to a slow client waits for it instead of buffering.
    config = uvicorn.Config(app, ws="websockets-sansio", log_level="warning")
    uvicorn.Server(config).run(sockets=[listening])
    return 0


def add_serve_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "serve", help="the candles API (OpenAPI at /docs), its live WebSocket and the chart page"
    )
    parser.add_argument("--host", help="default API_HOST (127.0.0.1); elsewhere needs API_TOKEN")
    parser.add_argument("--port", type=int, help="default API_PORT (3002); 0: any free port")
    parser.set_defaults(handler=_serve)


class ApiProcess:
    """`crypto-pipeline serve` in its own process (the demo's and the tests' API), with the
    environment given, its output in `log`; `url` once it listens."""

    def __init__(self, env: dict[str, str], port: int, log: Path, timeout_s: float = 60) -> None:
        command = [sys.executable, "-m", "crypto_cli", "serve", "--port", str(port)]
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        deadline = time.monotonic() + timeout_s
        while (found := re.search(r"chart page on (http://\S+/)", log.read_text())) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                last = log.read_text().strip().splitlines()[-1:] or ["no output"]
                raise OSError(f"the candles API did not start (log: {log}): {last[0]}")
            time.sleep(0.1)
        self.url = found.group(1)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as response:
            body: bytes = response.read()
            return body

    def stop(self) -> None:
        stop_child(self.process)
