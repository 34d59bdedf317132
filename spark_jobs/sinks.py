"""Sinks of the OHLCV job, one small function each, called from `foreachBatch` (batches.py) with
the micro-batch's output collected once to the driver (pandas, through Arrow).

Written from the driver with clients kept for the life of the process: a micro-batch of a live
stream holds a few thousand windows, and one Spark job per sink cost more than the writes
(measured: bench/results.md). Every write is idempotent on the natural key (exchange, symbol,
window, window start), so a batch that Spark replays from the checkpoint overwrites what it wrote
before. No exception is caught here: a failed write fails the batch, and Spark retries it from
the checkpoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pandas as pd

from crypto_pipeline.clients import (
    DELIVERY_TIMEOUT_S,
    Document,
    ensure_topic,
    influx_client,
    kafka_producer,
    librdkafka_config,
    mongo_client,
    produce_waiting,
)
from crypto_pipeline.formats import candle_update, influx_point, late_ledger, window_document
from crypto_pipeline.formats.window_values import (
    INPUT_OFFSETS,
    INTEGER_FIELDS,
    split_series,
    stored_fields,
)
from crypto_pipeline.settings import InfluxTarget
from spark_jobs.interface.config import JobConfig
from spark_jobs.window_versions import WRITE, raise_frontiers, stored_versions, verdict, window_ends

T = TypeVar("T")

RETRIES = 5
INFLUX_BATCH_LINES = 5_000
# Replace-upserts per bulk write: what the MongoDB Spark connector sends (maxBatchSize).
MONGO_BATCH = 512
DUPLICATE_KEY = 11000  # MongoDB's error code

WINDOW_INDEX = "exchange_symbol_window_start"
# In the writers collection: no window of the old keys (symbol alone) is left.
KEYS_CHECKED = "keys-checked|exchange:symbol"

# One client per server for the life of the process (reused by every micro-batch).
_CLIENTS: dict[tuple[str, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(kind: str, key: tuple[str, ...], create: Any) -> Any:
    with _CLIENTS_LOCK:
        if (kind, *key) not in _CLIENTS:
            _CLIENTS[(kind, *key)] = create()
        return _CLIENTS[(kind, *key)]


def _values(series: pd.Series, integer: bool) -> list[Any]:
    """Plain Python values, nulls (NaN, NA) as None: what BSON and line protocol take."""
    present = series.notna().tolist()
    values = (series.fillna(0).astype("int64") if integer else series.astype("float64")).tolist()
    return [value if ok else None for value, ok in zip(values, present, strict=True)]


def aggregate_columns(windows: pd.DataFrame) -> dict[str, list[Any]]:
    """The windows' key and aggregate fields as lists of plain values (None for null), the
    series key split into exchange and symbol."""
    series = [split_series(key) for key in windows["symbol"].tolist()]
    columns: dict[str, list[Any]] = {
        "exchange": [exchange for exchange, _ in series],
        "symbol": [symbol for _, symbol in series],
        "window": windows["window"].tolist(),
        "window_start_ms": windows["window_start_ms"].astype("int64").tolist(),
        "window_end_ms": windows["window_end_ms"].astype("int64").tolist(),
    }
    for name in stored_fields(windows.columns):
        columns[name] = _values(windows[name], integer=name in INTEGER_FIELDS)
    columns[INPUT_OFFSETS] = windows[INPUT_OFFSETS].tolist()
    return columns


def prepare_sinks(config: JobConfig) -> None:
    """Before the first write: the (exchange, symbol, window, window_start) index in MongoDB,
    the compacted candles topic (one partition: one ordered stream of window updates)."""
    from pymongo import ASCENDING

    if "mongo" in config.sinks:
        with mongo_client(config.mongo.uri) as client:
            collection = client[config.mongo.database][config.mongo.collection]
            collection.create_index(
                [(name, ASCENDING) for name in ("exchange", "symbol", "window", "window_start")],
                name=WINDOW_INDEX,
            )
    if "candles" in config.sinks:
        bootstrap, topic = config.kafka.bootstrap_servers, config.kafka.candles_topic
        ensure_topic(bootstrap, topic, partitions=1, compacted=True)


class LegacyWindowKeys(RuntimeError):
    """The aggregates hold windows keyed by symbol alone, written before series had an
    exchange."""


def refuse_legacy_keys(config: JobConfig) -> None:
    """Refuse to write beside windows of the old keys (the same window would be stored twice);
    once a collection has none, the check is remembered and not made again."""
    collection, writers = aggregates_collection(config), writers_collection(config)
    if writers.find_one({"_id": KEYS_CHECKED}) is not None:
        return
    legacy = collection.find_one({"exchange": {"$exists": False}}, {"_id": 1})
    if legacy is not None:
        raise LegacyWindowKeys(
            f"{config.mongo.database}.{config.mongo.collection} holds windows keyed by symbol "
            f"alone (e.g. {legacy['_id']}), written before windows had an exchange; stop the job "
            "and run `crypto-pipeline migrate-keys` once"
        )
    writers.update_one({"_id": KEYS_CHECKED}, {"$set": {"at": time.time()}}, upsert=True)


def _mongo_database(config: JobConfig) -> Any:
    mongo = config.mongo
    return _client("mongo", (mongo.uri,), lambda: mongo_client(mongo.uri))[mongo.database]


def aggregates_collection(config: JobConfig) -> Any:
    return _mongo_database(config)[config.mongo.collection]


def writers_collection(config: JobConfig) -> Any:
    """Where the aggregates' write lease lives (spark_jobs/window_versions.py)."""
    return _mongo_database(config)[config.mongo.writers_collection]


