"""The trades topic's message (`<topic>.trades`), both sides: one trade as compact JSON, keyed by
exchange, symbol and trade id (a trade delivered twice has one key). Written by the live feed;
read by the tests and, next, by the job that builds candles from trades."""

from __future__ import annotations

import json
from typing import NamedTuple

from crypto_pipeline.formats.candle_message import CONNECTION, EXCHANGE, RECEIVED_MS


class Trade(NamedTuple):
    exchange: str
    symbol: str
    trade_id: str
    time_ms: int
    price: float
    quantity: float
    taker_side: str | None  # "buy" or "sell"

    def key(self) -> bytes:
        return f"{self.exchange}:{self.symbol}:{self.trade_id}".encode()

    def to_json(self, connection: str, received_ms: int) -> bytes:
        message = {
            "time_ms": self.time_ms,
            "symbol": self.symbol,
            "trade_id": self.trade_id,
            "price": self.price,
            "qty": self.quantity,
            "side": self.taker_side,
            EXCHANGE: self.exchange,
            CONNECTION: connection,
            RECEIVED_MS: received_ms,
        }
        return json.dumps(message, separators=(",", ":")).encode()
