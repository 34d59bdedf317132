"""Candles from trades: the job's second query, on `<topic>.trades`, run by `--source trades`.

Each task of a micro-batch checks its Kafka records' trades (spark_jobs/trade_seconds.py) and
reduces them to one-second partials per series, copies within the task counted once, with each
series' ids (spark_jobs/trade_dedupe.py). The driver drops what each series counted within the
dedupe horizon or in another task (by the identity `exchange:SYMBOL:trade_id`, read from the
message) and merges the partials of every task into its state and into every window they touch
(spark_jobs/trade_windows.py). The windows go to both sinks apart from the
kline-built ones (`<collection>_from_trades`, `<measurement>_from_trades`), with the dead letters
of `<topic>.trades.dlq`, the late ledger and the batch metrics written as the candle job's
(spark_jobs/batches.py).

The horizon is processing time, so that no trade is ever dropped for being old: it runs on when
the batch was planned, not on the trades' times (an event-time watermark would silently drop an
older file's trades). The query has no stateful Spark operator and no shuffle: the state is the
driver's file. A shuffle by series before the Python stage measured 12-15 % slower
(bench/results.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from crypto_pipeline.formats import dead_letter
from crypto_pipeline.formats.late_ledger import LATE
from crypto_pipeline.formats.window_values import SERIES_SEPARATOR
from crypto_pipeline.windows import interval_ms
from spark_jobs.batches import (
    BatchTotals,
    LateRange,
    batch_time_ms,
    sink_writes,
    write_batch_metrics,
    write_riding_out_outages,
)
from spark_jobs.interface.config import JobConfig
from spark_jobs.open_windows import window_lengths
from spark_jobs.session import read_source, start_with_trigger
from spark_jobs.trade_dedupe import (
    DEDUPED_DDL,
    IdsBySeries,
    drop_counted,
    task_partials_and_ids,
)
from spark_jobs.trade_seconds import CHECKED_DDL, task_checked_trades
from spark_jobs.trade_windows import PARTIAL_NAMES, TradeStateStore, advance_trades

log = logging.getLogger("spark_jobs")
TRADES_QUERY = "trades"


RECORD_COLUMNS = ("value", "partition", "offset", "timestamp")
# Each Kafka partition one task: 1.2 times the rate of partitions split into two tasks per core,
# in runs alternated on the same machine (bench/results.md).
TASKS_PER_CORE = 1


def checked_records(records: DataFrame, config: JobConfig) -> DataFrame:
    """The trades topic's records (Spark's Kafka source) -> valid trades and dead letters
    (trade_seconds.CHECKED), each with the key its copies share."""
    return records.select(*RECORD_COLUMNS).mapInArrow(
        task_checked_trades(config.future_tolerance_ms), CHECKED_DDL
    )


def start_trade_query(
    spark: SparkSession, config: JobConfig, checkpoint: Path, writer: TradeBatchWriter
) -> StreamingQuery:
    query = (
        read_source(spark, config, TASKS_PER_CORE)
        .writeStream.queryName(TRADES_QUERY)
        .option("checkpointLocation", str(checkpoint / TRADES_QUERY))
        .foreachBatch(writer)
    )
    return start_with_trigger(query, config)


def unique_partials(
    batch: DataFrame, config: JobConfig, counted: IdsBySeries, now_ms: int
) -> tuple[pa.Table, pa.Table, IdsBySeries]:
    """A micro-batch of the trades topic's records -> its partials (PARTIAL_FIELDS) without the
    trades counted within the horizon or in another task, its dead-letter rows, and the ids
    counted after it."""
    task = task_partials_and_ids(config.future_tolerance_ms)
    output = batch.select(*RECORD_COLUMNS).mapInArrow(task, DEDUPED_DDL).toArrow()
    kind = output.column("kind")

    def trades_of(series: list[str]) -> pa.Table:
        keys = F.concat_ws(SERIES_SEPARATOR, "exchange", "symbol")
        checked = checked_records(batch, config)
        return checked.where((F.col("kind") == "trade") & keys.isin(series)).toArrow()

    partials, ids = drop_counted(
        output.filter(pc.equal(kind, "partial")).select(PARTIAL_NAMES),
        output.filter(pc.equal(kind, "ids")),
        counted,
        now_ms,
        interval_ms(config.dedupe_horizon),
        trades_of,
    )
    return partials, output.filter(pc.equal(kind, "dead")), ids


class TradeBatchWriter:
    """Called by Spark for every micro-batch of partials and dead letters."""

    def __init__(
        self,
        config: JobConfig,
        state_dir: Path,
        on_batch: Callable[[int, BatchTotals], None],
        offsets_dir: Path,
        checkpoint_id: str,
    ) -> None:
        self.config = config
        self.store = TradeStateStore(state_dir)
        self.lengths = window_lengths(config.windows)
        self.on_batch = on_batch
        self.offsets_dir = offsets_dir
        self.checkpoint_id = checkpoint_id
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sink")

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        config, totals = self.config, BatchTotals()
        started = time.monotonic()
        planned_ms = batch_time_ms(self.offsets_dir, batch_id)
        state = self.store.load(batch_id)
        partials, dead, ids = unique_partials(batch, config, state.ids, planned_ms)
        totals.seconds["compute"] = time.monotonic() - started

        started = time.monotonic()
        step = advance_trades(
            replace(state, ids=ids),
            partials,
            self.lengths,
            interval_ms(config.watermark),
            interval_ms(config.dedupe_horizon),
            planned_ms,
        )
        totals.state_bytes = self.store.save(batch_id, step.state)
        totals.state_symbols, totals.state_candles = len(step.state.marks), len(step.state.seconds)
        totals.seconds["windows"] = time.monotonic() - started

        letters = dead_letters(dead, config)
        totals.windows, totals.dead_letters = len(step.windows), len(letters)
        totals.late = {
            entry.series: LateRange(entry.rows, entry.first_event_ms, entry.last_event_ms)
            for entry in step.ledger
            if entry.kind == LATE
        }
        # No write lease here: the frontiers are raised with the writes (the candles API's).
        writes = sink_writes(
            config, step.windows, letters, step.ledger, batch_id, self.checkpoint_id, frontiers=True
        )
        if "influx" in config.sinks:
            counts = {
                "windows": totals.windows,
                "dead_letters": totals.dead_letters,
                "late_rows": totals.late_rows,
                "redelivered_rows": sum(e.rows for e in step.ledger if e.kind != LATE),
            }
            writes["batch_metrics"] = lambda: write_batch_metrics(
                TRADES_QUERY, batch_id, counts, planned_ms, config
            )
        totals.seconds.update(
            write_riding_out_outages(self.pool, writes, config.sink_outage_patience_s)
        )
        self.on_batch(batch_id, totals)
        if totals.windows or totals.dead_letters or step.ledger:
            log.info(
                "trades batch %d: read in %.2f s, windows in %.2f s; %d windows, "
                "%d dead letters, %d ledger entries",
                batch_id,
                totals.seconds["compute"],
                totals.seconds["windows"],
                totals.windows,
                totals.dead_letters,
                len(step.ledger),
            )


def dead_letters(dead: pa.Table, config: JobConfig) -> pd.DataFrame:
    """The step's dead-letter rows as the dead-letter topic's keys and values."""
    pairs = [
        dead_letter.for_record(
            row["raw"], row["reason"], config.kafka.topic, row["partition"], row["offset"]
        )
        for row in dead.select(["raw", "reason", "partition", "offset"]).to_pylist()
    ]
    return pd.DataFrame(pairs, columns=["dead_letter_key", "dead_letter_value"])
