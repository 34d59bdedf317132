"""Reading market-data CSV files into validated records (candles or trades) or rejected rows with
a reason.

The format is recognised from the first line: a candle format (crypto_pipeline/replay/
candle_rows.py) or a trade format (crypto_pipeline/replay/trade_rows.py). A UTF-8 byte-order mark
and CRLF line ends are accepted. A line that is not UTF-8, has a field over the csv module's limit
or breaks a rule is a bad row with its line number and reason; the rows around it are read on.
"""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import itertools
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

from crypto_pipeline.replay import candle_rows, trade_rows
from crypto_pipeline.replay.row_fields import (
    InputFormatError,
    Record,
    RowParser,
    looks_numeric,
)

# Errors of a file that ends early or is corrupt in the middle (gzip, zlib, the OS).
READ_ERRORS = (OSError, EOFError, zlib.error)
RecordKind = Literal["candles", "trades"]


class ParsedLine(NamedTuple):
    """One data line: a valid record, or the reason it was rejected (a tuple: one is made per
    line on the replay's hot path)."""

    line: int
    raw: str
    record: Record | None
    reason: str | None = None


class FileFormat(NamedTuple):
    parser: RowParser
    kind: RecordKind  # what its lines hold


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


def read_rows(path: Path) -> Iterator[ParsedLine]:
    """Every data line of the file, parsed and validated (line numbers are 1-based).

    Raises InputFormatError at once, before any line is returned, if the file cannot be replayed,
    and while iterating if it cannot be read on (a truncated or corrupt gzip)."""
    stream, file_format, first_data = _open_rows(path)
    return _parse_lines(path, stream, file_format.parser, first_data)


def file_format(path: Path) -> FileFormat:
    """The file's format, for a process that parses lines another one reads."""
    stream, found, _ = _open_rows(path)
    stream.close()
    return found


def data_lines(path: Path) -> tuple[BinaryIO, list[tuple[int, bytes]]]:
    """The file positioned after its header, and the first data line if the header was one (a
    Binance file has none): what a reader of raw lines starts from, at line 2."""
    stream, _, first_data = _open_rows(path)
    return stream, first_data


def _format_of(path: Path, first: list[str]) -> tuple[FileFormat, bool] | None:
    """The format of a file whose first line has these fields, and whether that line is data."""
    columns = [name.strip().lower() for name in first]
    parser = candle_rows.header_parser(columns)
    if parser is not None:
        return FileFormat(parser, "candles"), False
    parser = trade_rows.header_parser(columns, path)
    if parser is not None:
        return FileFormat(parser, "trades"), False
    if not first or not looks_numeric(first[0]):
        return None
    if len(first) == candle_rows.BINANCE_COLUMNS:
        return FileFormat(candle_rows.binance_parser(path), "candles"), True
    if trade_rows.is_binance_file(path, first):
        return FileFormat(trade_rows.binance_parser(path, len(first)), "trades"), True
    return None


def _open_rows(path: Path) -> tuple[BinaryIO, FileFormat, list[tuple[int, bytes]]]:
    stream = _open_binary(path)
    try:
        head = stream.readline(LINE_LIMIT_BYTES + 1)
        first_line = head.decode("utf-8-sig")
        if len(head) > LINE_LIMIT_BYTES and not head.endswith(b"\n"):
            raise ValueError(f"line 1 is longer than {LINE_LIMIT_BYTES:,} bytes")
        first = next(csv.reader([first_line]), [])
        found = _format_of(path, first)
    except (*READ_ERRORS, UnicodeDecodeError, ValueError, csv.Error) as error:
        stream.close()
        if isinstance(error, InputFormatError):
            raise
        raise InputFormatError(f"{path}: cannot read its header: {error}") from None
    if found is None:
        stream.close()
        raise InputFormatError(
            f"{path}: header {first_line.strip()[:120]!r} matches no known format "
            f"({candle_rows.HEADER_HELP}; {trade_rows.HEADER_HELP})"
        )
    file_format, first_is_data = found
    first_data = [(1, first_line.encode())] if first_is_data else []
    return stream, file_format, first_data


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
        record = parser(fields)
    except (ValueError, csv.Error) as error:
        return ParsedLine(number, raw, None, str(error))
    return ParsedLine(number, raw, record)


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
