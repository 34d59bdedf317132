"""Candle files: the canonical candle CSV (epoch or ISO-8601 open time) and Binance's public kline
files (data.binance.vision: no header, 12 columns, symbol taken from the file name as in
`BTCUSDT-1m-2025-01.csv`), each line parsed into a candle that keeps the shared candle rules."""

from __future__ import annotations

import re
from pathlib import Path

from crypto_pipeline.candle_rules import candle_reason
from crypto_pipeline.formats.candle_message import Candle
from crypto_pipeline.replay.row_fields import (
    RowParser,
    check_width,
    epoch_ms,
    iso_to_ms,
    parse_float,
    parse_int,
    symbol_from_name,
)

REQUIRED = ("symbol", "open", "high", "low", "close", "volume")
OPTIONAL = ("quote_volume", "trades")
HEADER_HELP = (
    "canonical candles open_time_ms,symbol,open,high,low,close,volume[,quote_volume][,trades] "
    "(or open_time in ISO-8601), a 12-column Binance kline file"
)
BINANCE_COLUMNS = 12
BINANCE_FILE = re.compile(r"^(?P<symbol>[A-Z0-9]+)-\d+[smhdwM]-")


def validate(candle: Candle) -> Candle:
    """The shared candle rules (crypto_pipeline/candle_rules.py), which Spark applies too."""
    reason = candle_reason(candle.symbol, candle.open_time_ms, candle._asdict())
    if reason is not None:
        raise ValueError(reason)
    return candle


def header_parser(columns: list[str]) -> RowParser | None:
    """The parser of a canonical candle file with this header (lower-cased), None if it is not
    one."""
    time_column = next((c for c in ("open_time_ms", "open_time") if c in columns), None)
    if time_column is None or not all(name in columns for name in REQUIRED):
        return None
    iso_time = time_column == "open_time"
    width = len(columns)
    i_time, i_symbol, i_open, i_high, i_low, i_close, i_volume = (
        columns.index(name) for name in (time_column, *REQUIRED)
    )
    required = [(name, columns.index(name)) for name in (time_column, *REQUIRED)]
    i_quote = columns.index("quote_volume") if "quote_volume" in columns else None
    i_trades = columns.index("trades") if "trades" in columns else None

    def parse(fields: list[str]) -> Candle:
        check_width(fields, width)
        values = [value.strip() for value in fields]
        for name, index in required:
            if not values[index]:
                raise ValueError(f"missing {name}")
        quote = None if i_quote is None else values[i_quote]
        trades = None if i_trades is None else values[i_trades]
        time = values[i_time]
        return validate(
            Candle(
                values[i_symbol].upper(),
                iso_to_ms(time) if iso_time else epoch_ms(time, "open_time"),
                parse_float(values[i_open], "open"),
                parse_float(values[i_high], "high"),
                parse_float(values[i_low], "low"),
                parse_float(values[i_close], "close"),
                parse_float(values[i_volume], "volume"),
                parse_float(quote, "quote_volume") if quote else None,
                parse_int(trades, "trades") if trades else None,
            )
        )

    return parse


def binance_parser(path: Path) -> RowParser:
    symbol = symbol_from_name(path, BINANCE_FILE, "kline", "BTCUSDT-1m-2025-01.csv")

    def parse(fields: list[str]) -> Candle:
        check_width(fields, BINANCE_COLUMNS)
        if any(value.strip() == "" for value in fields[:9]):
            raise ValueError("missing field")
        return validate(
            Candle(
                symbol=symbol,
                open_time_ms=epoch_ms(fields[0], "open_time"),
                open=parse_float(fields[1], "open"),
                high=parse_float(fields[2], "high"),
                low=parse_float(fields[3], "low"),
                close=parse_float(fields[4], "close"),
                volume=parse_float(fields[5], "volume"),
                quote_volume=parse_float(fields[7], "quote_volume"),
                trades=parse_int(fields[8], "trades"),
            )
        )

    return parse
