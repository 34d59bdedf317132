"""Trade files, each line parsed into a trade that keeps the shared trade rules:
- the canonical trade CSV: header `time_ms,symbol,trade_id,price,qty[,side][,exchange]` (side
  `buy` or `sell`, the taker's; exchange absent: a file's, FILE_EXCHANGE);
- Binance's public trades archive (data.binance.vision): `id,price,qty,quote_qty,time,
  is_buyer_maker[,is_best_match]`, without a header (spot) or with one (futures), the symbol taken
  from the file name as in `BTCUSDT-trades-2025-01-01.csv`, times in ms (µs from 2025 on spot).

A trade's quote volume is always price x qty, computed where candles are built: `quote_qty` of
Binance's files is that product rounded, and the other sources have no such field.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from crypto_pipeline.candle_rules import (
    BAD_EXCHANGE,
    BAD_SIDE,
    EXCHANGE,
    MAX_EVENT_MS,
    MAX_MAGNITUDE,
    MIN_EVENT_MS,
    TAKER_SIDES,
    symbol_reason,
    trade_reason,
)
from crypto_pipeline.formats.candle_message import FILE_EXCHANGE
from crypto_pipeline.formats.trade_message import REQUIRED_FIELDS, Trade
from crypto_pipeline.replay.row_fields import (
    RowParser,
    check_width,
    epoch_ms,
    parse_float,
    symbol_from_name,
)

REQUIRED = REQUIRED_FIELDS  # the canonical columns are named as the message's members
HEADER_HELP = (
    "canonical trades time_ms,symbol,trade_id,price,qty[,side][,exchange], "
    "a Binance trades archive file"
)
BINANCE_COLUMNS = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match")
BINANCE_FILE = re.compile(r"^(?P<symbol>[A-Z0-9]+)-trades-")
# The buyer was the maker: the taker sold (spot archives write True/False, futures true/false).
TAKER_SIDE_OF_BUYER_MAKER = {"true": "sell", "false": "buy", "True": "sell", "False": "buy"}
SIDE_OF_TEXT = {"buy": "buy", "sell": "sell", "": None}
UNKNOWN_SIDE = "?"  # the fast path's marker of a side it does not know


def validate(trade: Trade) -> Trade:
    """The shared trade rules (crypto_pipeline/candle_rules.py) in the order Spark applies them
    (spark_jobs/trade_seconds.reject_reasons): `trade_reason`, the exchange, the side."""
    reason = trade_reason(trade.symbol, trade.trade_id, trade.time_ms, trade.price, trade.quantity)
    if reason is None and not EXCHANGE.fullmatch(trade.exchange):
        reason = BAD_EXCHANGE
    if reason is None and trade.taker_side not in (None, *TAKER_SIDES):
        reason = f"{BAD_SIDE}: {trade.taker_side!r}"
    if reason is not None:
        raise ValueError(reason)
    return trade


@functools.lru_cache(maxsize=256)  # a file has few exchanges, each on many rows
def _exchange_of(value: str) -> str | None:
    """The exchange a row names (a file's when empty); None when it breaks the exchange rule."""
    exchange = value.strip().lower() or FILE_EXCHANGE
    return exchange if EXCHANGE.fullmatch(exchange) else None


def _fast_trade(
    exchange: str | None,
    symbol: str,
    trade_id: str,
    time_text: str,
    price_text: str,
    quantity_text: str,
    side: str | None,
) -> Trade | None:
    """The trade when its fields are in the usual form and keep every rule (epoch ms or µs, a
    numeric id, a known side), else None: the full parse then finds the reason. The replay's hot
    path; it accepts nothing `validate` would refuse."""
    if exchange is None or side == UNKNOWN_SIDE or not (trade_id.isdigit() and len(trade_id) <= 64):
        return None
    try:
        stamp = int(time_text)
        price = float(price_text)
        quantity = float(quantity_text)
    except ValueError:
        return None
    time_ms = stamp if stamp < MAX_EVENT_MS else stamp // 1000  # µs, as Binance writes from 2025
    if (
        MIN_EVENT_MS <= time_ms < MAX_EVENT_MS
        and 0 < price <= MAX_MAGNITUDE
        and 0 < quantity <= MAX_MAGNITUDE
        and trade_id.isascii()
        and symbol_reason(symbol) is None
    ):
        return Trade(exchange, symbol, trade_id, time_ms, price, quantity, side)
    return None


def header_parser(columns: list[str], path: Path) -> RowParser | None:
    """The parser of a trade file with this header (lower-cased), None if it is not one."""
    if tuple(columns) in (BINANCE_COLUMNS, BINANCE_COLUMNS[:-1]):
        return binance_parser(path, len(columns))
    if not all(name in columns for name in REQUIRED):
        return None
    width = len(columns)
    i_time, i_symbol, i_id, i_price, i_qty = (columns.index(name) for name in REQUIRED)
    i_side = columns.index("side") if "side" in columns else None
    i_exchange = columns.index("exchange") if "exchange" in columns else None

    def parse(fields: list[str]) -> Trade:
        if len(fields) == width:
            fast = _fast_trade(
                FILE_EXCHANGE if i_exchange is None else _exchange_of(fields[i_exchange]),
                fields[i_symbol].strip().upper(),
                fields[i_id].strip(),
                fields[i_time],
                fields[i_price],
                fields[i_qty],
                None if i_side is None else SIDE_OF_TEXT.get(fields[i_side], UNKNOWN_SIDE),
            )
            if fast is not None:
                return fast
        check_width(fields, width)
        values = [value.strip() for value in fields]
        for name, index in zip(REQUIRED, (i_time, i_symbol, i_id, i_price, i_qty), strict=True):
            if not values[index]:
                raise ValueError(f"missing {name}")
        exchange = values[i_exchange].lower() if i_exchange is not None else ""
        return validate(
            Trade(
                exchange or FILE_EXCHANGE,
                values[i_symbol].upper(),
                values[i_id],
                epoch_ms(values[i_time], "time_ms"),
                parse_float(values[i_price], "price"),
                parse_float(values[i_qty], "qty"),
                None if i_side is None else values[i_side].lower() or None,
            )
        )

    return parse


def is_binance_file(path: Path, first_line: list[str]) -> bool:
    """A Binance trades archive without a header: named as one, and a number of columns it has."""
    widths = (len(BINANCE_COLUMNS), len(BINANCE_COLUMNS) - 1)
    return BINANCE_FILE.match(path.name) is not None and len(first_line) in widths


def binance_parser(path: Path, width: int) -> RowParser:
    symbol = symbol_from_name(path, BINANCE_FILE, "trades", "BTCUSDT-trades-2025-01-01.csv")

    def parse(fields: list[str]) -> Trade:
        if len(fields) == width:
            fast = _fast_trade(
                FILE_EXCHANGE,
                symbol,
                fields[0],
                fields[4],
                fields[1],
                fields[2],
                TAKER_SIDE_OF_BUYER_MAKER.get(fields[5], UNKNOWN_SIDE),
            )
            if fast is not None:
                return fast
        check_width(fields, width)
        if any(fields[index].strip() == "" for index in (0, 1, 2, 4, 5)):  # quote_qty unused
            raise ValueError("missing field")
        try:
            side = TAKER_SIDE_OF_BUYER_MAKER[fields[5].strip().lower()]
        except KeyError:
            raise ValueError(f"is_buyer_maker is neither true nor false: {fields[5]!r}") from None
        return validate(
            Trade(
                FILE_EXCHANGE,
                symbol,
                fields[0].strip(),
                epoch_ms(fields[4], "time"),
                parse_float(fields[1], "price"),
                parse_float(fields[2], "qty"),
                side,
            )
        )

    return parse
