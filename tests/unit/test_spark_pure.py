"""Pure helpers of the Spark job: no Spark session, no server."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from crypto_pipeline.formats import influx_point, window_document
from crypto_pipeline.windows import interval_ms, window_ms
from spark_jobs.sinks import aggregate_columns


@pytest.mark.parametrize(
    ("label", "ms"),
    [("1s", 1_000), ("5m", 300_000), ("1h", 3_600_000), ("4h", 14_400_000), ("1d", 86_400_000)],
)
def test_window_labels(label: str, ms: int) -> None:
    assert window_ms(label) == ms


@pytest.mark.parametrize("label", ["5", "5 minutes", "m5", "5y", "0s"])
def test_bad_window_label(label: str) -> None:
    with pytest.raises(ValueError, match="must look like 5m"):
        window_ms(label)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30 minutes", 1_800_000), ("1 second", 1_000), ("5 seconds", 5_000), ("2 hours", 7_200_000)],
)
def test_intervals(text: str, ms: int) -> None:
    assert interval_ms(text) == ms


@pytest.mark.parametrize("text", ["30", "30 min", "half an hour", "-1 second"])
def test_bad_interval(text: str) -> None:
    with pytest.raises(ValueError, match="must look like '30 minutes'"):
        interval_ms(text)


def test_line_protocol_point() -> None:
    row = {
        "exchange": "binance",
        "symbol": "BTC USDT",
        "window": "5m",
        "window_start_ms": int(datetime(2025, 1, 1, 0, 5, tzinfo=UTC).timestamp() * 1000),
        "open": 1.5,
        "high": 2.0,
        "low": 1.0,
        "close": 1.75,
        "volume": 10.0,
        "quote_volume": None,
        "vwap": 1.6,
        "trades": 42,
        "rows": 5,
        "first_event_ms": 1735689900000,
        "last_event_ms": 1735690140000,
    }
    assert influx_point.encode(row, "ohlcv") == (
        "ohlcv,exchange=binance,symbol=BTC\\ USDT,window=5m "
        "open=1.5,high=2.0,low=1.0,close=1.75,volume=10.0,"
        "vwap=1.6,trades=42i,rows=5i,first_event_ms=1735689900000i,last_event_ms=1735690140000i,"
        'null_fields="quote_volume" 1735689900000'
    )


def test_batch_columns_become_documents_with_nulls_and_dates() -> None:
    """What `toPandas` gives for a batch (counts as floats where other rows are null) becomes
    plain BSON values: ints, floats, None for NaN, dates for the window bounds."""
    windows = pd.DataFrame(
        {
            "symbol": ["okx:BTCUSDT"],  # the job's series key
            "window": ["5m"],
            "window_start_ms": [1735689900000.0],
            "window_end_ms": [1735690200000.0],
            "open": [1.5],
            "high": [2.0],
            "low": [1.0],
            "close": [1.75],
            "volume": [10.0],
            "quote_volume": [float("nan")],
            "vwap": [1.6],
            "trades": [float("nan")],
            "rows": [5.0],
            "first_event_ms": [1735689900000.0],
            "last_event_ms": [1735690140000.0],
            "input_offsets": [{"2": 417}],
        }
    )
    (document,) = window_document.encode(aggregate_columns(windows))
    assert document == {
        "_id": "okx|BTCUSDT|5m|1735689900000",
        "exchange": "okx",
        "symbol": "BTCUSDT",
        "window": "5m",
        "window_start": datetime(2025, 1, 1, 0, 5, tzinfo=UTC),
        "window_end": datetime(2025, 1, 1, 0, 10, tzinfo=UTC),
        "open": 1.5,
        "high": 2.0,
        "low": 1.0,
        "close": 1.75,
        "volume": 10.0,
        "quote_volume": None,
        "vwap": 1.6,
        "trades": None,
        "rows": 5,
        "first_event_ms": 1735689900000,
        "last_event_ms": 1735690140000,
        "input_offsets": {"2": 417},
    }
    assert all(type(document[name]) is int for name in ("rows", "first_event_ms"))
