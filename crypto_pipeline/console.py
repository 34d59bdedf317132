"""Terminal output of the CLI: progress and summaries go to stdout, one line at a time."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201


def is_terminal() -> bool:
    return sys.stdout.isatty()
