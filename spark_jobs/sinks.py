"""Sinks of the OHLCV job, one small function each, called from `foreachBatch` (batches.py).

Every write is idempotent on the natural key (symbol, window, window start), so a batch that Spark
replays from the checkpoint overwrites what it wrote before. No exception is caught here: a failed
write fails the batch, and Spark retries it from the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from crypto_pipeline.aggregates import AGGREGATE_FIELDS, INTEGER_FIELDS
from crypto_pipeline.clients import influx_client, mongo_client
from crypto_pipeline.settings import InfluxTarget
from spark_jobs.config import JobConfig
from spark_jobs.transform import document_id

T = TypeVar("T")

RETRIES = 5
INFLUX_BATCH_LINES = 5_000


def mongo_documents(aggregates: DataFrame) -> DataFrame:
    return aggregates.select(
        document_id(F.col("symbol"), F.col("window"), F.col("window_start")).alias("_id"), "*"
    )


def ensure_mongo_index(config: JobConfig) -> None:
    """The (symbol, window, window_start) index, created once before the stream starts."""
    from pymongo import ASCENDING

    with mongo_client(config.mongo.uri) as client:
        collection = client[config.mongo.database][config.mongo.collection]
        collection.create_index(
            [("symbol", ASCENDING), ("window", ASCENDING), ("window_start", ASCENDING)],
            name="symbol_window_start",
        )


def write_mongo(batch: DataFrame, batch_id: int, config: JobConfig) -> None:
    """Idempotent upsert by `_id` through the MongoDB Spark connector: each document replaces
    the one with its `_id`, or is inserted. No window is ever absent in between."""
    (
        mongo_documents(batch)
        .coalesce(config.mongo_writers)
        .write.format("mongodb")
        .mode("append")
        .option("connection.uri", config.mongo.uri)
        .option("database", config.mongo.database)
        .option("collection", config.mongo.collection)
        .option("operationType", "replace")
        .option("idFieldList", "_id")
        .option("upsertDocument", "true")
        .save()
    )


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def line_protocol(row: Row | dict[str, Any], measurement: str) -> str:
    """One point: tags symbol and window, the aggregates as fields, time = window start (ms)."""
    values = row.asDict() if isinstance(row, Row) else row
    fields = []
    for name in AGGREGATE_FIELDS:
        value = values[name]
        if value is None:
            continue
        fields.append(f"{name}={int(value)}i" if name in INTEGER_FIELDS else f"{name}={value!r}")
    start_ms = int(values["window_start"].timestamp() * 1000)
    tags = f"symbol={_escape_tag(values['symbol'])},window={_escape_tag(values['window'])}"
    return f"{measurement},{tags} {','.join(fields)} {start_ms}"


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _is_transient(error: Exception) -> bool:
    from influxdb_client.rest import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(error, ApiException):
        return error.status is None or error.status >= 500 or error.status == 429
    return isinstance(error, HTTPError | ConnectionError | TimeoutError)


# One client per process and server (Python workers live across micro-batches): its connection
# pool is reused instead of a new client per partition and batch.
_INFLUX_WRITERS: dict[tuple[str, str, str], Any] = {}


def _influx_writer(target: InfluxTarget) -> Any:
    from influxdb_client.client.write_api import SYNCHRONOUS

    key = (target.url, target.token, target.org)
    if key not in _INFLUX_WRITERS:
        _INFLUX_WRITERS[key] = influx_client(target).write_api(write_options=SYNCHRONOUS)
    return _INFLUX_WRITERS[key]


def write_influx_lines(lines: Iterable[str], config: JobConfig) -> int:
    """Write line protocol in batches of at most INFLUX_BATCH_LINES, retrying transient errors
    with backoff; any other error, or the last retry's, is raised."""
    from influxdb_client import WritePrecision

    written = 0
    write_api = _influx_writer(config.influx)
    for chunk in _chunks(lines, INFLUX_BATCH_LINES):
        for attempt in range(1, RETRIES + 1):
            try:
                write_api.write(
                    bucket=config.influx.bucket, record=chunk, write_precision=WritePrecision.MS
                )
                break
            except Exception as error:
                if attempt == RETRIES or not _is_transient(error):
                    raise
                time.sleep(0.5 * 2**attempt)
        written += len(chunk)
    return written


def write_batch_metrics(
    query: str, batch_id: int, counts: dict[str, int], config: JobConfig
) -> None:
    """One point per micro-batch in `<measurement>_batches` (tag query, time = now): what the
    pipeline dashboard charts as windows written and dead letters per minute."""
    fields = ",".join(f"{name}={value}i" for name, value in counts.items())
    now_ms = int(time.time() * 1000)
    measurement = config.influx.batches_measurement
    line = f"{measurement},query={query} {fields},batch_id={batch_id}i {now_ms}"
    write_influx_lines([line], config)


def write_influx(batch: DataFrame, batch_id: int, config: JobConfig) -> None:
    """Each Spark partition writes its own points (no collect to the driver)."""
    measurement = config.influx.measurement

    def write_partition(rows: Iterable[Row]) -> None:
        write_influx_lines((line_protocol(row, measurement) for row in rows), config)

    batch.foreachPartition(write_partition)


def write_dead_letters(batch: DataFrame, batch_id: int, config: JobConfig) -> None:
    """Invalid records to `<topic>.dlq` through the Kafka connector."""
    (
        batch.write.format("kafka")
        .option("kafka.bootstrap.servers", config.kafka.bootstrap_servers)
        .option("topic", config.kafka.dlq_topic)
        .save()
    )
