"""Parsing and validation of the three CSV formats; expected values written by hand."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from crypto_pipeline.replay.formats import Candle, InputFormatError, read_rows

HEADER = "open_time_ms,symbol,open,high,low,close,volume,quote_volume,trades\n"


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["k.csv", "k.csv.gz"])
def test_canonical_rows(tmp_path: Path, name: str) -> None:
    path = write(
        tmp_path / name, HEADER + "1735516800000,adausdt,0.859,0.8626,0.855,0.8621,10,8.6,7\n"
    )
    [row] = list(read_rows(path))
    assert row.line == 2
    assert row.candle == Candle(
        "ADAUSDT", 1735516800000, 0.859, 0.8626, 0.855, 0.8621, 10.0, 8.6, 7
    )


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    path = write(
        tmp_path / "k.csv",
        "open_time_ms,symbol,open,high,low,close,volume\n60000,X,1,2,0.5,1.5,3\n",
    )
    [row] = list(read_rows(path))
    assert row.candle == Candle("X", 60000, 1.0, 2.0, 0.5, 1.5, 3.0, None, None)


def test_iso_open_time(tmp_path: Path) -> None:
    text = "open_time,symbol,open,high,low,close,volume\n2025-01-01T00:01:00Z,X,1,2,0.5,1.5,3\n"
    [row] = list(read_rows(write(tmp_path / "k.csv", text)))
    assert row.candle is not None
    assert row.candle.open_time_ms == 1735689660000


@pytest.mark.parametrize("open_time", ["1735689600000", "1735689600000000"])
def test_binance_kline_file_in_ms_or_us(tmp_path: Path, open_time: str) -> None:
    line = f"{open_time},94000.1,94100,93900,94050.5,12.5,1735689659999,1175000.25,321,6,564000,0\n"
    [row] = list(read_rows(write(tmp_path / "BTCUSDT-1m-2025-01.csv", line)))
    assert row.line == 1
    assert row.candle == Candle(
        "BTCUSDT", 1735689600000, 94000.1, 94100.0, 93900.0, 94050.5, 12.5, 1175000.25, 321
    )


BAD_ROWS = [
    ("60000,X,1,2,0.5,1.5,,1,1", "missing volume"),
    ("60000,X,1,2,0.5", "expected 9 fields, got 5"),
    ("60000,X,one,2,0.5,1.5,3,1,1", "open is not a number: 'one'"),
    ("yesterday,X,1,2,0.5,1.5,3,1,1", "open_time is not a number: 'yesterday'"),
    ("60000,X,1,0.4,0.5,0.45,3,1,1", "high 0.4 < low 0.5"),
    ("60000,X,1,2,0.5,2.5,3,1,1", "close 2.5 outside [low 0.5, high 2.0]"),
    ("60000,X,0.1,2,0.5,1.5,3,1,1", "open 0.1 outside [low 0.5, high 2.0]"),
    ("60000,X,1,2,0.5,1.5,-3,1,1", "negative volume -3.0"),
    ("60000,X,1,2,0.5,1.5,nan,1,1", "volume is not finite: 'nan'"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_ROWS)
def test_bad_rows_are_rejected_with_their_reason(tmp_path: Path, line: str, reason: str) -> None:
    [row] = list(read_rows(write(tmp_path / "k.csv", HEADER + line + "\n")))
    assert (row.line, row.raw, row.candle, row.reason) == (2, line, None, reason)


def test_iso_time_that_does_not_parse(tmp_path: Path) -> None:
    text = "open_time,symbol,open,high,low,close,volume\nnot-a-time,X,1,2,0.5,1.5,3\n"
    [row] = list(read_rows(write(tmp_path / "k.csv", text)))
    assert row.reason == "open_time is not an ISO-8601 time: 'not-a-time'"


def test_unknown_header_is_an_error_before_any_row(tmp_path: Path) -> None:
    path = write(tmp_path / "k.csv", "time,price\n1,2\n")
    with pytest.raises(InputFormatError, match="matches no known format"):
        read_rows(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="no such file"):
        read_rows(tmp_path / "absent.csv")


def test_corrupt_gzip_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "k.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InputFormatError, match="cannot read"):
        read_rows(path)


def test_binance_file_without_symbol_in_name(tmp_path: Path) -> None:
    path = write(tmp_path / "klines.csv", "1735689600000,1,2,0.5,1.5,3,1735689659999,4,5,1,1,0\n")
    with pytest.raises(InputFormatError, match="symbol cannot be taken from its name"):
        read_rows(path)
