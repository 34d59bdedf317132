"""OHLCV aggregates computed independently from a CSV with the csv module and plain Python:
the reference the job's output is compared with. Shares no code with spark_jobs."""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

WINDOW_MS = {"5m": 300_000, "1h": 3_600_000, "4h": 14_400_000}
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "trades", "rows")


def read_csv_rows(
    path: Path, symbols: set[str] | None = None, end_ms: int | None = None
) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as stream:
        rows: list[dict[str, Any]] = [
            {
                "symbol": r["symbol"],
                "t": int(r["open_time_ms"]),
                "open": float(r["open"]),
                "high": float(r["high"]),
                "low": float(r["low"]),
                "close": float(r["close"]),
                "volume": float(r["volume"]),
                "quote_volume": float(r["quote_volume"]),
                "trades": int(r["trades"]),
            }
            for r in csv.DictReader(stream)
        ]
    return [
        r
        for r in rows
        if (symbols is None or r["symbol"] in symbols) and (end_ms is None or r["t"] < end_ms)
    ]


def total_or_none(values: list[Any]) -> Any:
    if any(value is None for value in values):
        return None
    return math.fsum(values) if any(isinstance(v, float) for v in values) else sum(values)


Key = tuple[str, str, str, int]  # (exchange, symbol, window, window_start_ms)
FILE = "file"  # the exchange the pipeline names every file's candles by


def expected_aggregates(
    rows: Iterable[dict[str, Any]], windows: Iterable[str]
) -> dict[Key, dict[str, Any]]:
    """(exchange, symbol, window, window_start_ms) -> aggregate; one candle per (exchange, symbol,
    time) counts once. A row without an exchange is a file's."""
    unique = {(r.get("exchange", FILE), r["symbol"], r["t"]): r for r in rows}
    result: dict[Key, dict[str, Any]] = {}
    for window in windows:
        size = WINDOW_MS[window]
        groups: dict[Key, list[dict[str, Any]]] = {}
        for (exchange, symbol, t), row in unique.items():
            groups.setdefault((exchange, symbol, window, t - t % size), []).append(row)
        for key, members in groups.items():
            members.sort(key=lambda r: r["t"])
            volume = math.fsum(r["volume"] for r in members)
            # Null when any candle lacks it; VWAP then from the typical price (h + l + c) / 3.
            quote_volume = total_or_none([r["quote_volume"] for r in members])
            turnover = quote_volume
            if turnover is None:
                turnover = math.fsum(
                    r["volume"] * (r["high"] + r["low"] + r["close"]) / 3 for r in members
                )
            result[key] = {
                "open": members[0]["open"],
                "high": max(r["high"] for r in members),
                "low": min(r["low"] for r in members),
                "close": members[-1]["close"],
                "volume": volume,
                "quote_volume": quote_volume,
                "vwap": turnover / volume if volume > 0 else None,
                "trades": total_or_none([r["trades"] for r in members]),
                "rows": len(members),
                "first_event_ms": members[0]["t"],
                "last_event_ms": members[-1]["t"],
            }
    return result


def mismatches(
    expected: dict[Key, dict[str, Any]],
    actual: dict[Key, dict[str, Any]],
    rel: float = 1e-9,
) -> list[str]:
    """Human-readable differences: missing or extra keys, and values beyond `rel`."""
    problems = [f"missing {key}" for key in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected {key}" for key in sorted(actual.keys() - expected.keys())]
    for key in sorted(expected.keys() & actual.keys()):
        for name, want in expected[key].items():
            got = actual[key].get(name)
            if want is None or got is None:
                if want != got:
                    problems.append(f"{key} {name}: expected {want}, got {got}")
            elif not math.isclose(float(got), float(want), rel_tol=rel, abs_tol=0.0):
                problems.append(f"{key} {name}: expected {want!r}, got {got!r}")
    return problems
