"""The executors' step of candles from trades (spark_jobs/trade_seconds.py) on Arrow records as
Spark hands them over: partials equal an independent pandas resampling of the generated trades,
duplicates count once, and bad records become dead letters with the shared rules' reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crypto_pipeline import candle_rules as rules
from crypto_pipeline.formats.candle_message import file_lineage
from crypto_pipeline.formats.trade_message import Trade
from crypto_pipeline.replay.input_files import read_rows
from crypto_pipeline.replay.producer import ReplayOptions, beyond_clock
from crypto_pipeline.replay.trade_generator import generate_trades
from spark_jobs.trade_records import NOT_A_TRADE
from spark_jobs.trade_seconds import (
    OUTPUT,
    checked_trades,
    merge_partials,
    second_partials,
    task_partials,
)
from tests.expected_trade_candles import generated_frame, resample_trades

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
NOW_MS = T0 + 86_400_000  # when the records were produced
FUTURE_MS = 300_000
LINEAGE = file_lineage(Path("trades.csv"), "0123456789abcdef")


def records(values: list[bytes]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "value": pa.array(values, pa.binary()),
            "partition": pa.array([0] * len(values), pa.int32()),
            "offset": pa.array(range(len(values)), pa.int64()),
            "timestamp": pa.array([NOW_MS] * len(values), pa.timestamp("ms")),
        }
    )


def test_partials_equal_a_pandas_resampling_and_duplicates_count_once() -> None:
    generated = generate_trades(["BTCUSDT", "ETHUSDT", "ABCUSDT"], T0, 600, seed=4)
    trades = generated_frame(generated, np.where(np.arange(len(generated)) % 7 == 0, "okx", "file"))
    rng = np.random.default_rng(1)
    copies = trades.iloc[rng.choice(len(trades), size=len(trades) // 10)]
    shuffled = pd.concat([trades, copies]).sample(frac=1.0, random_state=2)
    values = [
        Trade(r.exchange, r.symbol, r.trade_id, r.time_ms, r.price, r.qty, r.side).to_json(
            LINEAGE, line
        )
        for line, r in enumerate(shuffled.itertuples())
    ]

    output = second_partials(records(values), FUTURE_MS).to_pandas()

    assert set(output.kind) == {"partial"}
    actual = output.drop(columns=["kind", "raw", "reason", "partition", "offset"])
    actual = actual.sort_values(["exchange", "symbol", "second_ms"]).reset_index(drop=True)
    expected = resample_trades(trades, 1000).rename(columns={"start": "second_ms"})
    assert actual.trades.sum() == len(trades)
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-12)


def test_ids_that_are_not_numbers_order_by_length_then_text() -> None:
    trades = [
        Trade("bybit", "X", "b1", T0, 3.0, 1.0, "buy"),
        Trade("bybit", "X", "a10", T0, 5.0, 1.0, "sell"),
        Trade("bybit", "X", "a2", T0, 4.0, 1.0, None),
        Trade("bybit", "X", "007", T0 + 1, 6.0, 1.0, None),
        Trade("bybit", "X", "7", T0 + 1, 7.0, 1.0, None),
    ]
    output = second_partials(records([t.to_json(LINEAGE, 1) for t in trades]), FUTURE_MS)
    [row] = output.to_pylist()
    assert (row["open"], row["first_id"], row["close"], row["last_id"]) == (4.0, "a2", 6.0, "007")
    assert (row["trades"], row["taker_buy_volume"], row["taker_sell_volume"]) == (5, 1.0, 1.0)


def test_bad_records_are_dead_letters_with_reasons_and_the_rest_is_counted() -> None:
    good = Trade("okx", "X", "1", T0, 2.0, 3.0, "buy").to_json(LINEAGE, 1)
    bad = {
        b"garbage{": NOT_A_TRADE,
        b"[1, 2]": NOT_A_TRADE,
        b'{"time_ms":1735689600000,"symbol":"X","trade_id":"2","price":"2","qty":1}': (
            "missing or mistyped price"
        ),
        good.replace(b'"price":2.0', b'"price":-2.0'): "price is not positive",
        good.replace(b'"qty":3.0', b'"qty":1e300'): "quantity is beyond 1e15 in magnitude",
        good.replace(b'"symbol":"X"', b'"symbol":"X Y"'): rules.BAD_SYMBOL,
        good.replace(b'"trade_id":"1"', b'"trade_id":"1:2"'): rules.BAD_TRADE_ID,
        good.replace(b'"side":"buy"', b'"side":"long"'): rules.BAD_SIDE,
        good.replace(b'"exchange":"okx"', b'"exchange":"OKX!"'): rules.BAD_EXCHANGE,
        good.replace(b"1735689600000", str(NOW_MS + FUTURE_MS + 1).encode()): (
            rules.FUTURE_EVENT_TIME
        ),
        good.replace(b"1735689600000", b"12"): rules.EVENT_TIME_OUT_OF_RANGE,
    }
    values = [good, *bad]

    output = second_partials(records(values), FUTURE_MS).to_pylist()

    [partial] = [row for row in output if row["kind"] == "partial"]
    assert (partial["symbol"], partial["trades"], partial["volume"]) == ("X", 1, 3.0)
    dead = sorted(
        (row["offset"], row["raw"], row["reason"]) for row in output if row["kind"] == "dead"
    )
    assert dead == [
        (offset, raw.decode(), reason) for offset, (raw, reason) in enumerate(bad.items(), start=1)
    ]


@pytest.mark.parametrize("sizes", [[], [0], [3, 0, 2]])
def test_the_task_function_reads_every_batch_spark_hands_over(sizes: list[int]) -> None:
    values = [
        Trade("okx", "X", str(n), T0 + n, 1.0, 1.0, None).to_json(LINEAGE, n) for n in range(5)
    ]
    batches, start = [], 0
    for size in sizes:
        batches.append(records(values[start : start + size]))
        start += size
    output = [batch for batch in task_partials(FUTURE_MS)(iter(batches))]
    trades = sum(row["trades"] for batch in output for row in batch.to_pylist())
    assert trades == sum(sizes)
    assert all(batch.schema == OUTPUT for batch in output)


@pytest.mark.parametrize("window_ms", [1000, 60_000, 300_000, 3_600_000])
def test_partials_of_many_tasks_merge_into_the_windows_of_the_whole(window_ms: int) -> None:
    """Trades split over three tasks (as over three Kafka partitions), each task's partials
    merged: the windows equal a pandas resampling of all the trades."""
    trades = generated_frame(generate_trades(["BTCUSDT", "ETHUSDT"], T0, 900, seed=6))
    tasks = []
    for part in range(3):
        mine = trades[np.arange(len(trades)) % 3 == part]
        values = [
            Trade(r.exchange, r.symbol, r.trade_id, r.time_ms, r.price, r.qty, r.side).to_json(
                LINEAGE, 1
            )
            for r in mine.itertuples()
        ]
        tasks.append(second_partials(records(values), FUTURE_MS))
    partials = pa.concat_tables(tasks).drop_columns(
        ["kind", "raw", "reason", "partition", "offset"]
    )

    actual = merge_partials(partials, window_ms).to_pandas()

    windows = resample_trades(trades, window_ms).rename(columns={"start": "second_ms"})
    actual = actual.sort_values(["exchange", "symbol", "second_ms"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(actual, windows, check_dtype=False, rtol=1e-9)


def test_records_that_are_not_one_json_line_never_shift_the_others() -> None:
    """A value holding two lines, two objects, nothing, a null record or bytes that are not
    UTF-8 among good ones: Arrow's block read would misalign rows, so the block is read line by
    line, and every record keeps its own offset and reason."""
    good = [
        Trade("okx", "X", str(n), T0 + n, 1.0 + n, 1.0, None).to_json(LINEAGE, n) for n in range(4)
    ]
    values: list[bytes | None] = [
        good[0] + b"\n" + good[1],
        None,
        b"",
        good[2] + good[3],
        good[3],
        b'\xff\xfe{"a"',
        good[2].replace(b"1735689600002", b"1" + b"0" * 400),
        good[1].replace(b'"price":2.0', b'"price":1' + b"0" * 400),
    ]
    batch = records([b"" for _ in values])
    batch = batch.set_column(0, "value", pa.array(values, pa.binary()))

    output = second_partials(batch, FUTURE_MS).to_pylist()

    [partial] = [row for row in output if row["kind"] == "partial"]
    assert (partial["trades"], partial["open"]) == (1, 4.0)  # good[3] alone
    assert sorted((row["offset"], row["reason"]) for row in output if row["kind"] == "dead") == [
        (0, NOT_A_TRADE),
        (1, NOT_A_TRADE),
        (2, NOT_A_TRADE),
        (3, NOT_A_TRADE),
        (5, NOT_A_TRADE),
        (6, "missing or mistyped time_ms"),
        (7, "price is NaN or infinite"),
    ]


def test_the_replay_and_spark_give_a_bad_trade_the_same_reason(tmp_path: Path) -> None:
    """Trades that break one rule, or two, as a CSV line for the replay and as a message for
    Spark: the same first reason from both stages. (A file's time outside the range is not among
    them: the replay reads it in any epoch unit and says that none fits.)"""
    line = {"time_ms": T0, "symbol": "X", "trade_id": "1", "price": 2.0, "qty": 3.0}
    broken: list[dict[str, object]] = [
        {"symbol": "X Y"},
        {"trade_id": "1:2"},
        {"price": -2.0},
        {"price": float("inf")},
        {"qty": 1e300},
        {"exchange": "OKX!"},
        {"side": "long"},
        {"time_ms": NOW_MS + FUTURE_MS + 1},
        {"symbol": "X Y", "side": "long"},
        {"trade_id": "1:2", "price": -2.0},
        {"exchange": "OKX!", "time_ms": NOW_MS + FUTURE_MS + 1},
        {"side": "long", "qty": -1.0},
    ]
    rows = [{**line, "exchange": "okx", "side": "buy", **change} for change in broken]
    path = tmp_path / "t.csv"
    columns = ["time_ms", "symbol", "trade_id", "price", "qty", "side", "exchange"]
    path.write_text(
        ",".join(columns)
        + "\n"
        + "".join(",".join(str(row[name]) for name in columns) + "\n" for row in rows)
    )
    options = ReplayOptions(path=path, topic="t")
    replay_reasons = [beyond_clock(options, parsed, NOW_MS).reason for parsed in read_rows(path)]
    values = [
        json.dumps({**row, "qty": row["qty"]}, allow_nan=True).replace("Infinity", "1e999").encode()
        for row in rows
    ]
    spark_rows = second_partials(records(values), FUTURE_MS).to_pylist()
    spark_reasons = [row["reason"] for row in sorted(spark_rows, key=lambda row: row["offset"])]
    assert len(spark_reasons) == len(rows)
    assert [reason and reason.split(": ")[0] for reason in replay_reasons] == spark_reasons


def test_text_ids_of_many_tasks_merge_by_time_then_length_then_text() -> None:
    """Ids that are no numbers (Bybit's UUIDs, here hex of varying length), many trades in one
    millisecond, spread over three tasks: each second's open and close are the first and last by
    (time, id length, id), as a pandas sort of all the trades puts them."""
    rng = np.random.default_rng(3)
    count = 3000
    trades = pd.DataFrame(
        {
            "trade_id": [f"{rng.integers(1 << 40):x}"[: rng.integers(4, 10)] for _ in range(count)],
            "time_ms": T0 + rng.integers(0, 5000, count) // 50 * 50,  # many ties
            "price": rng.uniform(1, 2, count).round(4),
        }
    ).drop_duplicates("trade_id")
    values = [
        Trade("bybit", "X", r.trade_id, r.time_ms, r.price, 1.0, None).to_json(LINEAGE, 1)
        for r in trades.itertuples()
    ]
    tasks = [second_partials(records(values[part::3]), FUTURE_MS) for part in range(3)]
    partials = pa.concat_tables(tasks)

    merged = merge_partials(partials, 1000).to_pandas().sort_values("second_ms")

    ordered = trades.assign(
        second_ms=trades.time_ms // 1000 * 1000, length=trades.trade_id.str.len()
    ).sort_values(["time_ms", "length", "trade_id"])
    grouped = ordered.groupby("second_ms")
    assert merged.open.tolist() == grouped.price.first().tolist()
    assert merged.close.tolist() == grouped.price.last().tolist()
    assert merged.first_id.tolist() == grouped.trade_id.first().tolist()
    assert merged.trades.sum() == len(trades)


def test_copies_share_a_trade_identity_and_a_bad_record_never_shares_it() -> None:
    good = Trade("okx", "X", "7", T0, 2.0, 1.0, "buy").to_json(LINEAGE, 1)
    bad = Trade("okx", "X", "7", T0, -2.0, 1.0, "buy").to_json(LINEAGE, 2)  # same id, bad price
    checked = checked_trades(records([bad, good, good]), FUTURE_MS).to_pylist()
    assert [(row["kind"], row["copy_key"], row["reason"]) for row in checked] == [
        ("trade", "okx:X:7", None),
        ("trade", "okx:X:7", None),
        ("dead", "#0-0", "price is not positive"),
    ]
