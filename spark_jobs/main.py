"""The OHLCV streaming job: Kafka -> validated candles -> windowed aggregates -> MongoDB + InfluxDB.

Launched by Dagster, the CLI (`crypto-pipeline job`, `backfill`) and the benchmarks with a
complete command line (spark_jobs/interface: the config, the commands of each mode); options:
`python -m spark_jobs.main --help`.
`main` only wires configuration, the source, the query and its `foreachBatch`: one streaming
query that reads the topic once and computes every window length and the dead letters from it
(spark_jobs/transform.py, spark_jobs/batches.py): its checkpoint in `<checkpoint dir>/ohlcv`, the
windows' state in `<checkpoint dir>/state`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from crypto_pipeline.clients import ensure_topic
from crypto_pipeline.formats.candle_message import FILE_EXCHANGE
from crypto_pipeline.formats.window_values import SERIES_SEPARATOR, series_key
from crypto_pipeline.windows import interval_ms
from spark_jobs.backfill import run_backfill
from spark_jobs.batches import BatchWriter
from spark_jobs.interface.config import TRADES, JobConfig
from spark_jobs.interface.summary import (
    INFLUX_ASSET,
    INFLUX_TRADE_ASSET,
    MONGO_ASSET,
    MONGO_TRADE_ASSET,
    summary_line,
)
from spark_jobs.query_progress import ProgressTracker, open_reporter
from spark_jobs.session import build_spark_session, read_source, start_with_trigger
from spark_jobs.sinks import LegacyWindowKeys, prepare_sinks, refuse_legacy_keys
from spark_jobs.state_store import STATE, rename_series
from spark_jobs.trade_backfill import run_trade_backfill
from spark_jobs.trade_job import TRADES_QUERY, TradeBatchWriter, start_trade_query
from spark_jobs.transform import keyed_records, parse_messages

log = logging.getLogger("spark_jobs")


QUERY = "ohlcv"
# One streaming query per window length plus one for dead letters, before the one-pass job.
OLD_LAYOUT = re.compile(r"^(ohlcv_\d+[mhd]|dead_letters)$")


# How the state names a series (crypto_pipeline/formats/window_values.py), stamped on checkpoints.
SERIES_KEYS = "exchange:symbol"
# Where the trades job keeps the ids each series counted: its checkpoints before kept them in
# Spark's state, which this job does not read.
TRADE_IDS = "driver state"


class CheckpointMismatch(RuntimeError):
    """The checkpoint was written by a job with another layout or other windows, or another
    driver runs on it."""


# What a reset does, said where a reset is asked for.
RESET_ADVICE = (
    "stop the job and move {root} aside: a new checkpoint reads the topic again from "
    "--starting-offsets, and no window is overwritten with one computed from less input "
    "(windows whose candles the topic no longer holds keep their stored values; a window that "
    "would mix old and new input is refused and listed by the late_rows_repaired check)"
)


def check_checkpoint(config: JobConfig) -> tuple[Path, str]:
    """The query's checkpoint and its id, refusing one this job cannot continue: the old layout
    (one query per window), or other windows or watermark (its state holds the candles those
    needed). The id (made with the checkpoint) keeps the late ledger's entries of a reset
    checkpoint apart from the old ones."""
    root = Path(config.checkpoint_dir)
    reset = RESET_ADVICE.format(root=root)
    if root.is_dir() and any(OLD_LAYOUT.match(path.name) for path in root.iterdir()):
        raise CheckpointMismatch(f"{root} holds checkpoints of the previous layout; {reset}")
    stamp = root / "job.json"
    shape: dict[str, object] = {"windows": list(config.windows), "watermark": config.watermark}
    if config.source == TRADES:
        shape["trade_ids"] = TRADE_IDS
    written = json.loads(stamp.read_text()) if stamp.exists() else {}
    written_shape = {key: written[key] for key in shape if key in written}
    if written and written_shape != shape:
        raise CheckpointMismatch(f"{root} was written with {written_shape}, not {shape}; {reset}")
    if written and written.get("series") != SERIES_KEYS:
        # Written before series had an exchange: its symbols were all read from files. Names
        # already re-keyed (a start stopped half way through) are left as they are.
        renamed = rename_series(root / STATE, as_file_series)
        log.info("checkpoint %s: %d state versions re-keyed to file series", root, renamed)
    checkpoint_id = str(written.get("id") or uuid.uuid4().hex[:12])
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({**shape, "series": SERIES_KEYS, "id": checkpoint_id}))
    return root, checkpoint_id


def as_file_series(name: str) -> str:
    return name if SERIES_SEPARATOR in name else series_key(FILE_EXCHANGE, name)


def lock_checkpoint(root: Path) -> IO[str]:
    """Held for the life of the driver: a second driver on the same checkpoint is refused (two
    would write the same batches and state versions). The kernel drops it when the process dies."""
    lock = (root / "driver.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise CheckpointMismatch(
            f"{root} is in use by {holder}; one driver per checkpoint"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}")
    lock.flush()
    return lock


def start_query(
    spark: SparkSession, config: JobConfig, checkpoint: Path, writer: BatchWriter
) -> StreamingQuery:
    """The topic read once and parsed once per micro-batch; every window length and the dead
    letters from those rows, in the `foreachBatch`."""
    query = (
        keyed_records(parse_messages(read_source(spark, config), config.future_tolerance_ms))
        .writeStream.queryName(QUERY)
        .option("checkpointLocation", str(checkpoint / QUERY))
        .foreachBatch(writer)
    )
    return start_with_trigger(query, config)


def await_query(
    query: StreamingQuery, config: JobConfig, stop_requested: Callable[[], bool]
) -> None:
    """Available-now: until it has processed what was in Kafka. Continuous: until it fails (its
    exception is raised) or a stop is requested (SIGTERM/SIGINT)."""
    if not config.continuous:
        query.awaitTermination()
        return
    while not stop_requested():
        if query.awaitTermination(1):  # seconds
            break
    query.stop()
    if query.exception() is not None:
        raise RuntimeError(f"streaming query failed: {query.exception()}")


def job_session(config: JobConfig, kind: str) -> SparkSession:
    spark = build_spark_session(config, f"{kind}-{config.kafka.topic}")
    spark.sparkContext.setLogLevel("WARN")
    return spark


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one line per callback otherwise
    config = JobConfig.from_args(argv, os.environ)
    # Before Spark starts: sinks not migrated or a mismatched checkpoint are quick errors.
    if "mongo" in config.sinks:
        refuse_legacy_keys(config)
    if config.is_backfill:
        return backfill_main(config)
    Path(config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    lock = lock_checkpoint(Path(config.checkpoint_dir))  # before the state may be re-keyed
    checkpoint, checkpoint_id = check_checkpoint(config)
    reporter = open_reporter()
    spark = job_session(config, "crypto-trades" if config.source == TRADES else "crypto-ohlcv")
    status_file = Path(config.status_file) if config.status_file else None
    tracker = ProgressTracker(reporter, status_file, interval_ms(config.watermark))
    spark.streams.addListener(tracker)
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only a flag: py4j calls are not safe from inside a signal handler.
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        prepare_sinks(config)
        # Whoever produced the topic may not have created its dead-letter topic.
        ensure_topic(config.kafka.bootstrap_servers, config.kafka.dlq_topic, partitions=1)
        if config.source == TRADES:
            offsets = checkpoint / TRADES_QUERY / "offsets"
            trade_writer = TradeBatchWriter(
                config, checkpoint / STATE, tracker.record_batch, offsets, checkpoint_id
            )
            query = start_trade_query(spark, config, checkpoint, trade_writer)
        else:
            offsets = checkpoint / QUERY / "offsets"
            writer = BatchWriter(
                config, checkpoint / STATE, tracker.record_batch, offsets, checkpoint_id
            )
            query = start_query(spark, config, checkpoint, writer)
        tracker.mark_started()
        reporter.log.info(
            f"started on {config.kafka.topic} ({config.trigger}), windows "
            f"{','.join(config.windows)}; checkpoint {config.checkpoint_dir}; "
            f"MongoDB {config.mongo.redacted_uri}"
        )
        try:
            await_query(query, config, lambda: bool(stop_requested))
        except BaseException:
            tracker.mark_ended("failed")
            raise
        tracker.catch_up(query.recentProgress)
        tracker.mark_ended("stopped")
        metadata: dict[str, Any] = {
            **tracker.summary(),
            "stopped_by_signal": bool(stop_requested),
            # What the asset checks need to find this run's output and checkpoints.
            "topic": config.kafka.topic,
            "windows": list(config.windows),
            "checkpoint_dir": config.checkpoint_dir,
        }
        reporter.log.info(summary_line(metadata))
        if not config.continuous:  # a continuous run is an op, not an asset materialization
            report_materializations(reporter, config, metadata)
        return 0
    finally:
        spark.stop()
        reporter.close()
        lock.close()


def report_materializations(reporter: Any, config: JobConfig, metadata: dict[str, Any]) -> None:
    """Both sink assets materialized (through Pipes, when Dagster launched the job)."""
    # Pipes takes raw numbers and strings as they are; nested values are declared as JSON.
    typed = {
        key: {"raw_value": value, "type": "json"} if isinstance(value, dict | list) else value
        for key, value in metadata.items()
    }
    trades = config.source == TRADES
    if "mongo" in config.sinks:
        mongo_asset = MONGO_TRADE_ASSET if trades else MONGO_ASSET
        reporter.report_asset_materialization(metadata=typed, asset_key=mongo_asset)
    if "influx" in config.sinks:
        influx_asset = INFLUX_TRADE_ASSET if trades else INFLUX_ASSET
        reporter.report_asset_materialization(metadata=typed, asset_key=influx_asset)


def backfill_main(config: JobConfig) -> int:
    """The batch side: the backfill's windows recomputed from the topic (spark_jobs/backfill.py)."""
    reporter = open_reporter()
    spark = job_session(config, "crypto-backfill")
    try:
        prepare_sinks(config)
        backfill = run_trade_backfill if config.source == TRADES else run_backfill
        metadata = {
            **backfill(spark, config).metadata(),
            "topic": config.kafka.topic,
            "windows": list(config.windows),
        }
        reporter.log.info(summary_line(metadata))
        # A summary, not a materialization: Dagster adds it to the asset or op that asked.
        reporter.report_custom_message(metadata)
        return 0
    finally:
        spark.stop()
        reporter.close()


def run() -> int:
    """`main`, with a checkpoint it cannot continue or sinks it cannot write reported as one line
    (exit 2)."""
    try:
        return main()
    except (CheckpointMismatch, LegacyWindowKeys) as error:
        print(f"spark_jobs: error: {error}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    sys.exit(run())
