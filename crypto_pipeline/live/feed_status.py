"""A live feed's heartbeat file, both sides: written by the feed every second and as it ends,
read by the Dagster health sensor, the restart sensor and a restarted feed (which refills from
the resume points it holds). And its health as an InfluxDB point (`health_point`, written every
few seconds, charted by the pipeline dashboard)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crypto_pipeline.processes import ProcessRecord, identity_of

# The feed sink's counters in a health point: candles closed, revisions, refilled over REST, ...
HEALTH_COUNTS = ("closed", "revisions", "refilled", "trades", "dead_letters")


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


def health_point(status: FeedStatus, measurement: str, now: float) -> str:
    """Line protocol: tags exchange and topic (plain identifiers); the connection state, the
    seconds since the last message (-1 before the first), and the counters since the feed
    started."""
    since = -1.0 if status.last_message_at is None else round(now - status.last_message_at, 3)
    counters = {
        "connected_streams": status.connected_streams,
        "streams": status.streams,
        "reconnects": status.reconnects,
        "stalls": status.stalls,
        "refills": status.refills,
        **{name: status.counts.get(name, 0) for name in HEALTH_COUNTS},
    }
    fields = ",".join(f"{name}={value}i" for name, value in counters.items())
    return (
        f"{measurement},exchange={status.exchange},topic={status.topic} "
        f"seconds_since_message={since},{fields} {int(now * 1000)}"
    )


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


def feed_health(status: dict[str, Any], now: float) -> dict[str, Any]:
    """What the health sensor and the candles API report of a feed's heartbeat."""
    last = status.get("last_message_at")
    return {
        "exchange": status["exchange"],
        "state": feed_state(status),
        "connected": status["connected_streams"] == status["streams"] > 0,
        "seconds_since_message": None if last is None else round(now - last, 1),
        "reconnects": status["reconnects"],
        "stalls": status["stalls"],
        "refilled": status["counts"].get("refilled", 0),
        "closed": status["counts"].get("closed", 0),
        "dead_letters": status["counts"].get("dead_letters", 0),
    }


def resume_points(path: Path) -> dict[str, int]:
    """Where the last feed of this heartbeat left each symbol's closed candles."""
    status = read_feed_status(path)
    return {} if status is None else {s: int(t) for s, t in status.get("resume_from", {}).items()}
