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
NULLABLE_FIELDS = ("quote_volume", "vwap", "trades")
# InfluxDB has no null and merges the fields of a point written again, so a field that became null
# would keep its old value there. Every point therefore carries this string field, written each
# time: the comma-separated names of its null fields, whatever values InfluxDB still holds for them.
NULL_FIELDS_FIELD = "null_fields"


def window_id(symbol: str, window: str, window_start_ms: int) -> str:
    """A window's natural key as one string: its MongoDB `_id`."""
    return f"{symbol}|{window}|{window_start_ms}"
