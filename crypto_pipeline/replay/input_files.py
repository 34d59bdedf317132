"""Reading market-data CSV files into validated candles or rejected rows with a reason.

Three formats are recognised from the first line:
- canonical: header `open_time_ms,symbol,open,high,low,close,volume[,quote_volume][,trades]`;
- canonical with an ISO-8601 `open_time` column instead of `open_time_ms`;
- Binance public kline files (data.binance.vision): no header, 12 columns, symbol taken from the
  file name (`BTCUSDT-1m-2025-01.csv`).

Epoch times may be in seconds, milliseconds, microseconds or nanoseconds: the unit is the one that
puts the time in the plausible range of crypto_pipeline/candle_rules.py (the ranges of the four
units do not overlap), and a time in none of them is a bad row. A UTF-8 byte-order mark and CRLF
line ends are accepted. A line that is not UTF-8, has a field over the csv module's limit or breaks
a rule is a bad row with its line number and reason; the rows around it are read on.
"""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import itertools
import math
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple

from crypto_pipeline.candle_rules import (
    MAX_EVENT_MS,
    MIN_EVENT_MS,
    candle_reason,
    not_finite,
    not_whole,
)
from crypto_pipeline.formats.candle_message import Candle

REQUIRED = ("symbol", "open", "high", "low", "close", "volume")
OPTIONAL = ("quote_volume", "trades")
BINANCE_COLUMNS = 12
BINANCE_FILE = re.compile(r"^(?P<symbol>[A-Z0-9]+)-\d+[smhdwM]-")
# An epoch time in each unit -> milliseconds: (multiply by, then floor-divide by). Binance spot
# files moved from ms to µs in 2025.
EPOCH_UNITS = {"s": (1000, 1), "ms": (1, 1), "µs": (1, 1000), "ns": (1, 1_000_000)}
# Errors of a file that ends early or is corrupt in the middle (gzip, zlib, the OS).
READ_ERRORS = (OSError, EOFError, zlib.error)


class InputFormatError(ValueError):
    """The file cannot be replayed at all (missing, unreadable, unknown header)."""


class ParsedLine(NamedTuple):
    """One data line: a valid candle, or the reason it was rejected (a tuple: one is made per
    line on the replay's hot path)."""

    line: int
    raw: str
    candle: Candle | None
    reason: str | None = None


def _parse_float(value: str, column: str) -> float:
    """A number; NaN and infinities pass (the candle rules reject them with their reason)."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{column} is not a number: {value!r}") from None


def _parse_int(value: str, column: str) -> int:
    number = _parse_float(value, column)
    if not math.isfinite(number):
        raise ValueError(not_finite(column))
    if number != int(number):
        raise ValueError(f"{not_whole(column)}: {value!r}")
    return int(number)


def _epoch_ms(value: str) -> int:
    """Epoch milliseconds of an epoch time in s, ms, µs or ns (the unit that puts it in the
    plausible range)."""
    stamp = int(value) if value.isdigit() else _parse_int(value, "open_time")
    for multiplier, divisor in EPOCH_UNITS.values():
        ms = stamp * multiplier // divisor
        if MIN_EVENT_MS <= ms < MAX_EVENT_MS:
            return ms
    raise ValueError(
        f"open_time is not an epoch time in s, ms, µs or ns between "
        f"{ms_to_iso(MIN_EVENT_MS)[:10]} and {ms_to_iso(MAX_EVENT_MS)[:10]}: {value}"
    )


def iso_to_ms(value: str) -> int:
    """Epoch milliseconds of an ISO-8601 time (UTC unless it says otherwise)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"open_time is not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def ms_to_iso(ms: int | None) -> str:
    """ISO-8601 UTC of epoch milliseconds; empty for None."""
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def validate(candle: Candle) -> None:
    """The shared candle rules (crypto_pipeline/candle_rules.py), which Spark applies too."""
    numbers = candle._asdict()
    reason = candle_reason(candle.symbol, candle.open_time_ms, numbers)
    if reason is not None:
        raise ValueError(reason)


RowParser = Callable[[list[str]], Candle]


