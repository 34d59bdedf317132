"""The shape of an OHLCV aggregate as both sinks store it (the value fields; the key is
symbol, window and window start)."""

AGGREGATE_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "vwap",
    "trades",
    "rows",
    "first_event_ms",
    "last_event_ms",
)
INTEGER_FIELDS = frozenset({"trades", "rows", "first_event_ms", "last_event_ms"})
