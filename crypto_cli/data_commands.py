"""`crypto-pipeline data`: generate market data (candles or trades) or download Binance's."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from crypto_cli.argument_types import exchange_name, parse_symbols, parse_time_ms
from crypto_pipeline.console import say
from crypto_pipeline.replay.binance_archive import DEFAULT_BASE_URL, fetch_monthly_klines
from crypto_pipeline.replay.generator import INTERVALS_MS, generate, write_csv
from crypto_pipeline.replay.trade_generator import (
    generate_trades,
    write_binance_trades,
    write_canonical_trades,
)
from crypto_pipeline.settings import REPO_ROOT, Settings


def add_data_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    data_parser = commands.add_parser("data", help="generate or download market data")
    data_commands = data_parser.add_subparsers(dest="data_command", required=True)
    generate_parser = data_commands.add_parser(
        "generate", help="write a deterministic, realistic sample of candles or trades"
    )
    generate_parser.add_argument("--kind", choices=("klines", "trades"), default="klines")
    generate_parser.add_argument(
        "--symbols", type=lambda t: sorted(parse_symbols(t)), default=["BTCUSDT", "ETHUSDT"]
    )
    generate_parser.add_argument("--start", default="2025-01-01T00:00:00Z")
    generate_parser.add_argument("--days", type=float, default=1.0)
    generate_parser.add_argument("--interval", choices=sorted(INTERVALS_MS), default="1m")
    generate_parser.add_argument("--seed", type=int, default=42)
    generate_parser.add_argument(
        "--trade-format",
        choices=("canonical", "binance"),
        default="canonical",
        help="trades: one canonical CSV, or Binance's archive files (one per symbol and day)",
    )
    generate_parser.add_argument(
        "--rate", type=float, help="trades: usual trades a second per symbol (default: its own)"
    )
    generate_parser.add_argument(
        "--exchange", type=exchange_name, help="trades, canonical: an exchange column"
    )
    generate_parser.add_argument(
        "--out",
        type=Path,
        help="default: data/generated_klines.csv.gz, data/generated_trades.csv.gz or, for "
        "Binance trade files, the folder data/generated_trades",
    )
    generate_parser.set_defaults(handler=_data_generate)
    fetch_parser = data_commands.add_parser(
        "fetch-binance", help="download one month of Binance spot klines (needs internet)"
    )
    fetch_parser.add_argument("--symbol", required=True)
    fetch_parser.add_argument("--interval", default="1m")
    fetch_parser.add_argument("--month", required=True, help="e.g. 2025-01")
    fetch_parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "data")
    fetch_parser.add_argument("--base-url", default=DEFAULT_BASE_URL)
    fetch_parser.set_defaults(handler=_data_fetch_binance)


def _data_generate(args: argparse.Namespace, settings: Settings) -> int:
    if args.kind == "trades":
        return _generate_trades(args)
    start = datetime.fromtimestamp(parse_time_ms(args.start) / 1000, tz=UTC)
    candles = generate(args.symbols, start, args.days, args.interval, args.seed)
    out = args.out or REPO_ROOT / "data" / "generated_klines.csv.gz"
    write_csv(candles, out)
    say(f"wrote {len(candles):,} candles for {len(args.symbols)} symbols to {out}")
    return 0


def _generate_trades(args: argparse.Namespace) -> int:
    seconds = int(args.days * 86_400)
    say(f"generating {seconds:,} s of trades for {len(args.symbols)} symbols ...")
    trades = generate_trades(args.symbols, parse_time_ms(args.start), seconds, args.seed, args.rate)
    if args.trade_format == "binance":
        folder = args.out or REPO_ROOT / "data" / "generated_trades"
        files = write_binance_trades(trades, folder)
        say(f"wrote {len(trades):,} trades in {len(files)} Binance trade files to {folder}")
    else:
        out = args.out or REPO_ROOT / "data" / "generated_trades.csv.gz"
        write_canonical_trades(trades, out, args.exchange)
        say(f"wrote {len(trades):,} trades for {len(args.symbols)} symbols to {out}")
    return 0


def _data_fetch_binance(args: argparse.Namespace, settings: Settings) -> int:
    path = fetch_monthly_klines(args.symbol, args.interval, args.month, args.out_dir, args.base_url)
    say(f"wrote {path}")
    return 0
