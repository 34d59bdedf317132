"""What makes a candle valid: the one definition both stages apply, the replay producer in
Python (crypto_pipeline/replay/input_files.py) and the Spark job as column expressions
(spark_jobs/transform.py).
A record that breaks a rule goes to the dead-letter topic with the rule's reason; the reasons'
texts are shared too, so a dead letter reads the same whichever stage wrote it.

The bounds keep every aggregate finite and every sink write valid:
- symbols are 1-32 of `A-Z 0-9 _ -`, exchanges 1-32 of `a-z 0-9 _ -` (absent: a file, the
  source FILE_EXCHANGE): nothing that line protocol, Flux or a Grafana regex would have to escape,
  no way to inject a second InfluxDB point, and neither holds the series key's `:`;
- trades are at most 1e12 per candle: a week of 1-second candles (604,800) sums to less than
  int64's 9.2e18, the type both sinks store it as (at 1e15 the sum would overflow silently);
- prices and volumes are finite and at most 1e15: the sums of a week of 1-second candles
  (6e5 candles, turnover up to 1e30 each) stay far below the float and int64 limits;
- event times fall in [2009-01-01, 2100-01-01): later than any crypto market's start, earlier
  than any unit mistake (a time in seconds read as milliseconds is in 1970, one in microseconds
  read as milliseconds is after 2100);
- and no later than the clock plus a tolerance (FUTURE_EVENT_TOLERANCE_S): one candle dated
  2095 would otherwise move its symbol's watermark 70 years ahead and make every later candle of
  it late. The producer compares with its clock when it sends; the Spark job with the record's
  Kafka timestamp (when it was produced), so a backfill years later decides the same.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping

# Unanchored: each stage matches the whole symbol its own way (`$` would accept a final newline).
SYMBOL_PATTERN = r"[A-Z0-9][A-Z0-9_-]{0,31}"
SYMBOL = re.compile(SYMBOL_PATTERN)
EXCHANGE_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
EXCHANGE = re.compile(EXCHANGE_PATTERN)
# Exchanges' trade ids: Binance's and OKX's are numbers, Bybit's UUIDs.
TRADE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
TRADE_ID = re.compile(TRADE_ID_PATTERN)
TAKER_SIDES = ("buy", "sell")
MAX_MAGNITUDE = 1e15
MAX_TRADES = 1e12
MIN_EVENT_MS = 1_230_768_000_000  # 2009-01-01T00:00:00Z
MAX_EVENT_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z

PRICE_FIELDS = ("open", "high", "low", "close")
NUMERIC_FIELDS = (*PRICE_FIELDS, "volume", "quote_volume", "trades")

# The reasons, by rule. A reason never carries the record's values: it groups dead letters.
BAD_SYMBOL = "symbol is empty or has characters outside A-Z 0-9 _ -, or more than 32"
BAD_EXCHANGE = "exchange has characters outside a-z 0-9 _ -, or more than 32"
EVENT_TIME_OUT_OF_RANGE = "event time outside 2009-01-01..2100-01-01"
FUTURE_EVENT_TIME = "event time ahead of the clock by more than the tolerance"
DEFAULT_FUTURE_TOLERANCE_S = 300
HIGH_BELOW_LOW = "high < low"
OPEN_OUTSIDE = "open outside [low, high]"
CLOSE_OUTSIDE = "close outside [low, high]"
BAD_TRADE_ID = "trade id is empty or has characters outside A-Z a-z 0-9 _ -, or more than 64"
BAD_SIDE = "side is neither buy nor sell"


def not_finite(field: str) -> str:
    return f"{field} is NaN or infinite"


def not_whole(field: str) -> str:
    return f"{field} is not a whole number"


def magnitude_limit(field: str) -> float:
    return MAX_TRADES if field == "trades" else MAX_MAGNITUDE


def too_large(field: str) -> str:
    return f"{field} is beyond {magnitude_limit(field):.0e} in magnitude".replace("e+", "e")


def negative(field: str) -> str:
    return f"negative {field}"


@functools.lru_cache(maxsize=4096)  # a file has few symbols, each on many rows
def symbol_reason(symbol: str) -> str | None:
    return None if SYMBOL.fullmatch(symbol) else BAD_SYMBOL


def event_time_reason(event_ms: int) -> str | None:
    return None if MIN_EVENT_MS <= event_ms < MAX_EVENT_MS else EVENT_TIME_OUT_OF_RANGE


def future_reason(event_ms: int, clock_ms: int, tolerance_ms: int) -> str | None:
    """Whether the candle is dated after the clock (when it was produced) plus the tolerance."""
    return FUTURE_EVENT_TIME if event_ms > clock_ms + tolerance_ms else None


def number_reason(field: str, value: float | int | None) -> str | None:
    """Why one numeric field's value is not acceptable (None: it is, or it is absent)."""
    if value is None:
        return None
    # The common case in one comparison, which NaN and the infinities fail too.
    limit = magnitude_limit(field)
    if (-limit if field in PRICE_FIELDS else 0) <= value <= limit:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return not_finite(field)
    if abs(value) > limit:
        return too_large(field)
    if field not in PRICE_FIELDS and value < 0:
        return negative(field)
    return None


