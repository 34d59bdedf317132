"""A live feed's heartbeat file, both sides: written by the feed every second and as it ends,
read by the Dagster health sensor, the restart sensor and a restarted feed (which refills from
the resume points it holds)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crypto_pipeline.processes import ProcessRecord, identity_of


@dataclass
class FeedStatus:
    exchange: str
    topic: str
    symbols: list[str]
    interval: str
    connected_streams: int = 0
    streams: int = 0
    last_message_at: float | None = None
    connects: int = 0
    reconnects: int = 0
    stalls: int = 0
    refills: int = 0
    rest_rate_limited: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    # symbol -> the open time from which a restart refills (every older closed candle is in Kafka)
    resume_from: dict[str, int] = field(default_factory=dict)
    outcome: str | None = None  # "stopped" or "failed", once the feed ends
    error: str | None = None

    def write(self, path: Path) -> None:
        document = {
            **asdict(self),
            "pid": os.getpid(),
            "pid_identity": identity_of(os.getpid()),
            "written_at": time.time(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(document))
        partial.replace(path)


def read_feed_status(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    status: dict[str, Any] = json.loads(path.read_text())
    return status


def feed_state(status: dict[str, Any]) -> str:
    """ "running"; "stopped" or "failed" (the feed said so as it ended); or "crashed"."""
    if status.get("outcome"):
        return str(status["outcome"])
    record = ProcessRecord(int(status["pid"]), str(status.get("pid_identity")))
    return "running" if record.is_alive() else "crashed"


def resume_points(path: Path) -> dict[str, int]:
    """Where the last feed of this heartbeat left each symbol's closed candles."""
    status = read_feed_status(path)
    return {} if status is None else {s: int(t) for s, t in status.get("resume_from", {}).items()}
