"""Where the Spark job keeps its state on this machine: checkpoints per topic, and the heartbeat
the continuous job writes (read by the health sensor and by anything that must not start a
second job on the same checkpoints)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from crypto_pipeline.settings import Settings


def default_checkpoint_dir(topic: str) -> Path:
    return Settings.from_env().stack_dir / "checkpoints" / topic


def status_file(topic: str) -> Path:
    """Where the running continuous job writes its heartbeat."""
    return Settings.from_env().stack_dir / "streaming" / f"{topic}.json"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_stream_pid(topic: str) -> int | None:
    """The pid of the continuous job on this topic, if one is running."""
    path = status_file(topic)
    if not path.exists():
        return None
    pid = int(json.loads(path.read_text())["pid"])
    return pid if pid_alive(pid) else None
