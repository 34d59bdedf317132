"""Gaps: closed candles missing between a series' first and last one, in the topic and in a sink
(what the `no_gaps` asset check reports).

- The topic: per series (exchange, symbol), the event times of its closed candles (a file's candle
  is closed as sent; a live one once `closed`). Under the exchange's empty-bucket rule: where it
  sends a candle for every interval (Binance, Bybit; a file, as Binance's archives are), every
  interval between the first and the last must be there, the interval being the series' shortest
  step. Where it sends none for an interval without trades (OKX), a missing interval cannot be told
  from a quiet one: it is not a gap.
- A sink: per series, each window of the shortest length must hold as many candles (`rows`) as the
  topic has closed candles in it; a window short of them, or absent, is a gap over its span.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from crypto_pipeline import candle_rules as rules
from crypto_pipeline.formats.candle_message import (
    CLOSED,
    EXCHANGE,
    FILE_EXCHANGE,
    REQUIRED_FIELDS,
)
from crypto_pipeline.formats.window_values import Aggregates
from crypto_pipeline.live.exchanges import EXCHANGES
from crypto_pipeline.live.exchanges.base import EmptyBuckets
from crypto_pipeline.windows import window_ms

Series = tuple[str, str]  # (exchange, symbol)
REQUIRED = frozenset(REQUIRED_FIELDS)
Span = tuple[int, int]  # [start, end) of event time, ms


def empty_bucket_rule(exchange: str) -> EmptyBuckets:
    if exchange in EXCHANGES:
        return EXCHANGES[exchange].empty_buckets
    return EmptyBuckets.ZERO_VOLUME if exchange == FILE_EXCHANGE else EmptyBuckets.NONE


def closed_candle_times(
    records: Iterable[tuple[bytes, int]],
    future_tolerance_ms: int = rules.DEFAULT_FUTURE_TOLERANCE_S * 1000,
) -> dict[Series, set[int]]:
    """The event times of each series' closed candles, from (value, Kafka timestamp) records.
    Only candles the job accepts count: a message that breaks a candle rule is a dead letter
    (counted by the job), not a candle of its series."""
    times: dict[Series, set[int]] = {}
    for value, timestamp_ms in records:
        try:
            message = json.loads(value)
            symbol, event_ms = message["symbol"], message["event_time_ms"]
            exchange = message.get(EXCHANGE, FILE_EXCHANGE)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        if not (isinstance(symbol, str) and type(event_ms) is int and isinstance(exchange, str)):
            continue
        if message.get(CLOSED, True) is not True or not rules.EXCHANGE.fullmatch(exchange):
            continue
        numbers = {name: message.get(name) for name in rules.NUMERIC_FIELDS}
        if not all(_number(numbers[name], name in REQUIRED) for name in numbers):
            continue
        if rules.candle_reason(symbol, event_ms, numbers) or rules.future_reason(
            event_ms, timestamp_ms, future_tolerance_ms
        ):
            continue
        times.setdefault((exchange, symbol), set()).add(event_ms)
    return times


def _number(value: object, required: bool) -> bool:
    if value is None:
        return not required
    return isinstance(value, int | float) and not isinstance(value, bool)


def missing_intervals(times: Iterable[int]) -> list[Span]:
    """The spans between consecutive candles that are more than the shortest step apart."""
    pairs = list(itertools.pairwise(sorted(times)))
    if not pairs:
        return []
    interval = min(b - a for a, b in pairs)
    return [(a + interval, b) for a, b in pairs if b - a > interval]


def stored_rows(aggregates: Aggregates, window: str) -> dict[Series, dict[int, int]]:
    """Per series, the rows of each stored window of this length, by window start."""
    rows: dict[Series, dict[int, int]] = {}
    for (exchange, symbol, label, start), values in aggregates.items():
        if label == window:
            rows.setdefault((exchange, symbol), {})[start] = int(values["rows"] or 0)
    return rows


def short_windows(times: set[int], stored: dict[int, int], size_ms: int) -> list[Span]:
    """The windows where the sink holds fewer of a series' candles than the topic has closed
    ones, or none, up to the sink's newest window of the series (exclusive: a running job may
    still be writing it; later ones are the `fresh` check's)."""
    newest = max(stored, default=None)
    expected: dict[int, int] = {}
    for t in times:
        expected[t - t % size_ms] = expected.get(t - t % size_ms, 0) + 1
    return [
        (start, start + size_ms)
        for start, count in sorted(expected.items())
        if newest is None or start < newest
        if stored.get(start, 0) < count
    ]


@dataclass
class GapReport:
    """Per series, the spans missing; the series whose exchange sends no empty candles (their
    topic cannot be checked for gaps)."""

    topic: dict[Series, list[Span]] = field(default_factory=dict)
    sinks: dict[str, dict[Series, list[Span]]] = field(default_factory=dict)
    unchecked_topic: list[Series] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.topic and not any(self.sinks.values())


def find_gaps(
    times: dict[Series, set[int]], sinks: dict[str, Aggregates], window: str
) -> GapReport:
    report = GapReport(sinks={name: {} for name in sinks})
    stored = {name: stored_rows(aggregates, window) for name, aggregates in sinks.items()}
    for series, series_times in sorted(times.items()):
        if empty_bucket_rule(series[0]) is EmptyBuckets.ZERO_VOLUME:
            if missing := missing_intervals(series_times):
                report.topic[series] = missing
        else:
            report.unchecked_topic.append(series)
        for name, rows in stored.items():
            if short := short_windows(series_times, rows.get(series, {}), window_ms(window)):
                report.sinks[name][series] = short
    return report