def _header_parser(header: list[str]) -> RowParser | None:
    columns = [name.strip().lower() for name in header]
    time_column = next((c for c in ("open_time_ms", "open_time") if c in columns), None)
    if time_column is None or not all(name in columns for name in REQUIRED):
        return None
    to_ms = _epoch_ms if time_column == "open_time_ms" else iso_to_ms
    width = len(columns)
    i_time, i_symbol, i_open, i_high, i_low, i_close, i_volume = (
        columns.index(name) for name in (time_column, *REQUIRED)
    )
    required = [(name, columns.index(name)) for name in (time_column, *REQUIRED)]
    i_quote = columns.index("quote_volume") if "quote_volume" in columns else None
    i_trades = columns.index("trades") if "trades" in columns else None

    def parse(fields: list[str]) -> Candle:
        if len(fields) != width:
            raise ValueError(f"wrong number of fields: {len(fields)}, not {width}")
        values = [value.strip() for value in fields]
        for name, index in required:
            if not values[index]:
                raise ValueError(f"missing {name}")
        quote = None if i_quote is None else values[i_quote]
        trades = None if i_trades is None else values[i_trades]
        return Candle(
            values[i_symbol].upper(),
            to_ms(values[i_time]),
            _parse_float(values[i_open], "open"),
            _parse_float(values[i_high], "high"),
            _parse_float(values[i_low], "low"),
            _parse_float(values[i_close], "close"),
            _parse_float(values[i_volume], "volume"),
            _parse_float(quote, "quote_volume") if quote else None,
            _parse_int(trades, "trades") if trades else None,
        )

    return parse


def _binance_parser(path: Path) -> RowParser:
    match = BINANCE_FILE.match(path.name)
    if match is None:
        raise InputFormatError(
            f"{path}: looks like a Binance kline file, but the symbol cannot be taken from its "
            "name (expected e.g. BTCUSDT-1m-2025-01.csv)"
        )
    symbol = match.group("symbol")

    def parse(fields: list[str]) -> Candle:
        if len(fields) != BINANCE_COLUMNS:
            raise ValueError(f"wrong number of fields: {len(fields)}, not {BINANCE_COLUMNS}")
        if any(value.strip() == "" for value in fields[:9]):
            raise ValueError("missing field")
        return Candle(
            symbol=symbol,
            open_time_ms=_epoch_ms(fields[0]),
            open=_parse_float(fields[1], "open"),
            high=_parse_float(fields[2], "high"),
            low=_parse_float(fields[3], "low"),
            close=_parse_float(fields[4], "close"),
            volume=_parse_float(fields[5], "volume"),
            quote_volume=_parse_float(fields[7], "quote_volume"),
            trades=_parse_int(fields[8], "trades"),
        )

    return parse


# A line longer than this is no CSV line (a file with no line ends: CR-only, binary, a gzip bomb):
# the file is refused before anything is sent, and no read holds more than this of one line.
LINE_LIMIT_BYTES = 1 << 20


def _open_binary(path: Path) -> BinaryIO:
    """The file, never through a symbolic link (O_NOFOLLOW on every open: a file swapped for a
    link after a sensor looked at it is refused, not followed)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputFormatError(f"{path}: is a symbolic link; give the file itself") from None
        if error.errno == errno.ENOENT:
            raise InputFormatError(f"{path}: no such file") from None
        raise InputFormatError(f"{path}: cannot read: {error.strerror}") from None
    stream = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        stream.close()
        raise InputFormatError(f"{path}: not a regular file")
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_rows(path: Path) -> Iterator[ParsedLine]:
    """Every data line of the file, parsed and validated (line numbers are 1-based).

    Raises InputFormatError at once, before any line is returned, if the file cannot be replayed,
    and while iterating if it cannot be read on (a truncated or corrupt gzip)."""
    stream, parser, first_data = _open_rows(path)
    return _parse_lines(path, stream, parser, first_data)


def row_parser(path: Path) -> RowParser:
    """The parser of the file's format, for a process that parses lines another one reads."""
    stream, parser, _ = _open_rows(path)
    stream.close()
    return parser


