"""The continuous job's heartbeat file, both sides: written by the job after every batch
(spark_jobs/query_progress.py), read by the Dagster sensors, by anything that must not start a
second Spark job on the same checkpoints, and by the demo's status line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from crypto_pipeline.processes import ProcessRecord, identity_of


def write_heartbeat(
    path: Path,
    *,
    last_progress_at: float,
    watermark_ms: int,
    processed_offsets: dict[str, dict[str, int]],
    late_rows: dict[str, dict[str, int]],
    state: dict[str, int],
    outcome: str | None = None,
) -> None:
    """This process's heartbeat (written atomically): its pid, the last progress time, the Kafka
    offsets the query has processed (topic -> partition -> offset), late rows per symbol, the
    size of the state, and once it ends its outcome ("stopped" or "failed")."""
    status: dict[str, Any] = {
        "pid": os.getpid(),
        # With the pid: a recycled pid (a reboot, a new container) is not taken for ours.
        "pid_identity": identity_of(os.getpid()),
        "last_progress_at": last_progress_at,
        # Windows ending this far behind a symbol's newest event are settled (sinks_agree).
        "watermark_ms": watermark_ms,
        "processed_offsets": {"ohlcv": processed_offsets},
        "late_rows": late_rows,
        "state": state,
    }
    if outcome is not None:
        status |= {"outcome": outcome, "stopped_at": time.time()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(status))
    partial.replace(path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The last heartbeat, or None if no continuous job has written one."""
    if not path.exists():
        return None
    status: dict[str, Any] = json.loads(path.read_text())
    return status


def stream_state(status: dict[str, Any]) -> str:
    """ "running"; "stopped" or "failed" (the job said so as it ended); or "crashed": its process
    is gone (or the pid now belongs to another process) without a word."""
    if "outcome" in status:
        return str(status["outcome"])
    record = ProcessRecord(int(status["pid"]), str(status.get("pid_identity")))
    return "running" if record.is_alive() else "crashed"


def running_stream_pid(path: Path) -> int | None:
    """The pid of the continuous job whose heartbeat is `path`, if it is running."""
    status = read_status(path)
    if status is None or stream_state(status) != "running":
        return None
    return int(status["pid"])


def streaming_health(
    status: dict[str, Any], topic: str, latest: dict[int, int], now: float
) -> dict[str, Any]:
    """Alive, seconds since the last progress, and the Kafka lag of the slowest query, given the
    topic's end offsets `latest`."""
    lag = 0
    for processed in status["processed_offsets"].values():
        done = {int(p): o for p, o in processed.get(topic, {}).items()}
        lag = max(lag, sum(end - done.get(p, 0) for p, end in latest.items()))
    return {
        "alive": stream_state(status) == "running",
        "state": stream_state(status),
        "pid": int(status["pid"]),
        "seconds_since_progress": round(now - float(status["last_progress_at"]), 1),
        "kafka_lag_messages": lag,
        "kafka_end_offsets": {str(p): o for p, o in latest.items()},
    }
