from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime
from pathlib import Path

from crypto_pipeline.replay.generator import generate, write_csv
from crypto_pipeline.replay.input_files import read_rows

START = datetime(2025, 1, 1, tzinfo=UTC)


def test_same_seed_same_bytes_other_seed_other_prices(tmp_path: Path) -> None:
    write_csv(generate(["BTCUSDT", "ETHUSDT"], START, 1, "1m", seed=1), tmp_path / "a.csv.gz")
    write_csv(generate(["BTCUSDT", "ETHUSDT"], START, 1, "1m", seed=1), tmp_path / "b.csv.gz")
    other = generate(["BTCUSDT", "ETHUSDT"], START, 1, "1m", seed=2)
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()
    assert [c.close for c in other] != [
        c.close for c in generate(["BTCUSDT", "ETHUSDT"], START, 1, "1m", 1)
    ]


def test_candles_are_consistent_complete_and_sorted() -> None:
    candles = generate(["BTCUSDT", "SOLUSDT", "NEWCOIN"], START, 2, "1m", seed=3)
    assert len(candles) == 3 * 2 * 1440
    keys = [(c.open_time_ms, c.symbol) for c in candles]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for c in candles:
        assert c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
        assert c.volume > 0 and c.quote_volume is not None and c.quote_volume > 0
        assert c.trades is not None and c.trades >= 1
    btc = [c for c in candles if c.symbol == "BTCUSDT"]
    # Each candle opens at the previous close: a continuous random walk.
    assert all(b.open == a.close for a, b in itertools.pairwise(btc))


def test_volume_follows_the_intraday_pattern() -> None:
    candles = generate(["BTCUSDT"], START, 10, "1m", seed=4)
    by_hour: dict[int, list[float]] = {}
    for c in candles:
        by_hour.setdefault((c.open_time_ms // 3_600_000) % 24, []).append(c.volume)
    assert statistics.mean(by_hour[15]) > 2 * statistics.mean(by_hour[3])


def test_written_file_reads_back_as_the_same_candles(tmp_path: Path) -> None:
    candles = generate(["ETHUSDT"], START, 0.5, "5m", seed=5)
    write_csv(candles, tmp_path / "g.csv")
    assert [row.record for row in read_rows(tmp_path / "g.csv")] == candles
