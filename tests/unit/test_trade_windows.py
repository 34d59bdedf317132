"""The driver's part of candles from trades (spark_jobs/trade_windows.py) over many micro-batches:
every window's last version equals an independent pandas resampling of the distinct trades, quiet
minutes have no candle, late seconds go to the ledger and still count where their windows are
open, a second touched again after the dedupe horizon is recorded, and the state survives a
save and a load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crypto_pipeline.formats.late_ledger import LATE, REDELIVERED
from crypto_pipeline.formats.trade_message import Trade
from crypto_pipeline.replay.trade_generator import generate_trades
from spark_jobs.open_windows import WindowLength
from spark_jobs.trade_seconds import second_partials
from spark_jobs.trade_windows import (
    PARTIAL_NAMES,
    TradeState,
    TradeStateStore,
    TradeStep,
    advance_trades,
)
from tests.expected_trade_candles import generated_frame, resample_trades
from tests.unit.test_trade_seconds import FUTURE_MS, LINEAGE, T0, records

LENGTHS = (WindowLength("1s", 1_000), WindowLength("1m", 60_000), WindowLength("5m", 300_000))
HOUR_MS = 3_600_000
HORIZON_MS = 600_000


def partials_of(trades: pd.DataFrame) -> pa.Table:
    """What the executors hand the driver for these trades (one task)."""
    values = [
        Trade(r.exchange, r.symbol, r.trade_id, r.time_ms, r.price, r.qty, r.side).to_json(
            LINEAGE, line
        )
        for line, r in enumerate(trades.itertuples())
    ]
    output = second_partials(records(values), FUTURE_MS)
    return output.filter(pc.equal(output.column("kind"), "partial")).select(PARTIAL_NAMES)


def run_batches(
    batches: list[pd.DataFrame], delay_ms: int, store: TradeStateStore | None = None
) -> tuple[pd.DataFrame, list[TradeStep]]:
    """Every batch through the step (each planned a second after the last); the last version
    of every window emitted."""
    state, steps = TradeState.empty(), []
    for batch_id, batch in enumerate(batches):
        if store is not None:
            state = store.load(batch_id)
        step = advance_trades(
            state, partials_of(batch), LENGTHS, delay_ms, HORIZON_MS, T0 + batch_id * 1000
        )
        if store is not None:
            store.save(batch_id, step.state)
        state = step.state
        steps.append(step)
    emitted = pd.concat([step.windows for step in steps], ignore_index=True)
    last = emitted.drop_duplicates(["symbol", "window", "window_start_ms"], keep="last")
    return last, steps


def expected(trades: pd.DataFrame, length: WindowLength) -> pd.DataFrame:
    reference = resample_trades(trades, length.size_ms)
    return pd.DataFrame(
        {
            "symbol": reference.exchange + ":" + reference.symbol,
            "window_start_ms": reference.start,
            **{
                name: reference[name]
                for name in ("open", "high", "low", "close", "volume", "quote_volume", "trades")
            },
            # VWAP and rows from the reference's own sums and counts.
            "vwap": reference.quote_volume / reference.volume,
            "rows": reference.trades,
            "first_event_ms": reference.first_ms,
            "last_event_ms": reference.last_ms,
            "taker_buy_volume": reference.taker_buy_volume,
            "taker_sell_volume": reference.taker_sell_volume,
        }
    )


def assert_windows_equal(emitted: pd.DataFrame, trades: pd.DataFrame) -> None:
    for length in LENGTHS:
        reference = expected(trades, length)
        actual = (
            emitted[emitted.window == length.label][list(reference.columns)]
            .sort_values(["symbol", "window_start_ms"])
            .reset_index(drop=True)
        )
        pd.testing.assert_frame_equal(actual, reference, check_dtype=False, rtol=1e-9)


def quiet_trades() -> pd.DataFrame:
    """Two symbols over 20 minutes, with minutes 5-7 and 12 of one symbol without trades."""
    generated = generate_trades(["BTCUSDT", "ETHUSDT"], T0, 1_200, seed=21)
    trades = generated_frame(generated, np.where(generated.symbol == "ETHUSDT", "okx", "file"))
    minute = (trades.time_ms - T0) // 60_000
    quiet = (trades.symbol == "BTCUSDT") & (minute.between(5, 7) | (minute == 12))
    return trades[~quiet].reset_index(drop=True)


def test_windows_over_many_batches_equal_the_resampling_and_quiet_minutes_have_none(
    tmp_path: Path,
) -> None:
    trades = quiet_trades()
    # Ten batches in time order, each shuffled; a tenth of the trades twice in one batch.
    order = trades.assign(batch=(trades.time_ms - T0) // 120_000)
    batches = [
        pd.concat([part, part.iloc[::10]]).sample(frac=1.0, random_state=batch)
        for batch, part in order.groupby("batch")
    ]
    emitted, steps = run_batches(batches, HOUR_MS, TradeStateStore(tmp_path / "state"))

    assert_windows_equal(emitted, trades)
    btc_minutes = emitted[(emitted.window == "1m") & (emitted.symbol == "file:BTCUSDT")]
    starts = set((btc_minutes.window_start_ms - T0) // 60_000)
    assert starts == set(range(20)) - {5, 6, 7, 12}  # no candle for a quiet minute
    assert not any(step.ledger for step in steps)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "8.arrow",
        "8.ids.arrow",
        "9.arrow",
        "9.ids.arrow",
    ]


def test_a_second_split_over_batches_merges() -> None:
    trades = quiet_trades()
    halves = [trades.iloc[0::2], trades.iloc[1::2]]  # every second's trades in two batches
    emitted, _ = run_batches(halves, HOUR_MS)
    assert_windows_equal(emitted, trades)  # VWAP and rows included


def test_late_seconds_go_to_the_ledger_and_still_count_in_open_windows() -> None:
    trades = quiet_trades()
    minute = (trades.time_ms - T0) // 60_000
    late = trades[(trades.symbol == "ETHUSDT") & (minute == 3)]
    on_time = trades.drop(late.index)
    # A 90 s delay: minute 3 is closed for 1s and 1m windows once minute 19 has been seen; its 5m
    # window (minutes 0-4) too. The late trades come in a last batch.
    emitted, steps = run_batches([on_time, late], 90_000)

    entries = steps[1].ledger
    assert [(e.series, e.kind, e.rows) for e in entries] == [("okx:ETHUSDT", LATE, len(late))]
    assert (entries[0].first_event_ms, entries[0].last_event_ms) == (
        late.time_ms.min(),
        late.time_ms.max(),
    )
    assert steps[1].windows.empty  # every window of minute 3 was closed: none emitted again
    assert_windows_equal(emitted, on_time)


def test_late_seconds_count_in_a_longer_window_still_open() -> None:
    trades = quiet_trades()
    minute = (trades.time_ms - T0) // 60_000
    late = trades[(trades.symbol == "ETHUSDT") & (minute == 16)]
    # Minute 16 is closed for 1s and 1m (delay 90 s, newest 19:59) but its 5m window (15-19) is
    # open: the late trades count there, and only there.
    emitted, steps = run_batches([trades.drop(late.index), late], 90_000)

    assert [e.kind for e in steps[1].ledger] == [LATE]
    assert set(steps[1].windows.window) == {"5m"}
    five = emitted[emitted.window == "5m"]
    reference = expected(trades, LENGTHS[2])
    actual = five[list(reference.columns)].sort_values(["symbol", "window_start_ms"])
    pd.testing.assert_frame_equal(
        actual.reset_index(drop=True), reference, check_dtype=False, rtol=1e-9
    )


def test_a_second_touched_again_after_the_horizon_is_recorded_as_redelivered() -> None:
    first = pd.DataFrame(
        {
            "exchange": "okx",
            "symbol": "X",
            "trade_id": ["1", "2"],
            "time_ms": [T0, T0 + 5],
            "price": [10.0, 11.0],
            "qty": [1.0, 2.0],
            "side": ["buy", "sell"],
        }
    )
    state = advance_trades(
        TradeState.empty(), partials_of(first.iloc[:1]), LENGTHS, HOUR_MS, HORIZON_MS, T0
    ).state
    soon = advance_trades(
        state, partials_of(first.iloc[1:]), LENGTHS, HOUR_MS, HORIZON_MS, T0 + HORIZON_MS
    )
    later = advance_trades(
        state, partials_of(first.iloc[1:]), LENGTHS, HOUR_MS, HORIZON_MS, T0 + HORIZON_MS + 1
    )

    assert soon.ledger == []
    assert [(e.series, e.kind, e.rows, e.first_event_ms) for e in later.ledger] == [
        ("okx:X", REDELIVERED, 1, T0 + 5)
    ]
    # Still counted: a recount, not a loss, and the ledger says which windows to recompute.
    assert later.windows[later.windows.window == "1s"].trades.tolist() == [2]
