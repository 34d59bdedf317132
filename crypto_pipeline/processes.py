"""Process identity that survives PID reuse: a PID, the kernel's start time of the process and
the boot it started in. A recycled PID (after a reboot, a container restart, or simply later)
never matches, and a zombie (exited, not yet reaped) counts as gone once its last thread has
exited."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return "unknown-boot"


def identity_of(pid: int) -> str | None:
    """`<boot id>:<start time in clock ticks>` of a live process, None if there is no such
    process or it has exited (a zombie whose other threads are gone too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After the ")" that closes the command name: field 3 (state) and field 22 (starttime).
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X") and not _other_threads_remain(pid):
        return None
    return f"{_boot_id()}:{fields[19]}"


def _other_threads_remain(pid: int) -> bool:
    """A killed multi-threaded process (a JVM) shows its main thread as a zombie while the other
    threads still exit; its files and sockets stay open until the last of them has."""
    try:
        return any(task != str(pid) for task in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return False


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    identity: str

    @classmethod
    def of(cls, pid: int) -> ProcessRecord | None:
        identity = identity_of(pid)
        return None if identity is None else cls(pid, identity)

    def is_alive(self) -> bool:
        return identity_of(self.pid) == self.identity


def stop_child(process: subprocess.Popen[Any], timeout_s: float = 30) -> None:
    """SIGTERM to a child process, then SIGKILL if it has not exited within `timeout_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
