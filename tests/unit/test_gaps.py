"""What `no_gaps` finds: spans of closed candles missing from the topic (under each exchange's
empty-bucket rule) and from a sink's shortest windows. Cases written by hand."""

from __future__ import annotations

import json

from crypto_pipeline.gaps import closed_candle_times, find_gaps, missing_intervals

MIN = 60_000


NOW = 1_735_689_600_000  # when the records were produced (2025-01-01)


def message(
    t: int, exchange: str | None = None, closed: bool | None = None, **changes: object
) -> tuple[bytes, int]:
    body: dict = {"symbol": "BTCUSDT", "event_time_ms": NOW + t, "open": 1.0, "high": 2.0}
    body.update({"low": 0.5, "close": 1.5, "volume": 3.0, **changes})
    if exchange is not None:
        body["exchange"] = exchange
    if closed is not None:
        body["closed"] = closed
    return json.dumps(body).encode(), NOW


def windows(exchange: str, rows: dict[int, int]) -> dict:
    """A sink's 5m windows of BTCUSDT on an exchange: start -> rows."""
    return {(exchange, "BTCUSDT", "5m", start): {"rows": n} for start, n in rows.items()}


def test_closed_candles_by_series_open_versions_and_non_candles_left_out() -> None:
    times = closed_candle_times(
        [
            message(0),  # a file's
            message(MIN, "binance", closed=True),
            message(2 * MIN, "binance", closed=False),  # not closed yet
            (b"not json", NOW),
            (json.dumps({"symbol": "X"}).encode(), NOW),
        ]
    )
    assert times == {("file", "BTCUSDT"): {NOW}, ("binance", "BTCUSDT"): {NOW + MIN}}


def test_messages_the_job_turns_into_dead_letters_are_no_candles() -> None:
    """Each breaks a rule (tests/poison_cases.py has them all): counted, it would make a gap of
    70 years, a step of 123 ms, or a series the job never writes."""
    broken = [
        message(70 * 365 * 24 * 60 * MIN),  # dated decades after it was produced
        message(123, close=float("nan")),
        message(2 * MIN, high=0.1),  # high < low
        message(3 * MIN, "Binance"),
        message(4 * MIN, ""),
        message(5 * MIN, symbol="BTC USDT"),
        message(6 * MIN, volume="3"),
        message(7 * MIN, volume=None),
    ]
    assert closed_candle_times([message(0), *broken]) == {("file", "BTCUSDT"): {NOW}}


def test_missing_intervals_are_spans_between_candles_further_apart_than_the_step() -> None:
    assert missing_intervals([0, MIN, 2 * MIN]) == []
    assert missing_intervals([0, MIN, 4 * MIN, 5 * MIN, 7 * MIN]) == [
        (2 * MIN, 4 * MIN),
        (6 * MIN, 7 * MIN),
    ]
    assert missing_intervals([5 * MIN]) == []


def test_a_topic_gap_counts_where_the_exchange_sends_every_interval_only() -> None:
    times = {("binance", "BTCUSDT"): {0, MIN, 3 * MIN}, ("okx", "BTCUSDT"): {0, MIN, 3 * MIN}}
    report = find_gaps(times, {}, "5m")
    assert report.topic == {("binance", "BTCUSDT"): [(2 * MIN, 3 * MIN)]}
    assert report.unchecked_topic == [("okx", "BTCUSDT")]
    assert not report.passed
    files = find_gaps({("file", "BTCUSDT"): {0, MIN, 4 * MIN}}, {}, "5m")
    assert files.topic == {("file", "BTCUSDT"): [(2 * MIN, 4 * MIN)]}


def test_a_sink_window_short_of_the_topics_candles_or_absent_is_a_gap() -> None:
    times = {("okx", "BTCUSDT"): {t * MIN for t in range(20) if t != 7}}  # 19 candles, 4 windows
    whole = windows("okx", {0: 5, 5 * MIN: 4, 10 * MIN: 5, 15 * MIN: 5})
    assert find_gaps(times, {"mongodb": whole}, "5m").passed
    short = windows("okx", {0: 5, 5 * MIN: 3, 15 * MIN: 5})  # one short, one absent
    report = find_gaps(times, {"mongodb": short, "influxdb": whole}, "5m")
    assert report.sinks == {
        "mongodb": {("okx", "BTCUSDT"): [(5 * MIN, 10 * MIN), (10 * MIN, 15 * MIN)]},
        "influxdb": {},
    }
    # Another exchange's window of the same symbol does not stand in for it.
    assert not find_gaps(times, {"mongodb": windows("binance", {0: 5, 5 * MIN: 4})}, "5m").passed


def test_the_sinks_newest_window_and_later_ones_are_not_gaps_yet() -> None:
    """A running job may still be writing its newest window; later ones are `fresh`'s concern."""
    times = {("binance", "BTCUSDT"): {t * MIN for t in range(15)}}
    behind = windows("binance", {0: 5, 5 * MIN: 2})
    assert find_gaps(times, {"mongodb": behind}, "5m").passed
