"""`crypto-pipeline replay`: its options are the fields of the replay request
(crypto_pipeline/replay/request.py), plus where the replay goes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from crypto_cli.argument_types import parse_speed, parse_symbols, parse_time_ms
from crypto_pipeline.console import say
from crypto_pipeline.replay.producer import ENGINES, replay
from crypto_pipeline.replay.request import ReplayRequest
from crypto_pipeline.settings import Settings


def replay_command(args: argparse.Namespace, settings: Settings) -> int:
    request = ReplayRequest(**{name: getattr(args, name) for name in ReplayRequest.model_fields})
    retention_ms = None if args.retention_hours is None else args.retention_hours * 3_600_000
    options = request.options(
        args.topic or settings.kafka.topic,
        args.partitions,
        retention_ms,
        settings.future_event_tolerance_s * 1000,
    )
    summary = replay(options, settings.kafka.bootstrap_servers, show_progress=not args.quiet)
    for line in summary.lines():
        say(line)
    return 130 if summary.interrupted else 0


def time_text(text: str) -> str:
    parse_time_ms(text)  # refused here with argparse's message
    return text


# How the command line reads each option-valued field of ReplayRequest.
REPLAY_ARGUMENT_TYPES: dict[str, Callable[[str], Any]] = {
    "symbols": lambda text: sorted(parse_symbols(text)),
    "start": time_text,
    "end": time_text,
    "speed": parse_speed,
    "limit": int,
    "engine": str,
}


def add_replay_request_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per field of ReplayRequest, with its description; the path positional."""
    for name, field in ReplayRequest.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        if name == "path":
            parser.add_argument(name, help=field.description)
        elif field.annotation is bool:
            parser.add_argument(flag, action="store_true", help=field.description)
        else:
            parser.add_argument(
                flag,
                type=REPLAY_ARGUMENT_TYPES[name],
                default=field.get_default(call_default_factory=True),
                choices=ENGINES if name == "engine" else None,
                help=field.description,
            )


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    add_replay_request_arguments(parser)
    parser.add_argument("--topic", help="Kafka topic (default: $KAFKA_TOPIC)")
    parser.add_argument("--partitions", type=int, default=3, help="for a new topic")
    parser.add_argument("--retention-hours", type=int, help="for a new topic")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=replay_command)
