"""The OHLCV streaming job: Kafka -> validated candles -> windowed aggregates -> MongoDB + InfluxDB.

    spark-submit --jars <connectors> spark_jobs/main.py --trigger available-now
    python -m spark_jobs.main --trigger "1 second"

Options: `python -m spark_jobs.main --help` (spark_jobs/config.py, the contract with Dagster).
`main` only wires configuration, the source, the queries and the sinks; one streaming query per
window length (each with its own checkpoint) and one for dead letters.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from crypto_pipeline.spark import build_spark_session
from spark_jobs.config import JobConfig
from spark_jobs.progress import ProgressTracker, open_reporter
from spark_jobs.sinks import (
    ensure_mongo_index,
    write_batch_metrics,
    write_dead_letters,
    write_influx,
    write_mongo,
)
from spark_jobs.transform import build_aggregates, dead_letters, parse_messages, valid_candles

log = logging.getLogger("spark_jobs")

MONGO_ASSET = "mongo_realtime"
INFLUX_ASSET = "influx_ohlcv"


def read_source(spark: SparkSession, config: JobConfig) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", config.kafka.bootstrap_servers)
        .option("subscribe", config.kafka.topic)
        .option("startingOffsets", config.starting_offsets)
        # Never skip data that is gone from Kafka: fail loudly instead.
        .option("failOnDataLoss", "true")
    )
    if config.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(config.max_offsets_per_trigger))
    return reader.load()


def write_aggregates(batch: DataFrame, batch_id: int, config: JobConfig, query: str) -> None:
    batch.persist()
    try:
        if "mongo" in config.sinks:
            write_mongo(batch, batch_id, config)
        if "influx" in config.sinks:
            write_influx(batch, batch_id, config)
            write_batch_metrics(query, batch_id, {"windows": batch.count()}, config)
        if "noop" in config.sinks:
            batch.write.format("noop").mode("overwrite").save()
    finally:
        batch.unpersist()


def write_rejected(
    batch: DataFrame, batch_id: int, config: JobConfig, count: Callable[[int], None]
) -> None:
    batch.persist()
    try:
        rejected = batch.count()
        if rejected:
            write_dead_letters(batch, batch_id, config)
        if "influx" in config.sinks:
            write_batch_metrics("dead_letters", batch_id, {"dead_letters": rejected}, config)
        count(rejected)
    finally:
        batch.unpersist()


def _with_trigger(writer: DataStreamWriter, config: JobConfig) -> DataStreamWriter:
    if not config.continuous:
        return writer.trigger(availableNow=True)
    return writer.trigger(processingTime=config.trigger)


def start_queries(
    spark: SparkSession, config: JobConfig, tracker: ProgressTracker
) -> list[StreamingQuery]:
    parsed = parse_messages(read_source(spark, config))
    candles = valid_candles(parsed)
    queries = []
    for window in config.windows:
        writer = (
            build_aggregates(candles, window, config.watermark)
            .writeStream.queryName(f"ohlcv_{window}")
            .outputMode("update")
            .option("checkpointLocation", f"{config.checkpoint_dir}/ohlcv_{window}")
            .foreachBatch(partial(write_aggregates, config=config, query=f"ohlcv_{window}"))
        )
        queries.append(_with_trigger(writer, config).start())
    rejected_writer = (
        dead_letters(parsed)
        .writeStream.queryName("dead_letters")
        .outputMode("append")
        .option("checkpointLocation", f"{config.checkpoint_dir}/dead_letters")
        .foreachBatch(partial(write_rejected, config=config, count=tracker.add_dead_letters))
    )
    queries.append(_with_trigger(rejected_writer, config).start())
    return queries


def await_queries(
    spark: SparkSession,
    queries: list[StreamingQuery],
    config: JobConfig,
    stop_requested: Callable[[], bool],
) -> None:
    """Available-now: wait for every query to finish. Continuous: run until one fails (its
    exception is raised) or a stop is requested (SIGTERM/SIGINT), then stop all queries."""
    if not config.continuous:
        for query in queries:
            query.awaitTermination()
        return
    while not stop_requested():
        if spark.streams.awaitAnyTermination(1):  # seconds
            break
    for query in queries:
        query.stop()
    failed = [query.exception() for query in queries if query.exception() is not None]
    if failed:
        raise RuntimeError(f"streaming query failed: {failed[0]}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one line per callback otherwise
    config = JobConfig.from_args(argv, os.environ)
    reporter = open_reporter()
    spark = build_spark_session(
        config.spark_master, Path(config.spark_jars_dir), f"crypto-ohlcv-{config.kafka.topic}"
    )
    spark.sparkContext.setLogLevel("WARN")
    status_file = Path(config.status_file) if config.status_file else None
    tracker = ProgressTracker(reporter, status_file)
    spark.streams.addListener(tracker)
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only a flag: py4j calls are not safe from inside a signal handler.
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if "mongo" in config.sinks:
            ensure_mongo_index(config)
        queries = start_queries(spark, config, tracker)
        reporter.log.info(
            f"started {len(queries)} queries on {config.kafka.topic} ({config.trigger}); "
            f"checkpoints in {config.checkpoint_dir}; MongoDB {config.mongo.redacted_uri}"
        )
        await_queries(spark, queries, config, lambda: bool(stop_requested))
        metadata: dict[str, Any] = {
            **tracker.summary(),
            "stopped_by_signal": bool(stop_requested),
            # What the asset checks need to find this run's output and checkpoints.
            "topic": config.kafka.topic,
            "windows": list(config.windows),
            "checkpoint_dir": config.checkpoint_dir,
        }
        if config.continuous:
            # A continuous run is an op, not an asset materialization: log the totals.
            reporter.log.info(f"stream stopped: {metadata}")
            return 0
        # Pipes takes raw numbers and strings as they are; nested values are declared as JSON.
        typed = {
            key: {"raw_value": value, "type": "json"} if isinstance(value, dict | list) else value
            for key, value in metadata.items()
        }
        if "mongo" in config.sinks:
            reporter.report_asset_materialization(metadata=typed, asset_key=MONGO_ASSET)
        if "influx" in config.sinks:
            reporter.report_asset_materialization(metadata=typed, asset_key=INFLUX_ASSET)
        return 0
    finally:
        spark.stop()
        reporter.close()


if __name__ == "__main__":
    sys.exit(main())