def data_lines(path: Path) -> tuple[BinaryIO, list[tuple[int, bytes]]]:
    """The file positioned after its header, and the first data line if the header was one (a
    Binance file has none): what a reader of raw lines starts from, at line 2."""
    stream, _, first_data = _open_rows(path)
    return stream, first_data


def _open_rows(path: Path) -> tuple[BinaryIO, RowParser, list[tuple[int, bytes]]]:
    stream = _open_binary(path)
    try:
        head = stream.readline(LINE_LIMIT_BYTES + 1)
        first_line = head.decode("utf-8-sig")
        if len(head) > LINE_LIMIT_BYTES and not head.endswith(b"\n"):
            raise ValueError(f"line 1 is longer than {LINE_LIMIT_BYTES:,} bytes")
        first = next(csv.reader([first_line]), [])
    except (*READ_ERRORS, UnicodeDecodeError, ValueError, csv.Error) as error:
        stream.close()
        raise InputFormatError(f"{path}: cannot read its header: {error}") from None
    parser = _header_parser(first)
    first_data: list[tuple[int, bytes]] = []
    if parser is None:
        if len(first) == BINANCE_COLUMNS and _looks_numeric(first[0]):
            parser = _binance_parser(path)
            first_data.append((1, first_line.encode()))
        else:
            stream.close()
            raise InputFormatError(
                f"{path}: header {first_line.strip()[:120]!r} matches no known format "
                "(canonical open_time_ms,symbol,open,high,low,close,volume[,quote_volume]"
                "[,trades], the same with open_time, or a 12-column Binance kline file)"
            )
    return stream, parser, first_data


class FileScan(NamedTuple):
    lines: int
    digest: str  # of the (decompressed) content, 16 hex digits


def scan_file(path: Path) -> FileScan:
    """Lines in the file and its content's digest, without parsing it; reading it whole first
    also refuses a truncated or corrupt file, or one with a line longer than LINE_LIMIT_BYTES,
    before anything of it is sent (memory: one block, whatever the file)."""
    stream = _open_binary(path)
    digest = hashlib.blake2b(digest_size=8)
    lines, run = 0, 0  # run: bytes since the last line end
    try:
        with stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
                ends = block.count(b"\n")
                if ends:  # a line inside a block is shorter than the block: see its two ends
                    first = run + block.find(b"\n")
                    run = len(block) - block.rfind(b"\n") - 1
                    longest = max(first, run)
                else:
                    run += len(block)
                    longest = run
                if longest > LINE_LIMIT_BYTES:
                    raise InputFormatError(
                        f"{path}: line {lines + 1} is longer than {LINE_LIMIT_BYTES:,} bytes "
                        "(a CSV needs line ends: CR-only or binary files are refused)"
                    )
                lines += ends
            return FileScan(lines, digest.hexdigest())
    except READ_ERRORS as error:
        raise InputFormatError(f"{path}: cannot read to its end: {error}") from None


def parse_line(parser: RowParser, number: int, line: bytes) -> ParsedLine | None:
    """One line (with or without its end), None if it is blank."""
    try:
        raw = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as error:
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        return ParsedLine(number, text, None, f"not UTF-8 text: byte {error.start + 1}")
    if raw.strip() == "":
        return None
    try:
        # Plain lines split fast; quoted ones go through the csv module.
        fields = next(csv.reader([raw])) if '"' in raw else raw.split(",")
        candle = parser(fields)
        validate(candle)
    except (ValueError, csv.Error) as error:
        return ParsedLine(number, raw, None, str(error))
    return ParsedLine(number, raw, candle)


def _parse_lines(
    path: Path, stream: BinaryIO, parser: RowParser, first_data: list[tuple[int, bytes]]
) -> Iterator[ParsedLine]:
    numbered = itertools.chain(first_data, enumerate(stream, start=2))
    last_read = 1
    with stream:
        try:
            for number, line in numbered:
                last_read = number
                parsed = parse_line(parser, number, line)
                if parsed is not None:
                    yield parsed
        except READ_ERRORS as error:
            raise InputFormatError(f"{path}: cannot read past line {last_read}: {error}") from None
