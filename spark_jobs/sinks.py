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
from typing import Any

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from crypto_pipeline.aggregates import AGGREGATE_FIELDS, INTEGER_FIELDS
from crypto_pipeline.clients import mongo_client
from spark_jobs.config import JobConfig
from spark_jobs.transform import document_id

log = logging.getLogger(__name__)

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
DELETE_CHUNK = 1_000


def _delete_ids(ids: list[str], config: JobConfig) -> int:
    deleted = 0
    with mongo_client(config.mongo_uri) as client:
        collection = client[config.mongo_database][config.mongo_collection]
        for start in range(0, len(ids), DELETE_CHUNK):
            chunk = ids[start : start + DELETE_CHUNK]
            deleted += collection.delete_many({"_id": {"$in": chunk}}).deleted_count
    return deleted


def write_mongo(batch: DataFrame, batch_id: int, config: JobConfig) -> None:
    """Idempotent upsert by `_id` through the MongoDB Spark connector.

    "replace": the connector's replace-upsert (MongoDB). "delete-insert": delete the batch's ids,
    then insert them with the connector; for FerretDB, whose SQLite backend hangs on bulk
    replaces of existing documents. A failure between the two steps fails the batch, and
    Spark's retry of it from the checkpoint writes the documents again.
    """
    documents = mongo_documents(batch).coalesce(config.mongo_writers)
    writer = (
        documents.write.format("mongodb")
        .mode("append")
        .option("connection.uri", config.mongo_uri)
        .option("database", config.mongo_database)
        .option("collection", config.mongo_collection)
    )
    with _MONGO_WRITE_LOCK:
        if config.mongo_write_mode == "replace":
            writer.option("operationType", "replace").option("idFieldList", "_id").option(
                "upsertDocument", "true"
            ).save()
        else:
            ids = [row["_id"] for row in documents.select("_id").collect()]
            deleted = _delete_ids(ids, config)
            writer.option("operationType", "insert").save()
            log.info("batch %d: replaced %d of %d documents", batch_id, deleted, len(ids))
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


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
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
