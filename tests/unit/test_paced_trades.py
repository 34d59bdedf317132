"""The benchmark producer's directly formatted trades (crypto_cli/bench/paced_trades.py) are the
live feed's messages, and pass the trade rules the job applies."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from crypto_cli.bench.paced_trades import BENCH_CONNECTION, BENCH_EXCHANGE, trade_value
from crypto_cli.bench.trades_live_bench import latencies, weighted_percentile
from crypto_pipeline.formats.trade_message import Trade
from spark_jobs.trade_seconds import checked_trades

T0 = 1_735_689_600_000


def test_a_formatted_trade_is_the_live_feeds_message() -> None:
    for trade_id, side in ((7, "buy"), (9, "sell")):
        value = trade_value("BTCUSDT", trade_id, T0, 101.25, 0.003)
        reference = Trade(BENCH_EXCHANGE, "BTCUSDT", str(trade_id), T0, 101.25, 0.003, side)
        assert json.loads(value) == json.loads(reference.to_live_json(BENCH_CONNECTION, T0))
    records = pa.RecordBatch.from_pydict(
        {
            "value": pa.array(
                [trade_value("ETHUSDT", i, T0, 100.0 + i / 100, 0.001) for i in range(50)]
            ),
            "partition": pa.array([0] * 50, pa.int32()),
            "offset": pa.array(range(50), pa.int64()),
            "timestamp": pa.array([T0] * 50, pa.timestamp("ms")),
        }
    )
    checked = checked_trades(records, 300_000)
    assert checked.column("kind").to_pylist() == ["trade"] * 50


def test_latencies_are_weighed_by_the_trades_of_each_tick() -> None:
    """Three ticks after the warm-up: 3 trades shown 500 ms after they were sent, 1 after 2 s,
    and 1 never: its latency is infinite, not left out."""
    sent_at = T0 + 60_000
    ticks = np.array(
        [[T0, 1], [sent_at, 3], [sent_at + 100, 1], [sent_at + 200, 1]], dtype=np.int64
    )
    polls = [(sent_at + 500, {"X": sent_at}), (sent_at + 2_100, {"X": sent_at + 100})]
    values, weights = latencies(ticks, polls, ["X"])
    assert values.tolist() == [500, 2_000, np.inf] and weights.tolist() == [3, 1, 1]
    assert weighted_percentile(values, weights, 0.5) == 500
    assert weighted_percentile(values, weights, 0.7) == 2_000
    assert weighted_percentile(values, weights, 0.99) == np.inf
