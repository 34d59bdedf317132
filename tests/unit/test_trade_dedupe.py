"""The dedupe of trades per series (spark_jobs/trade_dedupe.py), batch after batch as the job
runs it, against a plain set of (id, when counted) kept by the test."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from crypto_pipeline.formats.candle_message import file_lineage
from crypto_pipeline.formats.trade_message import Trade
from spark_jobs.trade_dedupe import (
    CountedIds,
    drop_counted,
    ids_from_table,
    ids_table,
    task_partials_and_ids,
    uncounted,
)
from spark_jobs.trade_records import TRADE_FIELDS
from spark_jobs.trade_seconds import checked_trades
from spark_jobs.trade_windows import PARTIAL_NAMES

HORIZON_MS = 600_000
T0 = 1_735_689_600_000
FUTURE_MS = 300_000
LINEAGE = file_lineage(Path("trades.csv"), "0123456789abcdef")


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
        # Apart from the other batches' ids: touching intervals are kept as one (below).
        fresh_ids = [str(1000 + batch * 100 + i) for i in range(50)]
        old = [i for i, at in counted_at.items() if rng.random() < 0.05]
        texts = [f"uuid-{batch}-{i}" for i in range(3)] + [i for i in old if i.startswith("u")]
        ids = [*fresh_ids, *fresh_ids[:5], *old, *texts]  # copies within the batch too
        rng.shuffle(ids)

        fresh, state = uncounted(trades_with_ids(ids), state, now, HORIZON_MS)

        expected = {i for i in ids if i not in counted_at or counted_at[i] < now - HORIZON_MS}
        assert set(fresh.column("trade_id").to_pylist()) == expected
        counted_at.update(dict.fromkeys(expected, now))
        state = ids_from_table(ids_table({"binance:BTCUSDT": state}))["binance:BTCUSDT"]


def test_sequential_ids_are_one_interval_however_the_batches_cut_them() -> None:
    """Each batch holds every id of its own block but one, which comes in the next batch (a
    partition read behind): the ids touch, so one interval with the newest time."""
    state = CountedIds.empty()
    for batch in range(100):
        ids = [str(batch * 1000 + i) for i in range(1000) if i != 500]
        ids += [str((batch - 1) * 1000 + 500)] if batch else []
        _, state = uncounted(trades_with_ids(ids), state, T0 + batch * 30_000, HORIZON_MS)
    newest = T0 + 99 * 30_000
    # 99,500 comes in the batch after the last.
    assert state.intervals.tolist() == [(0, 99_499, newest), (99_501, 99_999, newest)]


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


def records(trades: list[tuple[str, str, int]]) -> pa.RecordBatch:
    """(symbol, id, time) -> Kafka records as Spark hands them over; a trade's quantity is its
    id's length, so that a copy counted twice changes the volume."""
    values = [
        Trade("binance", symbol, trade_id, time_ms, 100.0, float(len(trade_id)), "buy").to_json(
            LINEAGE, line
        )
        for line, (symbol, trade_id, time_ms) in enumerate(trades)
    ]
    return pa.RecordBatch.from_pydict(
        {
            "value": pa.array(values, pa.binary()),
            "partition": pa.array([0] * len(values), pa.int32()),
            "offset": pa.array(range(len(values)), pa.int64()),
            "timestamp": pa.array([T0 + 86_400_000] * len(values), pa.timestamp("ms")),
        }
    )


def test_the_executors_partials_and_ids_leave_each_trade_counted_once_over_batches() -> None:
    """Two series, sequential and text ids, copies within a batch and from earlier batches: the
    partials' trades and volume per (series, second) equal the distinct trades not counted
    within the horizon, and the batch is read again only when it holds an earlier batch's copy."""
    rng = np.random.default_rng(11)
    counted_at: dict[tuple[str, str], int] = {}
    ids: dict[str, CountedIds] = {}
    now, next_id, reread = T0, 0, []
    for batch in range(30):
        now += 60_000
        new = [
            (symbol, str(next_id + i) if symbol == "BTCUSDT" else f"u-{next_id + i}", now + i)
            for symbol in ("BTCUSDT", "ETHUSDT")
            for i in range(40)
        ]
        next_id += 41  # apart, so that each is forgotten after the horizon (no touching)
        copies = [trade for trade in new if rng.random() < 0.1]
        earlier = batch % 4 == 3  # copies of earlier batches' trades, some past the horizon
        history = list(counted_at)
        older = [(s, i, now - 1_000) for s, i in history[-60::7] + history[:400:37]]
        trades = new + copies + (older if earlier else [])
        batch_records = records([trades[i] for i in rng.permutation(len(trades))])

        output = pa.Table.from_batches(
            list(task_partials_and_ids(FUTURE_MS)(iter([batch_records])))
        )
        kind = output.column("kind")

        def trades_of(
            series: list[str], batch_records: pa.RecordBatch = batch_records, batch: int = batch
        ) -> pa.Table:
            reread.append(batch)
            rows = checked_trades(batch_records, FUTURE_MS)
            keys = pc.binary_join_element_wise(rows["exchange"], rows["symbol"], ":")
            return rows.filter(pc.is_in(keys, pa.array(series)))

        partials, ids = drop_counted(
            output.filter(pc.equal(kind, "partial")).select(PARTIAL_NAMES),
            output.filter(pc.equal(kind, "ids")),
            ids,
            now,
            HORIZON_MS,
            trades_of,
        )

        expected: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0.0])
        for symbol, trade_id, time_ms in dict.fromkeys(trades):
            at = counted_at.get((symbol, trade_id))
            if at is None or at < now - HORIZON_MS:
                counted_at[(symbol, trade_id)] = now
                expected[(symbol, time_ms - time_ms % 1000)][0] += 1
                expected[(symbol, time_ms - time_ms % 1000)][1] += len(trade_id)
        got = {
            (row["symbol"], row["second_ms"]): [row["trades"], row["volume"]]
            for row in partials.to_pylist()
        }
        assert got == expected
        assert (batch in reread) == earlier


@pytest.mark.parametrize("id_prefix", ["", "u"])
def test_a_series_in_two_tasks_is_read_again_and_its_copies_count_once(id_prefix: str) -> None:
    """A copy under another Kafka key can be in another task than its trade (numeric ids and
    ids that are not numbers)."""
    trades = [("BTCUSDT", f"{id_prefix}{100 + i}", T0 + i * 300) for i in range(20)]
    tasks = [records(trades), records(trades[3:5])]  # the copies in another task
    output = pa.concat_tables(
        pa.Table.from_batches(list(task_partials_and_ids(FUTURE_MS)(iter([task]))))
        for task in tasks
    )
    kind = output.column("kind")
    partials, ids = drop_counted(
        output.filter(pc.equal(kind, "partial")).select(PARTIAL_NAMES),
        output.filter(pc.equal(kind, "ids")),
        {},
        T0,
        HORIZON_MS,
        lambda series: pa.concat_tables(checked_trades(task, FUTURE_MS) for task in tasks),
    )
    assert pc.sum(partials.column("trades")).as_py() == 20
    assert pc.sum(partials.column("volume")).as_py() == sum(len(i) for _, i, _ in trades)
    counted = ids["binance:BTCUSDT"]
    if id_prefix:
        assert sorted(counted.texts) == sorted(i for _, i, _ in trades)
    else:
        assert counted.intervals[["low", "high"]].tolist() == [(100, 119)]
