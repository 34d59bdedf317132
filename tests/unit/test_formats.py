"""Parsing and validation of the three CSV formats; expected values written by hand."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from crypto_pipeline.candle_rules import BAD_SYMBOL, reason_kind
from crypto_pipeline.formats.candle_message import Candle
from crypto_pipeline.replay.input_files import (
    InputFormatError,
    read_rows,
    scan_file,
)
from tests.poison_cases import BROKEN_VALUES, csv_line

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
    assert row.record == Candle(
        "ADAUSDT", 1735516800000, 0.859, 0.8626, 0.855, 0.8621, 10.0, 8.6, 7
    )


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    path = write(
        tmp_path / "k.csv",
        "open_time_ms,symbol,open,high,low,close,volume\n1735689600000,X,1,2,0.5,1.5,3\n",
    )
    [row] = list(read_rows(path))
    assert row.record == Candle("X", 1735689600000, 1.0, 2.0, 0.5, 1.5, 3.0, None, None)


def test_iso_open_time(tmp_path: Path) -> None:
    text = "open_time,symbol,open,high,low,close,volume\n2025-01-01T00:01:00Z,X,1,2,0.5,1.5,3\n"
    [row] = list(read_rows(write(tmp_path / "k.csv", text)))
    assert row.record is not None
    assert row.record.event_ms == 1735689660000


@pytest.mark.parametrize("open_time", ["1735689600000", "1735689600000000"])
def test_binance_kline_file_in_ms_or_us(tmp_path: Path, open_time: str) -> None:
    line = f"{open_time},94000.1,94100,93900,94050.5,12.5,1735689659999,1175000.25,321,6,564000,0\n"
    [row] = list(read_rows(write(tmp_path / "BTCUSDT-1m-2025-01.csv", line)))
    assert row.line == 1
    assert row.record == Candle(
        "BTCUSDT", 1735689600000, 94000.1, 94100.0, 93900.0, 94050.5, 12.5, 1175000.25, 321
    )


T = "1735689600000"  # 2025-01-01T00:00Z
BAD_ROWS = [
    (f"{T},X,1,2,0.5,1.5,,1,1", "missing volume"),
    (f"{T},X,1,2,0.5", "wrong number of fields: 5, not 9"),
    (f"{T},X,one,2,0.5,1.5,3,1,1", "open is not a number: 'one'"),
    ("yesterday,X,1,2,0.5,1.5,3,1,1", "open_time is not a number: 'yesterday'"),
    (f"{T},X,1,0.4,0.5,0.45,3,1,1", "high < low"),
    (f"{T},X,1,2,0.5,2.5,3,1,1", "close outside [low, high]"),
    (f"{T},X,0.1,2,0.5,1.5,3,1,1", "open outside [low, high]"),
    (f"{T},X,1,2,0.5,1.5,-3,1,1", "negative volume"),
    (f"{T},X,1,2,0.5,1.5,nan,1,1", "volume is NaN or infinite"),
    (f"{T},X,1,inf,0.5,1.5,3,1,1", "high is NaN or infinite"),
    (f"{T},X,1,2,0.5,1.5,1e300,1,1", "volume is beyond 1e15 in magnitude"),
    (f"{T},X,1,2,0.5,1.5,3,-1,1", "negative quote_volume"),
    (f"{T},X,1,2,0.5,1.5,3,1,-1", "negative trades"),
    (f"{T},X,1,2,0.5,1.5,3,1,2.5", "trades is not a whole number: '2.5'"),
    (f"{T},X,1,2,0.5,1.5,3,1,inf", "trades is NaN or infinite"),
    (f"{T},BTC USDT,1,2,0.5,1.5,3,1,1", BAD_SYMBOL),
    (f"{T},,1,2,0.5,1.5,3,1,1", "missing symbol"),
    (
        "60000,X,1,2,0.5,1.5,3,1,1",
        "open_time is not an epoch time in s, ms, µs or ns between 2009-01-01 and 2100-01-01: "
        "60000",
    ),
]


@pytest.mark.parametrize(("line", "reason"), BAD_ROWS)
def test_bad_rows_are_rejected_with_their_reason(tmp_path: Path, line: str, reason: str) -> None:
    [row] = list(read_rows(write(tmp_path / "k.csv", HEADER + line + "\n")))
    assert (row.line, row.raw, row.record, row.reason) == (2, line, None, reason)


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


@pytest.mark.parametrize(
    "open_time",
    ["1735689600", "1735689600000", "1735689600000000", "1735689600000000000"],
)
def test_epoch_times_in_seconds_ms_us_or_ns_are_recognised(tmp_path: Path, open_time: str) -> None:
    path = write(tmp_path / "k.csv", HEADER + f"{open_time},X,1,2,0.5,1.5,3,1,1\n")
    [row] = list(read_rows(path))
    assert row.record is not None and row.record.event_ms == 1735689600000


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + HEADER.replace("\n", "\r\n").encode()
        + b"1735689600000,X,1,2,0.5,1.5,3,1,1\r\n"
    )
    [row] = list(read_rows(path))
    assert row.raw == "1735689600000,X,1,2,0.5,1.5,3,1,1"
    assert row.record == Candle("X", 1735689600000, 1.0, 2.0, 0.5, 1.5, 3.0, 1.0, 1)


def test_bad_lines_anywhere_are_rejected_with_their_line_and_the_rest_is_read(
    tmp_path: Path,
) -> None:
    good = "1735689600000,X,1,2,0.5,1.5,3,1,1\n"
    huge = '1735689660000,X,1,2,0.5,1.5,3,1,"' + "9" * 200_000 + '"\n'
    path = tmp_path / "k.csv"
    path.write_bytes(
        HEADER.encode()
        + good.encode()
        + b"1735689660000,X\xff,1,2,0.5,1.5,3,1,1\n"
        + huge.encode()
        + good.replace("89600000", "89720000").encode()
    )
    rows = list(read_rows(path))
    assert [(row.line, row.record is not None) for row in rows] == [
        (2, True),
        (3, False),
        (4, False),
        (5, True),
    ]
    assert rows[1].reason == "not UTF-8 text: byte 16"
    assert rows[2].reason is not None and "field larger than field limit" in rows[2].reason


def test_a_truncated_gzip_is_refused_before_any_row(tmp_path: Path) -> None:
    text = HEADER + "".join(
        f"{1735689600000 + 60_000 * i},X,1,2,0.5,1.5,3,1,1\n" for i in range(20_000)
    )
    path = tmp_path / "k.csv.gz"
    path.write_bytes(gzip.compress(text.encode())[:-5000])
    with pytest.raises(InputFormatError, match="cannot read to its end"):
        scan_file(path)
    with pytest.raises(InputFormatError, match="cannot read past line"):
        list(read_rows(path))


@pytest.mark.parametrize(("changes", "reason"), BROKEN_VALUES)
def test_the_producer_gives_the_shared_reasons(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    """The candles and reasons the Spark stage is tested with (test_poison_and_late.py)."""
    [row] = list(read_rows(write(tmp_path / "k.csv", HEADER + csv_line(changes) + "\n")))
    assert row.record is None and row.reason is not None
    assert reason_kind(row.reason) == reason


def test_a_symbolic_link_is_refused_not_followed(tmp_path: Path) -> None:
    """A file swapped for a link after the sensor looked at it: every open refuses the link, and
    nothing of the target (here a file of secrets) is read or echoed."""
    target = tmp_path / "secret.txt"
    target.write_text("password=hunter2\n")
    link = tmp_path / "candles.csv"
    link.symlink_to(target)
    for read in (lambda: list(read_rows(link)), lambda: scan_file(link)):
        with pytest.raises(InputFormatError, match="symbolic link") as refused:
            read()
        assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "content",
    [
        b"open_time_ms,symbol,open,high,low,close,volume\r1735689600000,BTCUSDT,1,2,1,1,1\r"
        * 20_000,
        b"x" * (2 << 20),  # no line end at all
    ],
    ids=["cr-only", "no-line-end"],
)
def test_a_file_without_line_ends_is_refused_with_one_clear_error(
    tmp_path: Path, content: bytes
) -> None:
    """Before: a CR-only file ended in an uncaught csv error, and a file without line ends was
    read whole into memory."""
    path = tmp_path / "one-line.csv"
    path.write_bytes(content)
    with pytest.raises(InputFormatError, match=str(path)):
        list(read_rows(path))
    long_line = tmp_path / "long.csv"
    long_line.write_bytes(
        b"open_time_ms,symbol,open,high,low,close,volume\n" + content.replace(b"\r", b",")
    )
    with pytest.raises(InputFormatError, match="line 2 is longer than 1,048,576 bytes"):
        scan_file(long_line)
