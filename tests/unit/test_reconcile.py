"""The checks' own arithmetic: the pandas reference agrees with the csv-module reference of the
tests, comparisons find every kind of difference, replay scopes and checkpoints read right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crypto_pipeline.formats.candle_message import Candle
from crypto_pipeline.formats.trade_message import Trade
from crypto_pipeline.reconcile import (
    ReplayScope,
    committed_offsets,
    compare,
    newest_events,
    reference_aggregates,
    reference_trade_aggregates,
    settled,
)
from crypto_pipeline.replay.trade_generator import generate_trades
from crypto_pipeline.settings import REPO_ROOT
from tests.conftest import SHARED_DATA
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.expected_trade_candles import generated_frame, resample_trades

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
SHARED_Q1 = SHARED_DATA / "binance_spot_15m_10sym_2025Q1.csv.gz"
WINDOWS = ["5m", "1h", "4h"]
HOUR = 3_600_000


def test_pandas_reference_equals_the_csv_reference_on_the_sample() -> None:
    scope = ReplayScope(path=str(SAMPLE))
    actual = reference_aggregates(scope.candles(), WINDOWS, scope)
    expected = expected_aggregates(read_csv_rows(SAMPLE), WINDOWS)
    assert len(actual) == 3 * (576 + 48 + 12)
    assert mismatches(expected, actual) == []


def test_pandas_reference_equals_the_csv_reference_on_real_binance_klines() -> None:
    if not SHARED_Q1.exists():
        pytest.skip(f"{SHARED_Q1} is not present")
    symbols = ("BTCUSDT", "DOGEUSDT")
    scope = ReplayScope(path=str(SHARED_Q1), symbols=symbols)
    actual = reference_aggregates(scope.candles(), ["1h", "4h"], scope)
    expected = expected_aggregates(read_csv_rows(SHARED_Q1, set(symbols)), ["1h", "4h"])
    assert len(actual) == len(expected) > 4000
    assert mismatches(expected, actual) == []


def candle(t: int, *, qv: float | None = 10.0, trades: int | None = 3, v: float = 2.0) -> Candle:
    return Candle("BTC", t, 5.0, 6.0, 3.0, 4.5, v, qv, trades)


def test_missing_quote_volume_falls_back_to_typical_price_and_missing_trades_give_null() -> None:
    result = reference_aggregates([candle(0), candle(60_000, qv=None, trades=None)], ["5m"])
    aggregate = result[("file", "BTC", "5m", 0)]
    assert aggregate["quote_volume"] is None
    assert aggregate["trades"] is None
    # typical price (6 + 3 + 4.5) / 3 = 4.5, turnover 4.5 * 2 per candle, over volume 4
    assert aggregate["vwap"] == pytest.approx(4.5, rel=1e-12)


def test_zero_volume_has_no_vwap_and_a_duplicate_event_counts_once() -> None:
    twice = [candle(0, v=0.0, qv=0.0), candle(0, v=0.0, qv=0.0)]
    aggregate = reference_aggregates(twice, ["5m"])[("file", "BTC", "5m", 0)]
    assert aggregate["vwap"] is None
    assert aggregate["rows"] == 1
    assert aggregate["trades"] == 3


def test_comparison_reports_each_kind_of_difference() -> None:
    base = reference_aggregates([candle(0), candle(HOUR)], ["1h"])
    assert compare(base, base).passed
    changed = {key: dict(value) for key, value in base.items()}
    changed[("file", "BTC", "1h", 0)]["close"] = 4.5 * (1 + 1e-8)
    del changed[("file", "BTC", "1h", HOUR)]
    changed[("file", "ETH", "1h", 0)] = dict(base[("file", "BTC", "1h", 0)])

    result = compare(base, changed)

    assert not result.passed
    assert result.only_left == [("file", "BTC", "1h", HOUR)]
    assert result.only_right == [("file", "ETH", "1h", 0)]
    assert result.different == ["file|BTC|1h|0 close: 4.5 vs 4.500000045"]
    metadata = result.metadata("source", "mongodb")
    assert metadata["only_in_source"] == 1
    assert metadata["sample_only_in_mongodb"] == ["file|ETH|1h|0"]
    assert "1 values differ" in result.summary("source", "mongodb")
    # Keys only the sink has are other replays' windows when comparing with one replay.
    assert compare(
        base,
        {**base, ("file", "ETH", "1h", 0): base[("file", "BTC", "1h", 0)]},
        left_only_keys=True,
    )


def test_values_within_the_tolerance_are_equal_and_null_differs_from_zero() -> None:
    base = reference_aggregates([candle(0)], ["1h"])
    close_enough = {k: {**v, "volume": v["volume"] * (1 + 1e-12)} for k, v in base.items()}
    assert compare(base, close_enough).passed
    null_trades = {k: {**v, "trades": None} for k, v in base.items()}
    assert compare(base, null_trades).different == ["file|BTC|1h|0 trades: 3 vs None"]


def test_scope_keeps_only_windows_the_replay_covers_whole() -> None:
    candles = [candle(t * 15 * 60_000) for t in range(12)]  # 00:00 .. 02:45
    bounded = ReplayScope(path="x", start_ms=HOUR // 2, end_ms=2 * HOUR + HOUR // 2)
    kept = reference_aggregates(candles, ["1h"], bounded)
    assert sorted(k[3] for k in kept) == [HOUR]
    shifted = ReplayScope(path="x", event_shift_ms=HOUR)
    assert sorted(k[3] for k in reference_aggregates(candles, ["1h"], shifted)) == [
        HOUR,
        2 * HOUR,
        3 * HOUR,
    ]
    # Looping: the next pass starts 2h45m + 15m = 3h later; the window 2h-3h ends exactly there.
    looped = ReplayScope(path="x", pass_span_ms=3 * HOUR)
    assert len(reference_aggregates(candles, ["1h", "4h"], looped)) == 3


def test_scope_reads_the_rows_the_producer_sent_and_survives_metadata(tmp_path: Path) -> None:
    scope = ReplayScope(path=str(SAMPLE), symbols=("ETHUSDT",), limit=100, start_ms=1735700400000)
    candles = scope.candles()
    assert len(candles) == 100
    assert {c.symbol for c in candles} == {"ETHUSDT"}
    assert min(c.open_time_ms for c in candles) == 1735700400000
    assert ReplayScope.from_metadata(json.loads(json.dumps(scope.to_metadata()))) == scope


def write_batch(query: Path, batch: int, offsets: dict[str, int], committed: bool) -> None:
    (query / "offsets").mkdir(parents=True, exist_ok=True)
    (query / "commits").mkdir(parents=True, exist_ok=True)
    metadata = {"batchWatermarkMs": 0, "batchTimestampMs": 0, "conf": {}}
    source = {"t": offsets}
    (query / "offsets" / str(batch)).write_text(f"v1\n{json.dumps(metadata)}\n{json.dumps(source)}")
    if committed:
        (query / "commits" / str(batch)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def test_committed_offsets_come_from_the_last_committed_batch(tmp_path: Path) -> None:
    query = tmp_path / "ohlcv"
    assert committed_offsets(query) is None
    write_batch(query, 0, {"0": 10, "1": 4}, committed=True)
    write_batch(query, 1, {"0": 25, "1": 9}, committed=True)
    write_batch(query, 2, {"0": 30, "1": 9}, committed=False)  # planned, not done
    assert committed_offsets(query) == {"t": {0: 25, 1: 9}}


def test_settled_windows_are_those_ending_at_or_before_their_symbols_watermark() -> None:
    """What sinks_agree compares while the stream runs: BTC's newest event 10:30, watermark 30
    minutes, so its windows ending by 10:00 are settled; ETH's own newest event decides for ETH."""
    mongo = {
        ("file", "BTC", "1h", 8 * HOUR): {"last_event_ms": 8 * HOUR + 59 * 60_000},
        ("file", "BTC", "1h", 9 * HOUR): {"last_event_ms": 9 * HOUR + 59 * 60_000},
        ("file", "BTC", "1h", 10 * HOUR): {"last_event_ms": 10 * HOUR + 30 * 60_000},
        ("file", "ETH", "1h", 8 * HOUR): {"last_event_ms": 8 * HOUR + 40 * 60_000},
    }
    influx = {
        ("file", "ETH", "5m", 8 * HOUR + 40 * 60_000): {"last_event_ms": 8 * HOUR + 44 * 60_000}
    }
    newest = newest_events(mongo, influx)
    assert newest == {
        ("file", "BTC"): 10 * HOUR + 30 * 60_000,
        ("file", "ETH"): 8 * HOUR + 44 * 60_000,
    }
    assert sorted(settled(mongo, newest, 30 * 60_000)) == [
        ("file", "BTC", "1h", 8 * HOUR),
        ("file", "BTC", "1h", 9 * HOUR),
    ]
    assert settled(influx, newest, 0) == {}  # ends 08:45, after ETH's newest event


def test_the_checks_trade_reference_equals_the_tests_resampling() -> None:
    frame = generated_frame(generate_trades(["BTCUSDT", "ETHUSDT"], 1_735_689_600_000, 600, 9))
    trades = [
        Trade(r.exchange, r.symbol, r.trade_id, r.time_ms, r.price, r.qty, r.side)
        for r in frame.itertuples()
    ]
    reference = reference_trade_aggregates(trades + trades[:50], ["1m"])  # copies count once
    expected = resample_trades(frame, 60_000)
    assert len(reference) == len(expected)
    for row in expected.itertuples():
        values = reference[(row.exchange, row.symbol, "1m", row.start)]
        assert values["trades"] == values["rows"] == row.trades
        for name in ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume"):
            assert values[name] == pytest.approx(getattr(row, name), rel=1e-12)
        assert values["vwap"] == pytest.approx(row.quote_volume / row.volume, rel=1e-12)
