"""`crypto-pipeline`: the command line of the project. Errors are one readable line and exit 1.

The top layer, with the demo and the benchmarks: it may use the Dagster code location
(`crypto_assets`); nothing below it imports this package."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

import local_stack as stack
from crypto_cli.argument_types import parse_series, parse_time_ms
from crypto_cli.bench.api_bench import add_api_bench
from crypto_cli.bench.live_bench import add_live_bench
from crypto_cli.data_commands import add_data_commands
from crypto_cli.demo import ONCE_END, ONCE_START
from crypto_cli.live_command import add_live_commands
from crypto_cli.replay_command import add_replay_arguments
from crypto_cli.serve_command import add_serve_command
from crypto_pipeline.clients import KafkaUnavailable
from crypto_pipeline.console import say
from crypto_pipeline.formats.candle_message import FILE_EXCHANGE
from crypto_pipeline.live.feed_sink import FeedError
from crypto_pipeline.replay.binance_archive import FetchError
from crypto_pipeline.replay.input_files import InputFormatError
from crypto_pipeline.replay.producer import ReplayError
from crypto_pipeline.settings import REPO_ROOT, KafkaTarget, Settings, stream_status_file
from spark_jobs.interface import launch
from spark_jobs.interface.config import AVAILABLE_NOW, CANDLES, TRADES, JobConfig, split_names
from spark_jobs.interface.heartbeat import running_stream_pid

Handler = Callable[[argparse.Namespace, Settings], int]


def _stack_up(args: argparse.Namespace, settings: Settings) -> int:
    if args.spark_workers is not None:
        settings = dataclasses.replace(settings, spark_workers=args.spark_workers)
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


def _job(args: argparse.Namespace, settings: Settings) -> int:
    """The Spark job on the settings' servers, in this terminal. Ctrl-C or SIGTERM reach the
    job, which stops its query after the batch it is writing; this waits for it."""
    job = JobConfig.from_settings(
        settings,
        kafka=KafkaTarget(settings.kafka.bootstrap_servers, args.topic or settings.kafka.topic),
        trigger=args.trigger,
        source=args.source,
        **({"windows": split_names(args.windows)} if args.windows else {}),
    )
    stream_pid = running_stream_pid(stream_status_file(settings.stack_dir, job.kafka.topic))
    if stream_pid is not None:
        raise ValueError(f"the continuous job (pid {stream_pid}) is processing {job.kafka.topic}")
    say(f"the Spark job on {job.kafka.topic} ({job.trigger}) ...")
    process = subprocess.Popen(launch.driver_command(job), env=launch.process_environment(job))

    def forward(signum: int, frame: FrameType | None) -> None:
        process.send_signal(signum)  # the job's handler only sets a flag: twice is harmless

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, forward)
    return process.wait()


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_cli.backfill_command import backfill

    return backfill(
        settings,
        args.topic,
        args.symbols,
        args.start,
        args.end,
        args.late,
        args.windows,
        args.source,
    )


def add_source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        choices=(CANDLES, TRADES),
        default=CANDLES,
        help="candles: the topic's candles into longer ones (default); trades: candles from "
        "<topic>.trades, kept in <collection>_from_trades and <measurement>_from_trades",
    )


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_cli import demo

    if args.once:
        return demo.run_once(settings, args.start, args.end)
    return demo.run_interactive(settings)


def _dashboards(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_cli.dashboards import write_dashboards

    for path in write_dashboards():
        say(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


def _migrate_keys(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_pipeline.key_migration import migrate_keys

    stream_pid = running_stream_pid(stream_status_file(settings.stack_dir, settings.kafka.topic))
    if stream_pid is not None:
        raise ValueError(f"stop the continuous job (pid {stream_pid}) first")
    say(f"moving the windows of {settings.mongo.database}.{settings.mongo.collection} ...")
    migrated = migrate_keys(
        settings.kafka, settings.mongo, settings.influx, lambda line: say(f"  {line}")
    )
    say(
        f"migrated {migrated.mongo_windows:,} MongoDB windows, {migrated.ledger_entries:,} "
        f"ledger entries and {migrated.influx_points:,} InfluxDB points to exchange "
        f"{FILE_EXCHANGE!r}; the job re-keys its checkpoint when it next starts"
    )
    return 0


def _bench_producer(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_cli.bench.producer_bench import bench_producer

    bench_producer(settings, args.rows, args.memory_rows, args.kind)
    return 0


def _bench_stream(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_cli.bench.latency_bench import bench_latency
    from crypto_cli.bench.stream_bench import bench_stream

    if not args.latency_only:
        bench_stream(settings, args.rows, compute_only=args.compute_only)
    if not args.compute_only:
        bench_latency(settings, args.rate, args.seconds, search=args.search)
    return 0


def _bench_state(args: argparse.Namespace, settings: Settings) -> int:
    options = ["--symbols", str(args.symbols), "--minutes", str(args.minutes)]
    command = launch.component_bench_command("state", [*options, "--batches", str(args.batches)])
    return subprocess.run(command).returncode


def _bench_sinks(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_cli.bench.workloads import bench_job

    name = f"bench_sinks_{int(time.time())}"
    job = bench_job(settings, name, settings.stack_dir / "bench" / "checkpoints" / name, name)
    command = launch.component_bench_command("sinks", ["--docs", str(args.docs), *job.to_args()])
    return subprocess.run(command, env=launch.process_environment(job)).returncode


def _bench_trades(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_cli.bench.trades_bench import bench_trades
    from crypto_cli.bench.trades_live_bench import bench_live_trades

    if args.live:
        bench_live_trades(settings, args.rate, args.seconds)
    else:
        bench_trades(settings, args.rows, args.windows, args.per_batch)
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
    stack_commands.choices["up"].add_argument(
        "--spark-workers",
        type=int,
        metavar="N",
        help="also a Spark standalone master and N one-core workers (default: "
        "$STACK_SPARK_WORKERS, 0); jobs use them with SPARK_MASTER=spark://127.0.0.1:7077",
    )

    job_parser = commands.add_parser(
        "job", help="run the Spark job on the settings' servers (Dagster runs it the same way)"
    )
    job_parser.add_argument("--topic", help="Kafka topic (default: $KAFKA_TOPIC)")
    job_parser.add_argument(
        "--trigger",
        default=AVAILABLE_NOW,
        help=f'"{AVAILABLE_NOW}" (what is in Kafka, then exit; default) or an interval such as '
        '"1 second" (continuous; Ctrl-C stops it cleanly)',
    )
    add_source_argument(job_parser)
    job_parser.add_argument("--windows", help="window lengths (default: the job's)")
    job_parser.set_defaults(handler=_job)

    backfill_parser = commands.add_parser(
        "backfill",
        help="recompute the windows of a range of event time from the whole topic into both "
        "sinks (repairs rows the live job dropped as late)",
    )
    backfill_parser.add_argument("--topic", help="Kafka topic (default: $KAFKA_TOPIC)")
    backfill_parser.add_argument(
        "--symbols",
        type=parse_series,
        help="e.g. BTCUSDT,ETHUSDT (on every exchange) or binance:BTCUSDT (on one)",
    )
    backfill_parser.add_argument("--start", type=parse_time_ms, help="ISO-8601 or epoch ms")
    backfill_parser.add_argument("--end", type=parse_time_ms, help="exclusive")
    backfill_parser.add_argument(
        "--late",
        action="store_true",
        help="repair the late ledger's open entries, per symbol and range (those found "
        "unrepairable before are tried again)",
    )
    backfill_parser.add_argument("--windows", help="window lengths (default: the job's)")
    add_source_argument(backfill_parser)
    backfill_parser.set_defaults(handler=_backfill)

    commands.add_parser(
        "migrate-keys",
        help="move windows stored before windows had an exchange to the new keys, in place "
        "(once, with the stream stopped)",
    ).set_defaults(handler=_migrate_keys)

    replay_parser = commands.add_parser(
        "replay", help="replay a market-data CSV into Kafka at real-time or accelerated speed"
    )
    add_replay_arguments(replay_parser)
    add_live_commands(commands)
    add_data_commands(commands)
    add_serve_command(commands)

    demo_parser = commands.add_parser(
        "demo",
        help="the whole pipeline on the local stack with the Dagster UI on 127.0.0.1:3001 "
        "(until Ctrl-C); --once: one bounded run and every check, for scripts",
    )
    demo_parser.add_argument(
        "--once", action="store_true", help="replay a fixed range, run the job and every check"
    )
    demo_parser.add_argument("--start", default=ONCE_START, help="--once: first event time")
    demo_parser.add_argument("--end", default=ONCE_END, help="--once: end of range (exclusive)")
    demo_parser.set_defaults(handler=_demo)

    commands.add_parser(
        "dashboards", help="write the Grafana dashboards (built in code) to docker/grafana/"
    ).set_defaults(handler=_dashboards)

    bench_parser = commands.add_parser("bench", help="measure throughput on the local stack")
    bench_commands = bench_parser.add_subparsers(dest="bench_command", required=True)
    producer_bench = bench_commands.add_parser(
        "producer", help="paced and bulk replay vs Kafka's ProducerPerformance, messages/s; memory"
    )
    producer_bench.add_argument("--rows", type=int, default=1_000_000)
    producer_bench.add_argument(
        "--kind", choices=("candles", "trades"), default="candles", help="what the file holds"
    )
    producer_bench.add_argument(
        "--memory-rows",
        type=int,
        default=10_000_000,
        help="peak RSS of a bulk replay of a file this long, against --rows (0: skip)",
    )
    producer_bench.set_defaults(handler=_bench_producer)
    trades_bench = bench_commands.add_parser(
        "trades",
        help="candles from trades: compute only (steady trades/s vs Kafka's consumer) or live "
        "(latency to both sinks at a paced rate)",
    )
    trades_mode = trades_bench.add_mutually_exclusive_group(required=True)
    trades_mode.add_argument("--compute-only", action="store_true", help="nothing written")
    trades_mode.add_argument("--live", action="store_true", help="the continuous job, 1 s trigger")
    trades_bench.add_argument("--rows", type=int, default=5_000_000, help="--compute-only")
    trades_bench.add_argument("--windows", default="1s,1m,5m,1h", help="--compute-only")
    trades_bench.add_argument("--per-batch", type=int, default=500_000, help="--compute-only")
    trades_bench.add_argument("--rate", type=int, default=50_000, help="--live: trades/s")
    trades_bench.add_argument("--seconds", type=int, default=120, help="--live")
    trades_bench.set_defaults(handler=_bench_trades)
    stream_bench = bench_commands.add_parser(
        "stream",
        help="Spark job steady events/s (no sinks, both sinks) vs Kafka's consumer, then the live "
        "job's latency p50/95/99 to each sink at a steady rate",
    )
    stream_bench.add_argument("--rows", type=int, default=5_000_000, help="topic size (reused)")
    stream_bench.add_argument("--rate", type=int, default=5_000, help="latency run: rows/s")
    stream_bench.add_argument("--seconds", type=int, default=120, help="latency run: duration")
    stream_bench.add_argument("--latency-only", action="store_true")
    stream_bench.add_argument(
        "--compute-only", action="store_true", help="only the run without sinks (no latency)"
    )
    stream_bench.add_argument(
        "--search", action="store_true", help="latency: also find the highest rate that keeps up"
    )
    stream_bench.set_defaults(handler=_bench_stream)
    sinks_bench = bench_commands.add_parser(
        "sinks",
        help="the job's sink writes, docs/s and points/s (new and existing windows) vs a plain "
        "bulk insert, on MONGO_URI and INFLUXDB_URL",
    )
    sinks_bench.add_argument("--docs", type=int, default=20_000)
    sinks_bench.set_defaults(handler=_bench_sinks)
    state_bench = bench_commands.add_parser(
        "state",
        help="the windowed step's state with many idle symbols: a one-candle batch and a "
        "restart's load vs writing the whole state (no server)",
    )
    state_bench.add_argument("--symbols", type=int, default=20_000)
    state_bench.add_argument("--minutes", type=int, default=60, help="open candles per symbol")
    state_bench.add_argument("--batches", type=int, default=20, help="one-candle batches")
    state_bench.set_defaults(handler=_bench_state)
    add_live_bench(bench_commands)
    add_api_bench(bench_commands)
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
    except (
        stack.StackError,
        ReplayError,
        InputFormatError,
        KafkaUnavailable,
        FetchError,
        FeedError,
        ValueError,
        OSError,
    ) as error:
        print(f"crypto-pipeline: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
