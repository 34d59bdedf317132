"""Reading market-data CSV files into validated candles or rejected rows with a reason.

Three formats are recognised from the first line:
- canonical: header `open_time_ms,symbol,open,high,low,close,volume[,quote_volume][,trades]`;
- canonical with an ISO-8601 `open_time` column instead of `open_time_ms`;
- Binance public kline files (data.binance.vision): no header, 12 columns, open time in ms or µs,
  symbol taken from the file name (`BTCUSDT-1m-2025-01.csv`).
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REQUIRED = ("symbol", "open", "high", "low", "close", "volume")
OPTIONAL = ("quote_volume", "trades")
BINANCE_COLUMNS = 12
BINANCE_FILE = re.compile(r"^(?P<symbol>[A-Z0-9]+)-\d+[smhdwM]-")
# Binance switched spot kline files to microseconds in 2025; any epoch above this is µs.
MICROSECONDS_ABOVE = 10**14


class InputFormatError(ValueError):
    """The file cannot be replayed at all (missing, unreadable, unknown header)."""


@dataclass(frozen=True)
class Candle:
    symbol: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None
    trades: int | None

    def to_message(self, source_file: str, line: int, shift_ms: int = 0) -> dict[str, object]:
        """The Kafka message value: typed numbers, event time in epoch ms, lineage."""
        return {
            "symbol": self.symbol,
            "event_time_ms": self.open_time_ms + shift_ms,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "quote_volume": self.quote_volume,
            "trades": self.trades,
            "source_file": source_file,
            "source_line": line,
        }


@dataclass(frozen=True)
class ParsedLine:
    """One data line: a valid candle, or the reason it was rejected."""

    line: int
    raw: str
    candle: Candle | None
    reason: str | None = None


def _parse_float(value: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{column} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{column} is not finite: {value!r}")
    return number


def _parse_int(value: str, column: str) -> int:
    number = _parse_float(value, column)
    if number != int(number):
        raise ValueError(f"{column} is not a whole number: {value!r}")
    return int(number)


def _epoch_ms(value: str) -> int:
    stamp = _parse_int(value, "open_time")
    return stamp // 1000 if stamp > MICROSECONDS_ABOVE else stamp


def _iso_ms(value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"open_time is not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def validate(candle: Candle) -> None:
    if candle.high < candle.low:
        raise ValueError(f"high {candle.high} < low {candle.low}")
    for name in ("open", "close"):
        value = getattr(candle, name)
        if not candle.low <= value <= candle.high:
            raise ValueError(f"{name} {value} outside [low {candle.low}, high {candle.high}]")
    if candle.volume < 0:
        raise ValueError(f"negative volume {candle.volume}")
    if candle.quote_volume is not None and candle.quote_volume < 0:
        raise ValueError(f"negative quote_volume {candle.quote_volume}")
    if candle.trades is not None and candle.trades < 0:
        raise ValueError(f"negative trades {candle.trades}")


RowParser = Callable[[list[str]], Candle]


def _header_parser(header: list[str]) -> RowParser | None:
    columns = [name.strip().lower() for name in header]
    time_column = next((c for c in ("open_time_ms", "open_time") if c in columns), None)
    if time_column is None or not all(name in columns for name in REQUIRED):
        return None
    index = {name: columns.index(name) for name in columns}
    to_ms = _epoch_ms if time_column == "open_time_ms" else _iso_ms
    width = len(columns)

    def parse(fields: list[str]) -> Candle:
        if len(fields) != width:
            raise ValueError(f"expected {width} fields, got {len(fields)}")

        def field(name: str) -> str:
            value = fields[index[name]].strip()
            if value == "":
                raise ValueError(f"missing {name}")
            return value

        def optional(name: str) -> str | None:
            if name not in index or fields[index[name]].strip() == "":
                return None
            return fields[index[name]].strip()

        quote_volume = optional("quote_volume")
        trades = optional("trades")
        return Candle(
            symbol=field("symbol").upper(),
            open_time_ms=to_ms(field(time_column)),
            open=_parse_float(field("open"), "open"),
            high=_parse_float(field("high"), "high"),
            low=_parse_float(field("low"), "low"),
            close=_parse_float(field("close"), "close"),
            volume=_parse_float(field("volume"), "volume"),
            quote_volume=None if quote_volume is None else _parse_float(quote_volume, "quote"),
            trades=None if trades is None else _parse_int(trades, "trades"),
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
            raise ValueError(f"expected {BINANCE_COLUMNS} fields, got {len(fields)}")
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


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise InputFormatError(f"{path}: no such file")
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except OSError as error:
        raise InputFormatError(f"{path}: cannot read: {error.strerror}") from None


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_rows(path: Path) -> Iterator[ParsedLine]:
    """Every data line of the file, parsed and validated (line numbers are 1-based).

    Raises InputFormatError at once, before any line is returned, if the file cannot be replayed."""
    stream = _open_text(path)
    try:
        first_line = stream.readline()
    except (OSError, UnicodeDecodeError, EOFError) as error:
        stream.close()
        raise InputFormatError(f"{path}: cannot read: {error}") from None
    first = next(csv.reader([first_line]), [])
    parser = _header_parser(first)
    first_data: list[tuple[int, str]] = []
    if parser is None:
        if len(first) == BINANCE_COLUMNS and _looks_numeric(first[0]):
            parser = _binance_parser(path)
            first_data.append((1, first_line))
        else:
            stream.close()
            raise InputFormatError(
                f"{path}: header {first_line.strip()[:120]!r} matches no known format "
                "(canonical open_time_ms,symbol,open,high,low,close,volume[,quote_volume]"
                "[,trades], the same with open_time, or a 12-column Binance kline file)"
            )
    return _parse_lines(stream, parser, first_data)


def _parse_lines(
    stream: io.TextIOBase, parser: RowParser, first_data: list[tuple[int, str]]
) -> Iterator[ParsedLine]:
    numbered = itertools.chain(first_data, enumerate(stream, start=2))
    with stream:
        for number, text in numbered:
            raw = text.rstrip("\r\n")
            if raw.strip() == "":
                continue
            try:
                candle = parser(next(csv.reader([raw])))
                validate(candle)
            except ValueError as error:
                yield ParsedLine(number, raw, None, str(error))
                continue
            yield ParsedLine(number, raw, candle)
