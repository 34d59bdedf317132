"""How a live-like replay spaces its messages: by event time divided by the speed, and, for a
replay rebased to now, never ahead of the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class Pacer:
    """Sleeps so that event-time gaps become wall-clock gaps divided by the speed."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self.started = time.monotonic()
        self.first_event_ms: int | None = None

    def wait_for(self, event_ms: int) -> None:
        if self.first_event_ms is None:
            self.first_event_ms = event_ms
        if self.speed is None:
            return
        due = self.started + (event_ms - self.first_event_ms) / (1000 * self.speed)
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Span:
    """First and last event time of one pass, and the smallest step between distinct times."""

    first: int | None = None
    last: int | None = None
    step: int | None = None

    def add(self, event_ms: int) -> None:
        if self.last is not None and event_ms > self.last:
            gap = event_ms - self.last
            self.step = gap if self.step is None else min(self.step, gap)
        self.first = event_ms if self.first is None else min(self.first, event_ms)
        self.last = event_ms if self.last is None else max(self.last, event_ms)

    @property
    def length_ms(self) -> int:
        assert self.first is not None and self.last is not None
        return self.last - self.first + (self.step or 1)


def wait_for_clock(event_ms: int, now_ms: Callable[[], int]) -> None:
    """Until the clock has reached the event time (a rebased replay is live, never ahead)."""
    while (ahead_ms := event_ms - now_ms()) > 0:
        time.sleep(min(ahead_ms / 1000, 1.0))
