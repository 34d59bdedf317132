"""How the command line reads speeds, times and symbol lists (argparse types: a bad value is a
usage error naming the option)."""

from __future__ import annotations

import argparse

from crypto_pipeline.candle_rules import BAD_EXCHANGE, EXCHANGE
from crypto_pipeline.formats.window_values import series_selector
from crypto_pipeline.replay.request import time_ms


def parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number or 'max', got {text!r}") from None
    if speed <= 0:
        raise argparse.ArgumentTypeError("speed must be positive")
    return speed


def parse_time_ms(text: str) -> int:
    """An ISO-8601 time (UTC unless it says otherwise) or epoch milliseconds."""
    try:
        return time_ms(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None


def parse_symbols(text: str) -> frozenset[str]:
    return frozenset(symbol.strip().upper() for symbol in text.split(",") if symbol.strip())


def parse_series(text: str) -> frozenset[str]:
    """Symbols, each alone (every exchange) or as `exchange:SYMBOL`."""
    return frozenset(series_selector(name) for name in text.split(",") if name.strip())


def exchange_name(text: str) -> str:
    """An exchange's name as the candle rules allow it (1-32 of a-z, 0-9, _ and -)."""
    if not EXCHANGE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{BAD_EXCHANGE}: {text!r}")
    return text
