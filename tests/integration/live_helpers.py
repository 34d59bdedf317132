"""The simulated exchange and live feeds as their own processes, as users start them; reading
the simulator's truth (its own endpoint, not the pipeline's code)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crypto_cli.live_command import SimulatorProcess


class Simulator(SimulatorProcess):
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.rest_url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def fault(self, exchange: str, kind: str, **options: Any) -> None:
        query = "".join(f"&{name}={value}" for name, value in options.items())
        self.get(f"/sim/fault?exchange={exchange}&kind={kind}{query}")

    def truth(self, exchange: str, symbol: str) -> dict[str, Any]:
        truth: dict[str, Any] = self.get(f"/sim/truth?exchange={exchange}&symbol={symbol}")
        return truth


@contextmanager
def simulator(symbols: list[str], speed: float, *options: str) -> Iterator[Simulator]:
    sim = Simulator("--symbols", ",".join(symbols), "--speed", str(speed), *options)
    try:
        yield sim
    finally:
        sim.stop()


def stop_feed(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, as Ctrl-C and Dagster's terminate send: the feed flushes and exits 0."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]


def wait_s(seconds: float) -> None:
    time.sleep(seconds)
