"""Trade files: the canonical trade CSV and Binance's trades archive read into trades, bad lines
rejected with the shared rules' reasons, and the generator's files read back. Expected values
written by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto_pipeline.candle_rules import BAD_EXCHANGE, BAD_SIDE, BAD_SYMBOL, BAD_TRADE_ID
from crypto_pipeline.formats.candle_message import file_lineage
from crypto_pipeline.formats.trade_message import Trade
from crypto_pipeline.replay import trade_rows
from crypto_pipeline.replay.input_files import InputFormatError, file_format, read_rows
from crypto_pipeline.replay.producer import ReplayError, ReplayOptions, plan_replay
from crypto_pipeline.replay.trade_generator import (
    generate_trades,
    write_binance_trades,
    write_canonical_trades,
)

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
CANONICAL = "time_ms,symbol,trade_id,price,qty,side,exchange\n"


def test_canonical_trades_with_side_and_exchange(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        CANONICAL
        + f"{T0},btcusdt,17,93576.5,0.002,buy,OKX\n"
        + f"{T0 + 5},BTCUSDT,a8a5f3c6-0b1e-4f7e-9d2c-1f2e3d4c5b6a,93576.4,1.5,,\n"
    )
    assert file_format(path).kind == "trades"
    assert [row.record for row in read_rows(path)] == [
        Trade("okx", "BTCUSDT", "17", T0, 93576.5, 0.002, "buy"),
        Trade(
            "file", "BTCUSDT", "a8a5f3c6-0b1e-4f7e-9d2c-1f2e3d4c5b6a", T0 + 5, 93576.4, 1.5, None
        ),
    ]


def test_the_minimal_canonical_header_and_epoch_units(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    seconds, microseconds = T0 // 1000, (T0 + 123) * 1000 + 999
    path.write_text(
        f"symbol,trade_id,time_ms,price,qty\nX,1,{seconds},2,3\nX,2,{microseconds},2,3\n"
    )
    assert [row.record for row in read_rows(path)] == [
        Trade("file", "X", "1", T0, 2.0, 3.0, None),
        Trade("file", "X", "2", T0 + 123, 2.0, 3.0, None),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{T0},BTC USDT,1,2,3,buy,", BAD_SYMBOL),
        (f"{T0},X,1:2,2,3,buy,", BAD_TRADE_ID),
        (f"{T0},X,{'9' * 65},2,3,buy,", BAD_TRADE_ID),
        (f"{T0},X,1,0,3,buy,", "price is not positive"),
        (f"{T0},X,1,2,-3,buy,", "quantity is not positive"),
        (f"{T0},X,1,nan,3,buy,", "price is NaN or infinite"),
        (f"{T0},X,1,2,1e300,buy,", "quantity is beyond 1e15 in magnitude"),
        (f"{T0},X,1,2,3,short,", f"{BAD_SIDE}: 'short'"),
        (f"{T0},X,1,2,3,buy,Bin ance", BAD_EXCHANGE),
        (f"{T0},X,,2,3,buy,", "missing trade_id"),
        (f"{T0},X,1,2,3,buy", "wrong number of fields: 6, not 7"),
        ("yesterday,X,1,2,3,buy,", "time_ms is not a number: 'yesterday'"),
        ("12,X,1,2,3,buy,", "time_ms is not an epoch time in s, ms, µs or ns between"),
    ],
)
def test_bad_trades_are_rejected_with_their_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CANONICAL + line + "\n")
    [row] = read_rows(path)
    assert row.record is None and row.reason is not None
    assert row.reason.startswith(reason)


def test_binance_trades_archive_in_ms_and_us_with_or_without_header(tmp_path: Path) -> None:
    lines = (
        "4420000001,93576.00000000,0.00100000,93.57600000,1735689600123456,True,True\n"
        "4420000002,93576.01000000,0.25000000,23394.00250000,1735689600200,False,True\n"
    )
    spot = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    spot.write_text(lines)
    futures = tmp_path / "ETHUSDT-trades-2025-01-01.csv"
    futures.write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n9,3300.5,2,6601,1735689600000,false\n"
    )
    assert [row.record for row in read_rows(spot)] == [
        Trade("file", "BTCUSDT", "4420000001", T0 + 123, 93576.0, 0.001, "sell"),
        Trade("file", "BTCUSDT", "4420000002", T0 + 200, 93576.01, 0.25, "buy"),
    ]
    assert [row.record for row in read_rows(futures)] == [
        Trade("file", "ETHUSDT", "9", T0, 3300.5, 2.0, "buy")
    ]


def test_a_binance_trades_file_must_name_its_symbol(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n1,2,3,6,1,True,True\n"
    )
    with pytest.raises(InputFormatError, match=r"BTCUSDT-trades-2025-01-01\.csv"):
        read_rows(path)


def test_a_trade_message_is_keyed_by_exchange_symbol_and_id_and_carries_its_lineage(
    tmp_path: Path,
) -> None:
    trade = Trade("okx", "BTCUSDT", "17", T0, 93576.5, 0.002, None)
    assert trade.key() == b"okx:BTCUSDT:17"
    value = trade.to_json(file_lineage(tmp_path / "t.csv", "0123456789abcdef"), 2, shift_ms=60_000)
    assert value.decode() == (
        f'{{"time_ms":{T0 + 60_000},"symbol":"BTCUSDT","trade_id":"17","price":93576.5,'
        f'"qty":0.002,"side":null,"exchange":"okx","source_file":"{tmp_path}/t.csv",'
        '"source_digest":"0123456789abcdef","source_line":2}'
    )


def test_the_generators_files_read_back_as_the_same_trades(tmp_path: Path) -> None:
    trades = generate_trades(["BTCUSDT", "ETHUSDT"], T0, 120, seed=5)
    canonical = tmp_path / "trades.csv.gz"
    write_canonical_trades(trades, canonical, exchange="binance")
    expected = sorted(
        (str(s), str(i), int(t), float(p), float(q), str(side))
        for s, i, t, p, q, side in zip(
            trades.symbol,
            trades.trade_id,
            trades.time_ms,
            trades.price,
            trades.quantity,
            trades.taker_side,
            strict=True,
        )
    )

    def as_tuples(paths: list[Path]) -> list[tuple[str, str, int, float, float, str]]:
        rows = [row.record for path in paths for row in read_rows(path)]
        assert all(isinstance(row, Trade) for row in rows)
        return sorted(
            (r.symbol, r.trade_id, r.time_ms, r.price, r.quantity, str(r.taker_side))
            for r in rows
            if isinstance(r, Trade)
        )

    assert as_tuples([canonical]) == expected
    assert as_tuples(write_binance_trades(trades, tmp_path / "binance")) == expected


def test_rows_off_the_fast_path_are_read_by_the_full_rules(tmp_path: Path) -> None:
    """The usual row takes a fast path; the others (a side in capitals, spaces, times in s or
    ns, an id in other digits) must come out as the full parse decides."""
    path = tmp_path / "t.csv"
    path.write_text(
        CANONICAL
        + f"{T0 * 1_000_000},X,1,2,3,Buy,\n"
        + f" {T0 // 1000} ,X, 2 , 2 , 3 , sell , OKX \n"
        + f"{T0},X,\u0661\u0662,2,3,buy,\n"
        + f"{T0},X,3,2,3,buy,binance\n"
    )
    rows = list(read_rows(path))
    assert [row.record for row in rows] == [
        Trade("file", "X", "1", T0, 2.0, 3.0, "buy"),
        Trade("okx", "X", "2", T0, 2.0, 3.0, "sell"),
        None,
        Trade("binance", "X", "3", T0, 2.0, 3.0, "buy"),
    ]
    assert rows[2].reason == BAD_TRADE_ID


def test_the_fast_path_reads_every_row_as_the_full_parse_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rows through the replay's fast path and, with it switched off, the full parse:
    the same trades and the same reasons."""
    canonical = tmp_path / "t.csv"
    canonical.write_text(
        CANONICAL
        + "".join(
            f"{line}\n"
            for line in (
                f"{T0},X,1,2,3,buy,",
                f"{T0}000,x,2,2.5,1e-8,sell,OKX",
                f"{T0},X,3,2,3,,binance",
                f"{T0},X,4,2,3,Buy,",
                f"+{T0},X,5,2,3,buy,",
                f"{T0},X,6,2,3,buy,kraken ",
                f"{T0},X,{'9' * 64},2,3,buy,",
                f"{T0},X,{'9' * 65},2,3,buy,",
                f"{T0},X,7,1e16,3,buy,",
                f"{T0},X,8,2,0,buy,",
                f"{T0 // 1000},X,9,2,3,buy,",
            )
        )
    )
    binance = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    binance.write_text(
        f"1,1.5,2,,{T0},true,true\n2,1.5,2,3,{T0}000,False,True\n3,1.5,2,3,{T0},yes,True\n"
    )

    def rows(path: Path) -> list[tuple[object, str | None]]:
        return [(row.record, row.reason) for row in read_rows(path)]

    fast = {path: rows(path) for path in (canonical, binance)}
    monkeypatch.setattr(trade_rows, "_fast_trade", lambda *fields: None)
    assert {path: rows(path) for path in (canonical, binance)} == fast
    assert sum(record is not None for record, _ in fast[canonical]) == 8
    assert [record is not None for record, _ in fast[binance]] == [True, True, False]


def test_a_trade_file_cannot_loop(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CANONICAL + f"{T0},X,1,2,3,buy,\n")
    with pytest.raises(ReplayError, match="--loop cannot replay a trade file"):
        plan_replay(ReplayOptions(path=path, topic="t", loop=True), "127.0.0.1:1")