class StoredAfterAll(RuntimeError):
    """A window taken for unstored was found stored, with input this write lacks."""


def write_mongo(
    columns: dict[str, list[Any]],
    config: JobConfig,
    unstored: frozenset[str] = frozenset(),
    documents: list[Document] | None = None,
) -> int:
    """Replace-upserts by `_id` (a window is replaced in place, or inserted; never absent in
    between), unordered bulk writes of MONGO_BATCH, `mongo_writers` at a time. Windows of
    `unstored` (that no writer has stored) are inserted instead. One found stored after all (a
    retried write, or a writer whose lease lapsed) is replaced if this version covers the stored
    one; otherwise the write fails (so does the batch: run again from its checkpoint, it reads
    those windows' versions, since the frontiers now cover them)."""
    from pymongo import ReplaceOne
    from pymongo.errors import BulkWriteError

    collection = aggregates_collection(config)
    writers = _client(
        "mongo-writers",
        (str(config.mongo_writers),),
        lambda: ThreadPoolExecutor(config.mongo_writers, thread_name_prefix="mongo"),
    )
    if documents is None:
        documents = window_document.encode(columns)

    def upsert(chunk: Sequence[Document]) -> None:
        collection.bulk_write(
            [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in chunk], ordered=False
        )

    def insert(chunk: Sequence[Document]) -> None:
        try:
            collection.insert_many(chunk, ordered=False)
        except BulkWriteError as error:
            errors = error.details.get("writeErrors") or []
            if error.details.get("writeConcernErrors") or not errors:
                raise
            if any(e["code"] != DUPLICATE_KEY for e in errors):
                raise
            found = [chunk[e["index"]] for e in errors]
            stored = stored_versions(collection, [str(doc["_id"]) for doc in found])
            newer = [
                doc["_id"]
                for doc in found
                if verdict(doc["rows"], doc[INPUT_OFFSETS], stored.get(doc["_id"])) != WRITE
            ]
            if newer:
                raise StoredAfterAll(
                    f"{len(newer)} windows past the frontiers are stored with input this write "
                    f"lacks (e.g. {newer[0]}): run again, the batch reads their versions first"
                ) from None
            upsert(found)

    new = [doc for doc in documents if doc["_id"] in unstored]
    known = [doc for doc in documents if doc["_id"] not in unstored]
    futures = [writers.submit(insert, chunk) for chunk in _chunks(new, MONGO_BATCH)]
    futures += [writers.submit(upsert, chunk) for chunk in _chunks(known, MONGO_BATCH)]
    for future in futures:
        future.result()
    return len(documents)


def late_ledger_collection(config: JobConfig) -> Any:
    return _mongo_database(config)[config.mongo.late_collection]


def write_late_rows(
    entries: Sequence[late_ledger.LateEntry], checkpoint_id: str, batch_id: int, config: JobConfig
) -> int:
    """The batch's late candles and refused windows into the ledger, until a backfill repairs
    them."""
    ledger = late_ledger_collection(config)
    return late_ledger.record(ledger, config.kafka.topic, checkpoint_id, batch_id, entries)


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def is_transient_http(error: Exception) -> bool:
    """InfluxDB (HTTP) unreachable, overloaded or failing on its side."""
    from influxdb_client.rest import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(error, ApiException):
        return error.status is None or error.status >= 500 or error.status == 429
    return isinstance(error, HTTPError | ConnectionError | TimeoutError)


def _influx_writer(target: InfluxTarget) -> Any:
    from influxdb_client.client.write_api import SYNCHRONOUS

    return _client(
        "influx",
        (target.url, target.token, target.org),
        lambda: influx_client(target).write_api(write_options=SYNCHRONOUS),
    )


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
                if attempt == RETRIES or not is_transient_http(error):
                    raise
                time.sleep(0.5 * 2**attempt)
        written += len(chunk)
    return written


def write_influx(columns: dict[str, list[Any]], config: JobConfig) -> int:
    measurement = config.influx.measurement
    names = list(columns)
    rows = (dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True))
    return write_influx_lines((influx_point.encode(row, measurement) for row in rows), config)


