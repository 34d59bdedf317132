"""Candles computed independently from trades in pandas: the reference the candles built from
trades are compared with. Shares no code with spark_jobs."""

from __future__ import annotations

import pandas as pd

from crypto_pipeline.replay.trade_generator import Trades  # the generator's output, not its code


def resample_trades(trades: pd.DataFrame, window_ms: int) -> pd.DataFrame:
    """One row per (exchange, symbol, start) of the distinct trades (by exchange, symbol and
    id), open and close by (time, id) with numeric ids; columns as the job names them, `start`
    for the window's start. `trades`: exchange, symbol, trade_id, time_ms, price, qty, side."""
    trades = trades.drop_duplicates(["exchange", "symbol", "trade_id"])
    trades = trades.assign(
        start=trades.time_ms // window_ms * window_ms,
        id_number=trades.trade_id.astype("int64"),
        turnover=trades.price * trades.qty,
        buy=trades.qty.where(trades.side == "buy", 0.0),
        sell=trades.qty.where(trades.side == "sell", 0.0),
    ).sort_values(["exchange", "symbol", "time_ms", "id_number"])
    grouped = trades.groupby(["exchange", "symbol", "start"], sort=True)
    return pd.DataFrame(
        {
            "open": grouped.price.first(),
            "high": grouped.price.max(),
            "low": grouped.price.min(),
            "close": grouped.price.last(),
            "volume": grouped.qty.sum(),
            "quote_volume": grouped.turnover.sum(),
            "trades": grouped.size(),
            "taker_buy_volume": grouped.buy.sum(),
            "taker_sell_volume": grouped.sell.sum(),
            "first_ms": grouped.time_ms.min(),
            "first_id": grouped.trade_id.first(),
            "last_ms": grouped.time_ms.max(),
            "last_id": grouped.trade_id.last(),
        }
    ).reset_index()


def generated_frame(generated: Trades, exchange: object = "file") -> pd.DataFrame:
    """The trade generator's columns as the frame `resample_trades` reads."""
    return pd.DataFrame(
        {
            "exchange": exchange,
            "symbol": generated.symbol,
            "trade_id": generated.trade_id.astype(str),
            "time_ms": generated.time_ms,
            "price": generated.price,
            "qty": generated.quantity,
            "side": generated.taker_side,
        }
    )
