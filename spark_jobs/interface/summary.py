"""What a run of the Spark job reports: the names of the assets it materializes (through Dagster
Pipes) and its summary, logged as one line of JSON that launchers outside Dagster read back."""

from __future__ import annotations

import json
from typing import Any

MONGO_ASSET = "mongo_realtime"
INFLUX_ASSET = "influx_ohlcv"
# Candles built from trades (`--source trades`), kept apart from the kline-built ones.
MONGO_TRADE_ASSET = "mongo_trade_candles"
INFLUX_TRADE_ASSET = "influx_trade_candles"
SUMMARY_PREFIX = "job summary: "


def summary_line(summary: dict[str, Any]) -> str:
    return f"{SUMMARY_PREFIX}{json.dumps(summary)}"


def read_summary(log: str) -> dict[str, Any]:
    """The summary in a run's log (its standard error); a run logs exactly one."""
    lines = [line for line in log.splitlines() if SUMMARY_PREFIX in line]
    if len(lines) != 1:
        raise ValueError(f"expected one summary line in the job's log, found {len(lines)}")
    summary: dict[str, Any] = json.loads(lines[0].split(SUMMARY_PREFIX, 1)[1])
    return summary
