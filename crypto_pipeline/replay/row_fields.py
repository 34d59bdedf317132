"""The fields of a CSV row, as every file format reads them: numbers, whole numbers and times.

Epoch times may be in seconds, milliseconds, microseconds or nanoseconds: the unit is the one that
puts the time in the plausible range of crypto_pipeline/candle_rules.py (the ranges of the four
units do not overlap), and a time in none of them is a bad row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from crypto_pipeline.candle_rules import MAX_EVENT_MS, MIN_EVENT_MS, not_finite, not_whole
from crypto_pipeline.formats.candle_message import Candle
from crypto_pipeline.formats.trade_message import Trade

# An epoch time in each unit -> milliseconds: (multiply by, then floor-divide by). Binance spot
# files moved from ms to µs in 2025.
EPOCH_UNITS = {"s": (1000, 1), "ms": (1, 1), "µs": (1, 1000), "ns": (1, 1_000_000)}

# What one line of a file holds when it is valid.
Record = Candle | Trade
# A format's reader of one line's fields: a valid record, or ValueError with the rule it breaks.
RowParser = Callable[[list[str]], Record]


class InputFormatError(ValueError):
    """The file cannot be replayed at all (missing, unreadable, unknown header)."""


def parse_float(value: str, column: str) -> float:
    """A number; NaN and infinities pass (the rules reject them with their reason)."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{column} is not a number: {value!r}") from None


def parse_int(value: str, column: str) -> int:
    number = parse_float(value, column)
    if not math.isfinite(number):
        raise ValueError(not_finite(column))
    if number != int(number):
        raise ValueError(f"{not_whole(column)}: {value!r}")
    return int(number)


def epoch_ms(value: str, column: str) -> int:
    """Epoch milliseconds of an epoch time in s, ms, µs or ns (the unit that puts it in the
    plausible range)."""
    stamp = int(value) if value.isdigit() else parse_int(value, column)
    for multiplier, divisor in EPOCH_UNITS.values():
        ms = stamp * multiplier // divisor
        if MIN_EVENT_MS <= ms < MAX_EVENT_MS:
            return ms
    raise ValueError(
        f"{column} is not an epoch time in s, ms, µs or ns between "
        f"{ms_to_iso(MIN_EVENT_MS)[:10]} and {ms_to_iso(MAX_EVENT_MS)[:10]}: {value}"
    )


def iso_to_ms(value: str, column: str = "open_time") -> int:
    """Epoch milliseconds of an ISO-8601 time (UTC unless it says otherwise)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{column} is not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def ms_to_iso(ms: int | None) -> str:
    """ISO-8601 UTC of epoch milliseconds; empty for None."""
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def check_width(fields: list[str], width: int) -> None:
    if len(fields) != width:
        raise ValueError(f"wrong number of fields: {len(fields)}, not {width}")


def looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def symbol_from_name(path: Path, name_pattern: re.Pattern[str], kind: str, example: str) -> str:
    """The symbol of a Binance archive file, from its name (its lines do not carry it)."""
    match = name_pattern.match(path.name)
    if match is None:
        raise InputFormatError(
            f"{path}: looks like a Binance {kind} file, but the symbol cannot be taken from its "
            f"name (expected e.g. {example})"
        )
    return match.group("symbol")
