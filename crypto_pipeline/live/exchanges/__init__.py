"""The supported exchanges, by name."""

from __future__ import annotations

from crypto_pipeline.live.exchanges.base import Exchange
from crypto_pipeline.live.exchanges.binance import Binance
from crypto_pipeline.live.exchanges.bybit import Bybit
from crypto_pipeline.live.exchanges.okx import Okx

EXCHANGES: dict[str, Exchange] = {adapter.name: adapter for adapter in (Binance(), Bybit(), Okx())}


def exchange_named(name: str) -> Exchange:
    if name not in EXCHANGES:
        raise ValueError(f"unknown exchange {name!r}; choose from {', '.join(EXCHANGES)}")
    return EXCHANGES[name]
