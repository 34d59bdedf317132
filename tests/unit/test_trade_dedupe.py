"""The executors' dedupe of trades per series (spark_jobs/trade_dedupe.py), batch after batch as
Spark calls it, against a plain set of (id, when counted) kept by the test."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from spark_jobs.trade_dedupe import CountedIds, uncounted
from spark_jobs.trade_records import TRADE_FIELDS

HORIZON_MS = 600_000
T0 = 1_735_689_600_000


def trades_with_ids(ids: list[str]) -> pa.Table:
    count = len(ids)
    return pa.table(
        {
            "time_ms": [T0 + index for index in range(count)],
            "symbol": ["BTCUSDT"] * count,
            "trade_id": ids,
            "price": [100.0] * count,
            "qty": [1.0] * count,
            "side": ["buy"] * count,
            "exchange": ["binance"] * count,
        },
        TRADE_FIELDS,
    )


def test_copies_within_the_horizon_are_dropped_and_forgotten_after_it() -> None:
    rng = np.random.default_rng(5)
    counted_at: dict[str, int] = {}  # the reference: id -> when it was counted
    state = CountedIds.empty()
    now = T0
    for batch in range(40):
        now += 30_000
        fresh_ids = [str(1000 + batch * 50 + i) for i in range(50)]
        old = [i for i, at in counted_at.items() if rng.random() < 0.05]
        texts = [f"uuid-{batch}-{i}" for i in range(3)] + [i for i in old if i.startswith("u")]
        ids = [*fresh_ids, *fresh_ids[:5], *old, *texts]  # copies within the batch too
        rng.shuffle(ids)

        fresh, state = uncounted(trades_with_ids(ids), state, now, HORIZON_MS)

        expected = {i for i in ids if i not in counted_at or counted_at[i] < now - HORIZON_MS}
        assert set(fresh.column("trade_id").to_pylist()) == expected
        counted_at.update(dict.fromkeys(expected, now))
        state = CountedIds.from_state(state.to_state())  # as Spark stores it between batches


def test_sequential_ids_are_kept_as_one_interval_per_batch_of_the_horizon() -> None:
    state = CountedIds.empty()
    for batch in range(100):
        ids = [str(batch * 1000 + i) for i in range(1000)]
        _, state = uncounted(trades_with_ids(ids), state, T0 + batch * 30_000, HORIZON_MS)
    assert len(state.intervals) == HORIZON_MS // 30_000 + 1
    assert (state.intervals["high"] - state.intervals["low"] == 999).all()


def test_an_id_is_known_up_to_the_horizon_and_counted_again_just_after() -> None:
    """The same boundary as the driver's `redelivered` rule (first seen before now - horizon)."""
    _, state = uncounted(trades_with_ids(["7", "b-1"]), CountedIds.empty(), T0, HORIZON_MS)
    at_horizon, _ = uncounted(trades_with_ids(["7", "b-1"]), state, T0 + HORIZON_MS, HORIZON_MS)
    assert at_horizon.num_rows == 0
    after, _ = uncounted(trades_with_ids(["7", "b-1"]), state, T0 + HORIZON_MS + 1, HORIZON_MS)
    assert after.column("trade_id").to_pylist() == ["7", "b-1"]


def test_ids_with_leading_zeros_are_not_numbers() -> None:
    """ "07" and "7" are two trades."""
    _, state = uncounted(trades_with_ids(["7"]), CountedIds.empty(), T0, HORIZON_MS)
    fresh, _ = uncounted(trades_with_ids(["07", "7"]), state, T0 + 1, HORIZON_MS)
    assert fresh.column("trade_id").to_pylist() == ["07"]
