"""The continuous job's heartbeat file (written by spark_jobs/query_progress.py), read by the
Dagster sensors, by anything that must not start a second Spark job on the same checkpoints, and by the
demo's status line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crypto_pipeline.processes import ProcessRecord


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
