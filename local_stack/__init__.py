"""`crypto-pipeline stack up | down | status | reset`: real servers as local processes.

Every process is started in its own session, recorded in a PID file (pid + boot and kernel start
time, so a recycled PID is never mistaken for ours) and stopped by that PID only, within a
deadline: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

from crypto_pipeline.console import say
from crypto_pipeline.processes import ProcessRecord
from crypto_pipeline.settings import Settings
from local_stack.artifacts import StackError, spark_connector_jars
from local_stack.service_base import Service, wait_healthy
from local_stack.services import services

__all__ = ["StackError", "down", "is_running", "kill", "reset", "status", "up"]

STOP_TIMEOUT_S = 30.0
# After SIGKILL: a process still there by then is stuck in the kernel (reported, not waited for).
KILL_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 25


def _pid_file(service: Service) -> Path:
    return service.settings.stack_dir / "run" / f"{service.name}.pid"


def _read_record(service: Service) -> ProcessRecord | None:
    try:
        pid_text, identity = _pid_file(service).read_text().split()
        record = ProcessRecord(int(pid_text), identity)
    except (OSError, ValueError):
        return None
    return record if record.is_alive() else None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _log_tail(service: Service) -> str:
    try:
        lines = service.log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _launch(service: Service) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    command = service.prepare()
    service.log_file.parent.mkdir(parents=True, exist_ok=True)
    _pid_file(service).parent.mkdir(parents=True, exist_ok=True)
    with service.log_file.open("a") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **service.environment()},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=service.settings.stack_dir,
            start_new_session=True,
        )
    record = ProcessRecord.of(process.pid) or ProcessRecord(process.pid, "exited")
    _pid_file(service).write_text(f"{record.pid} {record.identity}\n")
    return process, record


def _await_healthy(
    service: Service, process: subprocess.Popen[bytes], record: ProcessRecord
) -> None:
    try:
        wait_healthy(service, lambda: process.poll() is None, service.startup_timeout_s)
        service.after_first_healthy()
    except StackError as error:
        _stop(service, record)
        raise StackError(
            f"{error}\n--- last lines of {service.log_file} ---\n{_log_tail(service)}"
        ) from None


def _stop(service: Service, record: ProcessRecord) -> None:
    """SIGTERM to the service's process group, SIGKILL after STOP_TIMEOUT_S; returns within
    STOP_TIMEOUT_S + KILL_TIMEOUT_S whatever the process does."""
    if not _signal_and_wait(record, signal.SIGTERM, STOP_TIMEOUT_S):
        _kill(service, record)
    _pid_file(service).unlink(missing_ok=True)


def _kill(service: Service, record: ProcessRecord) -> None:
    if not _signal_and_wait(record, signal.SIGKILL, KILL_TIMEOUT_S):
        raise StackError(
            f"{service.name} (pid {record.pid}) is still running {KILL_TIMEOUT_S:.0f} s after "
            "SIGKILL"
        )


def _signal_and_wait(record: ProcessRecord, signum: int, timeout_s: float) -> bool:
    """Signal the process group; True once the process has exited (a zombie has)."""
    try:
        os.killpg(record.pid, signum)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not record.is_alive():
            return True
        time.sleep(0.2)
    return False


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (it is when `up` ran in this process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _chosen(settings: Settings, only: Collection[str] | None) -> list[Service]:
    return [s for s in services(settings) if only is None or s.name in only]


def _as_started(settings: Settings) -> Settings:
    """The settings with the Spark workers and Kafka nodes that were started, whatever
    STACK_SPARK_WORKERS and STACK_KAFKA_BROKERS say now: `stack down` and `status` cover them."""
    run = settings.stack_dir / "run"
    workers = len(list(run.glob("spark-worker-*.pid")))
    brokers = len(list(run.glob("kafka-*.pid"))) or settings.kafka_brokers
    return dataclasses.replace(
        settings, spark_workers=max(settings.spark_workers, workers), kafka_brokers=brokers
    )


def is_running(settings: Settings) -> bool:
    """True when every service of the stack has a live process of ours."""
    return all(_read_record(service) is not None for service in services(settings))


def up(settings: Settings, only: Collection[str] | None = None) -> None:
    """Start every service (or those named in `only`) that is not running; a no-op for those
    already healthy."""
    chosen = _chosen(settings, only)
    if only is None:  # the Spark job's connector jars: no service, but fetched (once) here too
        spark_connector_jars(settings)
    to_start = [service for service in chosen if _read_record(service) is None]
    for service in to_start:
        for setting, port in service.ports.items():
            if not _port_is_free(port):
                raise StackError(
                    f"{service.name}: port {port} on 127.0.0.1 is already in use by another "
                    f"process (not started by this stack); stop it or change {setting}"
                )
    # The services of a group start together, then each is awaited.
    for _, group in itertools.groupby(chosen, key=lambda service: service.group):
        members = list(group)
        started = time.monotonic()
        launched = []
        for service in members:
            if service in to_start:
                say(f"[stack] starting {service.name} ...")
                launched.append((service, *_launch(service)))
        for service, process, record in launched:
            _await_healthy(service, process, record)
            say(f"[stack] {service.name} healthy in {time.monotonic() - started:.1f}s")
        for service in members:
            if service not in to_start:
                service.check_health()
                say(f"[stack] {service.name} already running")
    if not settings.serves_mongo:
        say(f"[stack] MongoDB: external server {settings.mongo.redacted_uri}, nothing started")


def down(settings: Settings, only: Collection[str] | None = None) -> None:
    """Stop exactly the processes this stack started (or those named in `only`), by PID. Data
    stays."""
    errors = []
    for service in reversed(_chosen(_as_started(settings), only)):
        record = _read_record(service)
        if record is None:
            _pid_file(service).unlink(missing_ok=True)
            say(f"[stack] {service.name} not running")
            continue
        try:
            _stop(service, record)
        except StackError as error:  # the others are still stopped
            errors.append(str(error))
            continue
        say(f"[stack] {service.name} stopped (pid {record.pid})")
    if errors:
        raise StackError("; ".join(errors))


def kill(settings: Settings, name: str) -> int:
    """SIGKILL a running service of this stack (fault injection: a crash, not a stop); its pid.
    The PID file stays: `up` sees the process gone and starts it again."""
    (service,) = _chosen(settings, {name})
    record = _read_record(service)
    if record is None:
        raise StackError(f"{name} is not running")
    _kill(service, record)
    return record.pid


def status(settings: Settings) -> bool:
    """Print one line per service; True when all are running and healthy."""
    all_healthy = True
    for service in services(_as_started(settings)):
        record = _read_record(service)
        ports = ", ".join(str(port) for port in service.ports.values())
        if record is None:
            state = "stopped"
            all_healthy = False
        else:
            try:
                service.check_health()
                state = f"healthy  pid {record.pid}"
            except Exception as error:
                state = f"UNHEALTHY pid {record.pid}: {error}"
                all_healthy = False
        say(f"{service.name:<14} {state:<40} 127.0.0.1:{ports}  log {service.log_file}")
    if not settings.serves_mongo:
        say(f"{'mongodb':<14} external ({settings.mongo.redacted_uri})")
    return all_healthy


def reset(settings: Settings) -> None:
    """Stop everything and wipe the state directory (data, logs, config)."""
    down(settings)
    shutil.rmtree(settings.stack_dir, ignore_errors=True)
    say(f"[stack] wiped {settings.stack_dir}")
