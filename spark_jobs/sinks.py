"""Sinks of the OHLCV job, one small function each, called from `foreachBatch`.

Every write is idempotent on the natural key (symbol, window, window start), so a batch that Spark
replays from the checkpoint overwrites what it wrote before. No exception is caught here: a failed
write fails the batch, and Spark retries it from the checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from crypto_pipeline.aggregates import AGGREGATE_FIELDS, INTEGER_FIELDS
from crypto_pipeline.clients import mongo_client
from spark_jobs.config import JobConfig
from spark_jobs.transform import document_id

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRIES = 5


def mongo_documents(aggregates: DataFrame) -> DataFrame:
    return aggregates.select(
        document_id(F.col("symbol"), F.col("window"), F.col("window_start")).alias("_id"), "*"
    )


def ensure_mongo_index(config: JobConfig) -> None:
    """The (symbol, window, window_start) index, created once before the stream starts."""
    from pymongo import ASCENDING

    with mongo_client(config.mongo_uri) as client:
        collection = client[config.mongo_database][config.mongo_collection]
        collection.create_index(
            [("symbol", ASCENDING), ("window", ASCENDING), ("window_start", ASCENDING)],
            name="symbol_window_start",
        )


# One writer at a time across the job's queries (foreachBatch runs on driver threads): FerretDB's
# SQLite backend stalls under concurrent writes to one database.
_MONGO_WRITE_LOCK = threading.Lock()
INSERT_CHUNK = 5_000
DUPLICATE_KEY = 11000


def _as_bson(row: Row) -> dict[str, Any]:
    document = row.asDict()
    for name in ("window_start", "window_end"):
        document[name] = datetime.fromtimestamp(document.pop(f"{name}_ms") / 1000, tz=UTC)
    return document


def insert_or_replace(documents: Iterable[dict[str, Any]], config: JobConfig) -> None:
    """Insert new documents in bulk; documents whose `_id` exists are deleted and inserted again.

    For FerretDB, whose bulk replaces of existing documents hang and whose single replaces scan
    the collection: a batch mostly holds new windows, so the delete touches only the few updated
    ones. A failure between the delete and the insert fails the batch; Spark's retry of it from
    the checkpoint writes those documents again."""
    from pymongo.errors import BulkWriteError

    with mongo_client(config.mongo_uri) as client:
        collection = client[config.mongo_database][config.mongo_collection]
        for chunk in _chunks(documents, INSERT_CHUNK):
            try:
                collection.insert_many(chunk, ordered=False)
            except BulkWriteError as error:
                errors = error.details["writeErrors"]
                if any(e["code"] != DUPLICATE_KEY for e in errors):
                    raise
                existing = [chunk[e["index"]] for e in errors]
                collection.delete_many({"_id": {"$in": [doc["_id"] for doc in existing]}})
                collection.insert_many(existing, ordered=True)


def write_mongo(batch: DataFrame, batch_id: int, config: JobConfig) -> None:
    """Idempotent upsert by `_id`: the MongoDB Spark connector's replace-upsert against MongoDB
    ("replace"), or `insert_or_replace` from one Spark task against FerretDB."""
    documents = mongo_documents(batch)
    with _MONGO_WRITE_LOCK:
        if config.mongo_write_mode == "replace":
            (
                documents.coalesce(config.mongo_writers)
                .write.format("mongodb")
                .mode("append")
                .option("connection.uri", config.mongo_uri)
                .option("database", config.mongo_database)
                .option("collection", config.mongo_collection)
                .option("operationType", "replace")
                .option("idFieldList", "_id")
                .option("upsertDocument", "true")
                .save()
            )
        else:
            timestamps_as_ms = documents.select(
                "*",
                F.unix_millis("window_start").alias("window_start_ms"),
                F.unix_millis("window_end").alias("window_end_ms"),
            ).drop("window_start", "window_end")
            timestamps_as_ms.coalesce(1).foreachPartition(
                lambda rows: insert_or_replace((_as_bson(row) for row in rows), config)
            )
    log.info("batch %d: upserted into MongoDB %s", batch_id, config.mongo_collection)


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


def write_influx_lines(lines: Iterable[str], config: JobConfig) -> int:
    """Write line protocol in batches of at most `influx_batch_lines`, retrying transient errors
    with backoff; any other error, or the last retry's, is raised."""
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    written = 0
    with InfluxDBClient(
        url=config.influx_url, token=config.influx_token, org=config.influx_org, timeout=30_000
    ) as client:
        write_api = client.write_api(write_options=SYNCHRONOUS)
        for chunk in _chunks(lines, config.influx_batch_lines):
            for attempt in range(1, RETRIES + 1):
                try:
                    write_api.write(
                        bucket=config.influx_bucket, record=chunk, write_precision=WritePrecision.MS
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
    line = f"{config.measurement}_batches,query={query} {fields},batch_id={batch_id}i {now_ms}"
    write_influx_lines([line], config)


def write_influx(batch: DataFrame, batch_id: int, config: JobConfig) -> None:
    """Each Spark partition writes its own points (no collect to the driver)."""
    measurement = config.measurement

    def write_partition(rows: Iterable[Row]) -> None:
        write_influx_lines((line_protocol(row, measurement) for row in rows), config)

    batch.foreachPartition(write_partition)
    log.info("batch %d: written to InfluxDB %s", batch_id, config.influx_bucket)


def write_dead_letters(batch: DataFrame, batch_id: int, config: JobConfig) -> None:
    """Invalid records to `<topic>.dlq` through the Kafka connector."""
    (
        batch.write.format("kafka")
        .option("kafka.bootstrap.servers", config.bootstrap_servers)
        .option("topic", config.dlq_topic)
        .save()
    )
    log.info("batch %d: dead letters sent to %s", batch_id, config.dlq_topic)
