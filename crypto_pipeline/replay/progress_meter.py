"""Progress of a long run: a live line on a terminal, a periodic log line otherwise."""

from __future__ import annotations

import sys
import time

from crypto_pipeline.console import say

TERMINAL_REFRESH_S = 0.25
LOG_EVERY_S = 5.0


class Progress:
    def __init__(self, total: int | None, *, enabled: bool = True, label: str = "replay") -> None:
        self.total = total
        self.enabled = enabled
        self.label = label
        self.tty = sys.stdout.isatty()
        self.started = time.monotonic()
        self.last_shown = self.started

    def _line(self, done: int, rejected: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        text = f"{self.label}: {done:,} sent, {rejected:,} rejected, {rate:,.0f}/s"
        if self.total:
            share = min(done / self.total, 1.0)
            bar = "#" * int(share * 30)
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            text = f"{self.label} [{bar:<30}] {done:,}/{self.total:,} {rate:,.0f}/s ETA {eta:,.0f}s"
            text += f" ({rejected:,} rejected)"
        return text

    def update(self, done: int, rejected: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        interval = TERMINAL_REFRESH_S if self.tty else LOG_EVERY_S
        if now - self.last_shown < interval:
            return
        self.last_shown = now
        if self.tty:
            sys.stdout.write("\r" + self._line(done, rejected).ljust(100))
            sys.stdout.flush()
        else:
            say(self._line(done, rejected))

    def close(self, done: int, rejected: int) -> None:
        if self.enabled and self.tty:
            sys.stdout.write("\r" + self._line(done, rejected).ljust(100) + "\n")
            sys.stdout.flush()
