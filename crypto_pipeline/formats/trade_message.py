"""The trades topic's message (`<topic>.trades`), both sides: one trade as compact JSON, keyed by
exchange, symbol and trade id (a trade delivered twice has one key). Written by the live feed
(`to_live_json`: with the connection and the receive time) and by the replay of a trade file
(`to_json`: with the file's lineage); read by the tests and, next, by the job that builds candles
from trades."""

from __future__ import annotations

import json
from typing import NamedTuple

from crypto_pipeline.formats.candle_message import (
    CONNECTION,
    EXCHANGE,
    RECEIVED_MS,
    SOURCE_LINE,
)

# The members of a trade message, as both writers name them.
TIME_MS = "time_ms"
TRADE_ID = "trade_id"
PRICE = "price"
QUANTITY = "qty"
SIDE = "side"
REQUIRED_FIELDS = (TIME_MS, "symbol", TRADE_ID, PRICE, QUANTITY)


class Trade(NamedTuple):
    exchange: str
    symbol: str
    trade_id: str
    time_ms: int
    price: float
    quantity: float
    taker_side: str | None  # "buy" or "sell"

    @property
    def event_ms(self) -> int:
        return self.time_ms

    def key(self) -> bytes:
        return f"{self.exchange}:{self.symbol}:{self.trade_id}".encode()

    def to_json(self, lineage: str, line: int, shift_ms: int = 0) -> bytes:
        """The message value of a valid trade of a file, built directly as `Candle.to_json` is
        (the trade rules leave finite numbers and ids, symbols and exchanges that need no
        escaping); `lineage` is the file's part, already JSON (`file_lineage`)."""
        side = "null" if self.taker_side is None else f'"{self.taker_side}"'
        return (
            f'{{"{TIME_MS}":{self.time_ms + shift_ms},"symbol":"{self.symbol}",'
            f'"{TRADE_ID}":"{self.trade_id}","{PRICE}":{self.price!r},'
            f'"{QUANTITY}":{self.quantity!r},"{SIDE}":{side},"{EXCHANGE}":"{self.exchange}",'
            f'{lineage},"{SOURCE_LINE}":{line}}}'
        ).encode()

    def to_live_json(self, connection: str, received_ms: int) -> bytes:
        message = {
            TIME_MS: self.time_ms,
            "symbol": self.symbol,
            TRADE_ID: self.trade_id,
            PRICE: self.price,
            QUANTITY: self.quantity,
            SIDE: self.taker_side,
            EXCHANGE: self.exchange,
            CONNECTION: connection,
            RECEIVED_MS: received_ms,
        }
        return json.dumps(message, separators=(",", ":")).encode()
