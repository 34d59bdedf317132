"""The candles API's pure rules: a page's `_id` range sorts as time, a page spans at most `limit`
windows, times parse, the closed flag, and the candles topic's message round-trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from bson import json_util

from crypto_api.candle_store import (
    EARLIEST_MS,
    LATEST_MS,
    id_range,
    is_closed,
    page_end,
    parse_time,
)
from crypto_pipeline.formats import candle_update

MINUTE = 60_000


def test_ids_sort_as_window_starts_across_the_whole_supported_range() -> None:
    starts = [EARLIEST_MS, 1_735_689_600_000, 1_735_689_660_000, 9_000_000_000_000, LATEST_MS]
    ids = [id_range("binance", "BTCUSDT", "1m", start, start)["_id"]["$gte"] for start in starts]
    assert ids == sorted(ids)
    # Another window length or symbol is outside the range, whatever its start.
    query = id_range("binance", "BTCUSDT", "1m", 1_735_689_600_000, 1_735_693_200_000)["_id"]
    for other in ("binance|BTCUSDT|1mo|1735689600000", "binance|BTCUSDT2|1m|1735689600000"):
        assert not query["$gte"] <= other < query["$lt"]
    assert query["$gte"] <= "binance|BTCUSDT|1m|1735693140000" < query["$lt"]


@pytest.mark.parametrize(
    ("start", "end", "limit", "expected"),
    [
        (0, 100 * MINUTE, 10, 10 * MINUTE),  # limit windows of time
        (0, 5 * MINUTE, 10, 5 * MINUTE),  # the range ends first
        (7 * MINUTE, 100 * MINUTE, 1, 8 * MINUTE),
    ],
)
def test_a_page_spans_at_most_limit_windows(
    start: int, end: int, limit: int, expected: int
) -> None:
    assert page_end(start, end, MINUTE, limit) == expected


def test_times_are_epoch_ms_or_iso_8601_in_utc_unless_said_otherwise() -> None:
    assert parse_time("1735689600000") == 1_735_689_600_000
    assert parse_time("2025-01-01") == 1_735_689_600_000
    assert parse_time("2025-01-01T00:00:00Z") == 1_735_689_600_000
    assert parse_time("2025-01-01T01:00:00+01:00") == 1_735_689_600_000
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_a_window_is_closed_once_its_end_is_behind_the_watermark() -> None:
    delay = 30 * MINUTE
    assert is_closed(10 * MINUTE, 40 * MINUTE, delay)
    assert not is_closed(10 * MINUTE + 1, 40 * MINUTE, delay)
    assert not is_closed(10 * MINUTE, None, delay)  # no event seen: nothing is closed


def test_the_candles_topic_message_is_the_mongodb_document() -> None:
    document = {
        "_id": "binance|BTCUSDT|1m|1735689600000",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "window": "1m",
        "window_start": datetime(2025, 1, 1, tzinfo=UTC),
        "window_end": datetime(2025, 1, 1, 0, 1, tzinfo=UTC),
        "open": 95000.0,
        "quote_volume": None,
        "trades": 704,
        "input_offsets": {"0": 12, "2": 7},
    }
    key, value = candle_update.encode(document)
    assert key == b"binance|BTCUSDT|1m|1735689600000"
    assert candle_update.decode(value) == document
    # What MongoDB's own relaxed Extended JSON writer makes of the document, and a date with
    # milliseconds.
    relaxed = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED)
    assert json.loads(value) == json.loads(json_util.dumps(document, json_options=relaxed))
    odd = {**document, "window_start": datetime(2025, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)}
    _, odd_value = candle_update.encode(odd)
    assert json.loads(odd_value) == json.loads(json_util.dumps(odd, json_options=relaxed))
