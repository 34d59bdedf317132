"""The trade generator: deterministic, shaped like a market (bursts, quiet minutes, ticks, both
taker sides), and its two file formats read back with the csv module."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from crypto_cli import main
from crypto_pipeline.replay.trade_generator import (
    Trades,
    generate_trades,
    write_binance_trades,
    write_canonical_trades,
)

START = 1_735_689_600_000  # 2025-01-01T00:00Z
SYMBOLS = ["BTCUSDT", "ETHUSDT", "ABCUSDT"]


@pytest.fixture(scope="module")
def two_hours() -> Trades:
    return generate_trades(SYMBOLS, START, 7200, seed=3)


def test_the_same_seed_gives_the_same_trades_and_another_seed_others() -> None:
    first, again = (generate_trades(SYMBOLS, START, 60, seed=1) for _ in range(2))
    other = generate_trades(SYMBOLS, START, 60, seed=2)
    for name in Trades.__annotations__:
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.price[:100], other.price[:100])


def test_trades_are_in_time_order_with_consecutive_ids_per_symbol(two_hours: Trades) -> None:
    assert np.all(np.diff(two_hours.time_ms) >= 0)
    assert START <= two_hours.time_ms.min() and two_hours.time_ms.max() < START + 7200 * 1000
    for symbol in SYMBOLS:
        mine = two_hours.symbol == symbol
        ids = two_hours.trade_id[mine]
        assert np.array_equal(ids, ids[0] + np.arange(len(ids)))
        assert np.all(np.diff(two_hours.time_ms[mine]) >= 0)


def test_the_market_has_bursts_quiet_minutes_ticks_and_both_sides(two_hours: Trades) -> None:
    quiet_minutes = 0
    for symbol in SYMBOLS:
        mine = two_hours.symbol == symbol
        per_second = np.bincount((two_hours.time_ms[mine] - START) // 1000, minlength=7200)
        busy = per_second[per_second > 0]
        assert per_second.max() >= 5 * np.median(busy), symbol  # bursts
        per_minute = per_second.reshape(120, 60).sum(axis=1)
        quiet_minutes += int((per_minute == 0).sum())
        buys = np.mean(two_hours.taker_side[mine] == "buy")
        assert 0.4 < buys < 0.6, symbol
    # 5% of minutes are quiet: 360 minutes hold none with probability 0.95^360 < 1e-8.
    assert quiet_minutes > 0
    btc = two_hours.symbol == "BTCUSDT"
    cents = two_hours.price[btc] * 100
    assert np.allclose(cents, np.round(cents), rtol=0, atol=1e-6)  # on BTCUSDT's 0.01 tick
    assert np.all(two_hours.price > 0) and np.all(two_hours.quantity > 0)


def test_a_rate_sets_the_usual_trades_a_second() -> None:
    trades = generate_trades(["ABCUSDT"], START, 3600, seed=5, rate=100.0)
    # The hour of the day scales the rate by 1 + 0.6 cos(...), bursts and quiet minutes around it.
    assert 30 * 3600 < len(trades) < 400 * 3600


def test_the_canonical_file_reads_back_with_the_csv_module(tmp_path: Path) -> None:
    trades = generate_trades(SYMBOLS, START, 30, seed=4)
    path = tmp_path / "trades.csv.gz"
    write_canonical_trades(trades, path, exchange="binance")
    with gzip.open(path, "rt", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["time_ms", "symbol", "trade_id", "price", "qty", "side", "exchange"]
    assert len(rows) == len(trades)
    assert [int(r["time_ms"]) for r in rows] == trades.time_ms.tolist()
    assert [r["symbol"] for r in rows] == trades.symbol.tolist()
    assert [int(r["trade_id"]) for r in rows] == trades.trade_id.tolist()
    assert [float(r["price"]) for r in rows] == trades.price.tolist()
    assert [float(r["qty"]) for r in rows] == trades.quantity.tolist()
    assert {r["side"] for r in rows} == {"buy", "sell"} and {r["exchange"] for r in rows} == {
        "binance"
    }
    with gzip.open(path, "rt") as stream:
        assert "e-" not in stream.read()  # decimals, never exponent notation


def test_binance_files_are_per_symbol_and_day_in_the_archive_format(tmp_path: Path) -> None:
    # 23:59 to 00:01 across the new year: milliseconds before 2025, microseconds from it.
    trades = generate_trades(["BTCUSDT"], START - 60_000, 120, seed=6)
    paths = write_binance_trades(trades, tmp_path)
    assert [p.name for p in paths] == [
        "BTCUSDT-trades-2024-12-31.csv",
        "BTCUSDT-trades-2025-01-01.csv",
    ]
    rows = [row for path in paths for row in csv.reader(path.open())]
    assert len(rows) == len(trades) and all(len(row) == 7 for row in rows)
    stamps = [int(row[4]) for row in rows]
    times = [stamp if stamp < START else stamp // 1000 for stamp in stamps]
    assert times == trades.time_ms.tolist()
    assert all(stamp >= START * 1000 for stamp, t in zip(stamps, times, strict=True) if t >= START)
    for row, side, price, quantity in zip(
        rows, trades.taker_side, trades.price, trades.quantity, strict=True
    ):
        assert float(row[1]) == price and float(row[2]) == quantity
        assert float(row[3]) == round(price * quantity, 8)
        assert row[5] == ("True" if side == "sell" else "False")  # the buyer was the maker
        assert row[6] == "True"


def test_the_cli_writes_trades_and_refuses_a_bad_exchange(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.csv"
    assert (
        main(["data", "generate", "--kind", "trades", "--days", "0.0005", "--out", str(out)]) == 0
    )
    assert out.read_text().startswith("time_ms,symbol,trade_id,price,qty,side\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "generate", "--kind", "trades", "--exchange", "Bad!"])
    assert exit_info.value.code == 2
    assert "argument --exchange: exchange has characters outside" in capsys.readouterr().err