def write_batch_metrics(
    query: str, batch_id: int, counts: dict[str, int], time_ms: int, config: JobConfig
) -> None:
    """One point per micro-batch in `<measurement>_batches` (tag query, time = the batch's planned
    time, the same when it runs again): what the pipeline dashboard charts as windows written and
    dead letters per minute."""
    fields = ",".join(f"{name}={value}i" for name, value in counts.items())
    measurement = config.influx.batches_measurement
    line = f"{measurement},query={query} {fields},batch_id={batch_id}i {time_ms}"
    write_influx_lines([line], config)


def _send_all(topic: str, messages: Iterable[tuple[bytes, bytes]], config: JobConfig) -> int:
    """Messages (key, value) to a topic, acks from all in-sync replicas, in order per key (an
    idempotent producer); any message not delivered fails the batch."""
    bootstrap = config.kafka.bootstrap_servers
    producer = _client("kafka", (bootstrap,), lambda: kafka_producer(bootstrap))
    sent = [producer.send(topic, key=key, value=value) for key, value in messages]
    producer.flush()
    for future in sent:
        future.get(timeout=0)  # raises the delivery error, if any
    return len(sent)


def write_dead_letters(letters: pd.DataFrame, config: JobConfig) -> int:
    """Invalid records to `<topic>.dlq` (key topic-partition-offset)."""
    messages = zip(letters["key"], letters["value"], strict=True)
    return _send_all(
        config.kafka.dlq_topic, ((k.encode(), v.encode()) for k, v in messages), config
    )


class CandlesSender:
    """The candles topic's producer (librdkafka: a window costs microseconds where kafka-python's
    send costs a hundred), with `kafka_producer`'s guarantees: acks from all in-sync replicas,
    idempotence, so the topic holds each key's versions in the order they were sent."""

    def __init__(self, bootstrap_servers: str) -> None:
        from confluent_kafka import Producer

        self.failures: list[str] = []
        config = {**librdkafka_config(bootstrap_servers), "on_delivery": self._delivered}
        self.producer = Producer(config)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:  # only failures are reported (delivery.report.only.error)
            self.failures.append(str(error))

    def send(self, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> int:
        """Every message delivered, or a KafkaTimeoutError (an outage: the batch's writes are
        tried again while Kafka is away)."""
        from kafka.errors import KafkaTimeoutError

        sent = 0
        for key, value in messages:
            produce_waiting(self.producer, topic, value, key)
            sent += 1
        undelivered = self.producer.flush(DELIVERY_TIMEOUT_S)
        failures, self.failures = self.failures, []
        if undelivered or failures:
            raise KafkaTimeoutError(
                f"{topic}: {undelivered + len(failures)} of {sent} windows not delivered "
                f"({(failures or ['timed out'])[0]})"
            )
        return sent


def write_candles_topic(messages: Iterable[tuple[bytes, bytes]], config: JobConfig) -> int:
    """The windows' messages (candle_update.encode) to `<topic>.candles`."""
    bootstrap = config.kafka.bootstrap_servers
    sender = _client("candles", (bootstrap,), lambda: CandlesSender(bootstrap))
    return int(sender.send(config.kafka.candles_topic, messages))


def candle_messages(documents: list[Document]) -> list[tuple[bytes, bytes]]:
    return [candle_update.encode(document) for document in documents]


def window_writes(
    windows: pd.DataFrame,
    config: JobConfig,
    unstored: frozenset[str] = frozenset(),
    frontiers: bool = False,
) -> dict[str, Callable[[], object]]:
    """The windows' writes, by sink: MongoDB (those of `unstored` inserted), then the candles
    topic (only what MongoDB stored: a refused write sends nothing), and InfluxDB. `frontiers`:
    also raise the series' frontiers (a writer without the write lease)."""
    columns = aggregate_columns(windows)
    sinks = config.sinks
    encoder = _client("candle-encoder", (), lambda: ThreadPoolExecutor(1, "candle-encoder"))

    def mongo_then_candles() -> None:
        documents = window_document.encode(columns)
        # Encoded while MongoDB writes (its writers mostly wait on the server), sent after.
        messages = encoder.submit(candle_messages, documents) if "candles" in sinks else None
        write_mongo(columns, config, unstored, documents)
        if frontiers:
            raise_frontiers(writers_collection(config), window_ends(windows))
        if messages is not None:
            write_candles_topic(messages.result(), config)

    def candles_alone() -> int:
        return write_candles_topic(candle_messages(window_document.encode(columns)), config)

    writes: dict[str, Callable[[], object]] = {}
    if "mongo" in sinks:
        writes["mongo"] = mongo_then_candles
    elif "candles" in sinks:
        writes["candles"] = candles_alone
    if "influx" in sinks:
        writes["influx"] = lambda: write_influx(columns, config)
    return writes