def ohlc_reason(open_: float, high: float, low: float, close: float) -> str | None:
    if high < low:
        return HIGH_BELOW_LOW
    if not low <= open_ <= high:
        return OPEN_OUTSIDE
    if not low <= close <= high:
        return CLOSE_OUTSIDE
    return None


def candle_reason(
    symbol: str,
    event_ms: int,
    numbers: Mapping[str, float | int | None],
) -> str | None:
    """The first rule the candle breaks, in the order the Spark stage checks them (symbol, event
    time, each numeric field in NUMERIC_FIELDS order, then open/close within [low, high])."""
    reason = symbol_reason(symbol) or event_time_reason(event_ms)
    if reason is not None:
        return reason
    for field in NUMERIC_FIELDS:
        reason = number_reason(field, numbers.get(field))
        if reason is not None:
            return reason
    return ohlc_reason(*(float(numbers[name] or 0) for name in PRICE_FIELDS))


def trade_reason(
    symbol: str, trade_id: str, time_ms: int, price: float, quantity: float
) -> str | None:
    """The first rule a trade breaks: the candles' symbol rule, a trade id that needs no
    escaping anywhere, the event-time rule, then a price and a quantity that are finite, positive
    and within the magnitude limit."""
    reason = (
        symbol_reason(symbol)
        or (None if TRADE_ID.fullmatch(trade_id) else BAD_TRADE_ID)
        or event_time_reason(time_ms)
    )
    if reason is not None:
        return reason
    for field, value in (("price", price), ("quantity", quantity)):
        if not 0 < value <= MAX_MAGNITUDE:
            if not math.isfinite(value):
                return not_finite(field)
            return too_large(field) if value > 0 else f"{field} is not positive"
    return None


def values_reason(
    symbol: str,
    event_ms: int,
    open_: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    quote_volume: float | None,
    trades: float | None,
) -> str | None:
    """`candle_reason` of values given one by one, for the live feed's hot path: a valid candle
    passes one chained comparison (which NaN fails too); any other takes `candle_reason`."""
    if (
        -MAX_MAGNITUDE <= low <= open_ <= high <= MAX_MAGNITUDE
        and low <= close <= high
        and 0 <= volume <= MAX_MAGNITUDE
        and (quote_volume is None or 0 <= quote_volume <= MAX_MAGNITUDE)
        and (trades is None or 0 <= trades <= MAX_TRADES)
        and MIN_EVENT_MS <= event_ms < MAX_EVENT_MS
    ):
        return symbol_reason(symbol)
    values = (open_, high, low, close, volume, quote_volume, trades)
    return candle_reason(symbol, event_ms, dict(zip(NUMERIC_FIELDS, values, strict=True)))


def reason_kind(reason: str) -> str:
    """A rejection reason without the row's values (which follow a colon), for grouping:
    'close is not a number', 'high < low', 'wrong number of fields'."""
    return reason.split(":")[0].strip()
