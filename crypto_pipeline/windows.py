"""Window lengths and intervals as people write them ("5m", "30 minutes"), one reading for
everyone: the Spark job, its launchers, the reference the checks compute."""

from __future__ import annotations

import re

WINDOW_LABEL = re.compile(r"^(?P<count>[1-9]\d*)(?P<unit>[smhd])$")  # 0m would divide by zero
# Seconds: candles built from trades (1s and up); candles from candles are a minute or longer.
UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _window_match(label: str) -> re.Match[str]:
    match = WINDOW_LABEL.match(label)
    if match is None:
        raise ValueError(f"window {label!r} must look like 5m, 1h, 1d or 1s (a positive length)")
    return match


def window_ms(label: str) -> int:
    """'5m' -> 300000: windows are whole seconds, minutes, hours or days, aligned to the epoch."""
    match = _window_match(label)
    return int(match.group("count")) * UNIT_MS[match.group("unit")]


INTERVAL = re.compile(r"^(?P<count>\d+)\s*(?P<unit>second|minute|hour|day)s?$")
INTERVAL_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


def interval_ms(text: str) -> int:
    """'30 minutes' -> 1800000 (the watermark delay and trigger intervals Spark accepts)."""
    match = INTERVAL.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} must look like '30 minutes', '1 second' or '2 hours'")
    return int(match.group("count")) * INTERVAL_MS[match.group("unit")]
