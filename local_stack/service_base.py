"""A server of the local stack as a process: its folders, ports, command, health check and
one-time set-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from crypto_pipeline.settings import Settings
from local_stack.artifacts import (
    STACK_FILES,
    StackError,
)


@dataclass(frozen=True)
class Service:
    name: str
    settings: Settings

    @property
    def data_dir(self) -> Path:
        return self.settings.stack_dir / "data" / self.name

    @property
    def conf_dir(self) -> Path:
        return self.settings.stack_dir / "conf"

    @property
    def log_file(self) -> Path:
        return self.settings.stack_dir / "logs" / f"{self.name}.log"

    @property
    def ports(self) -> dict[str, int]:
        """Every loopback port the service binds, named by the setting that controls it."""
        raise NotImplementedError

    @property
    def startup_timeout_s(self) -> float:
        return 60.0

    def prepare(self) -> list[str]:
        """Fetch or build what the service needs, write its config; return its command line."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Variables added to the service's environment (secrets that must not be flags)."""
        return {}

    def check_health(self) -> None:
        """Raise if the service does not answer a real request."""
        raise NotImplementedError

    @property
    def group(self) -> str:
        """Services of one group start together, then are awaited (a Kafka cluster's nodes need
        a quorum of each other to become healthy)."""
        return self.name

    def after_first_healthy(self) -> None:
        """One-time initialisation once the service answers (idempotent)."""

    def render(self, template: str, target: str, **values: object) -> Path:
        text = Template((STACK_FILES / "templates" / template).read_text()).substitute(values)
        path = self.conf_dir / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def wait_healthy(service: Service, is_alive: Callable[[], bool], deadline_s: float) -> None:
    """Poll the health check until it passes, the process dies, or the deadline passes."""
    started = time.monotonic()
    last_error: Exception | None = None
    while time.monotonic() - started < deadline_s:
        if not is_alive():
            raise StackError(f"{service.name} exited during start-up")
        try:
            service.check_health()
            return
        except Exception as error:  # retried until the deadline, then reported
            last_error = error
        time.sleep(0.5)
    raise StackError(f"{service.name} not healthy after {deadline_s:.0f}s: {last_error}")
