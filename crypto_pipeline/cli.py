"""`crypto-pipeline`: the command line of the project. Errors are one readable line and exit 1."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from crypto_pipeline import stack
from crypto_pipeline.console import say
from crypto_pipeline.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _stack_up(args: argparse.Namespace, settings: Settings) -> int:
    stack.up(settings)
    return 0


def _stack_down(args: argparse.Namespace, settings: Settings) -> int:
    stack.down(settings)
    return 0


def _stack_status(args: argparse.Namespace, settings: Settings) -> int:
    return 0 if stack.status(settings) else 1


def _stack_reset(args: argparse.Namespace, settings: Settings) -> int:
    stack.reset(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crypto-pipeline",
        description="Real-time crypto market-data pipeline on Dagster: tools and local stack.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack_parser = commands.add_parser(
        "stack", help="start, stop, inspect or wipe the local stack (Kafka, FerretDB, InfluxDB)"
    )
    stack_commands = stack_parser.add_subparsers(dest="stack_command", required=True)
    for name, handler, help_text in [
        ("up", _stack_up, "fetch/build what is missing, start every service, wait until healthy"),
        ("down", _stack_down, "stop the processes the stack started (data is kept)"),
        ("status", _stack_status, "show each service's process and health; exit 1 if not all up"),
        ("reset", _stack_reset, "stop everything and wipe the state directory"),
    ]:
        stack_commands.add_parser(name, help=help_text).set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python logs every refused connection while a broker starts; our errors say enough.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args, Settings.from_env())
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except (stack.StackError, ValueError, OSError) as error:
        print(f"crypto-pipeline: error: {error}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
