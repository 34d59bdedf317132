"""Sinks written before windows had an exchange, moved to the new keys in place
(`crypto-pipeline migrate-keys`).

Every window stored then is taken to be a file's (FILE_EXCHANGE): refused if the topic holds a
live feed's message, whose exchange the old windows mixed with the files' (reset the sinks and
backfill instead). Per (symbol, window length) of the MongoDB documents still on the old keys:
1. InfluxDB: the group's series deleted by its tags (InfluxDB 1.8 with InfluxQL DROP SERIES, 2.x
   with the delete API), then its points written again from the documents, tagged `exchange`;
2. MongoDB: each document inserted under `file|SYMBOL|window|start` unless there, then the old
   ones deleted.
MongoDB goes last, and the job refuses to start while it holds a document of the old keys
(spark_jobs/sinks.py), so no job writes during the move, and a run stopped at any point is
finished by the next one (the old documents are the source until they are gone). Last, InfluxDB
series still without the tag (points MongoDB did not have) are deleted, and checked gone. Ledger
entries get their exchange. Nothing is recomputed: windows whose candles the topic no longer
holds keep their values. The job re-keys its checkpoint's state when it next starts.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from pymongo import UpdateOne

from crypto_pipeline.clients import influx_client, iter_records, mongo_client
from crypto_pipeline.formats import influx_point
from crypto_pipeline.formats.candle_message import EXCHANGE, FILE_EXCHANGE
from crypto_pipeline.formats.window_values import AGGREGATE_FIELDS, epoch_ms, window_id
from crypto_pipeline.readback import influx_measurement_query
from crypto_pipeline.settings import InfluxTarget, KafkaTarget, MongoTarget

LEGACY = {EXCHANGE: {"$exists": False}}  # a document of the old keys
LEGACY_INDEX = "symbol_window_start"
WRITE_BATCH = 5_000


class MigrationRefused(ValueError):
    """The sinks cannot be moved in place."""


@dataclass
class Migrated:
    mongo_windows: int = 0
    ledger_entries: int = 0
    influx_points: int = 0


def refuse_live_topic(kafka: KafkaTarget) -> None:
    """The old windows of a topic a live feed wrote to mixed exchanges: no key is right."""
    marker = f'"{EXCHANGE}":'.encode()
    for record in iter_records(kafka.bootstrap_servers, kafka.topic, timeout_s=3600):
        if marker in record.value:
            raise MigrationRefused(
                f"{kafka.topic} holds live-feed messages, whose windows the previous version "
                "stored mixed with the files' of the same symbol: no key is right for them. "
                "Stop the job, move its checkpoint aside, drop the aggregates (MongoDB collection "
                "and InfluxDB measurement) and recompute them with `crypto-pipeline backfill`"
            )


class InfluxSeries:
    """Deleting series by tags on InfluxDB 2.x (the delete API) or 1.8 (InfluxQL, which has no
    delete API: 404)."""

    def __init__(self, client: InfluxDBClient, target: InfluxTarget) -> None:
        self.client, self.target = client, target
        self.influxql: bool | None = None

    def delete(self, tags: dict[str, str]) -> None:
        if not self.influxql:
            predicate = " AND ".join(
                [f'_measurement="{self.target.measurement}"']
                + [f'"{tag}"="{value}"' for tag, value in tags.items()]
            )
            try:
                self.client.delete_api().delete(
                    "1970-01-01T00:00:00Z",
                    "2100-01-01T00:00:00Z",
                    predicate,
                    bucket=self.target.bucket,
                    org=self.target.org,
                )
                self.influxql = False
                return
            except ApiException as error:
                if error.status != 404 or self.influxql is False:
                    raise
                self.influxql = True
        where = " AND ".join(f"\"{tag}\" = '{value}'" for tag, value in tags.items())
        self._influxql(f"DROP SERIES FROM {json.dumps(self.target.measurement)} WHERE {where}")

    def _influxql(self, statement: str) -> None:
        request = urllib.request.Request(
            f"{self.target.url}/query?{urllib.parse.urlencode({'db': self.target.database})}",
            data=urllib.parse.urlencode({"q": statement}).encode(),
            headers={"Authorization": f"Token {self.target.token}"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            answer = json.load(response)
        if "error" in answer or any("error" in r for r in answer.get("results", [])):
            raise MigrationRefused(f"InfluxDB refused {statement}: {answer}")

    def untagged_values(self) -> int:
        query = influx_measurement_query(
            self.target,
            self.target.measurement,
            f" |> filter(fn: (r) => not exists r.{EXCHANGE}) |> group() |> count()",
        )
        tables = self.client.query_api().query(query)
        return sum(int(record.get_value()) for table in tables for record in table.records)


def _point(document: dict[str, Any], measurement: str) -> str:
    values = {name: document.get(name) for name in AGGREGATE_FIELDS}
    return influx_point.encode(
        {
            **values,
            EXCHANGE: FILE_EXCHANGE,
            "symbol": document["symbol"],
            "window": document["window"],
            "window_start_ms": epoch_ms(document["window_start"]),
        },
        measurement,
    )


def migrate_keys(
    kafka: KafkaTarget,
    mongo: MongoTarget,
    influx: InfluxTarget,
    progress: Callable[[str], None],
) -> Migrated:
    refuse_live_topic(kafka)
    migrated = Migrated()
    with mongo_client(mongo.uri) as mongo_connection, influx_client(influx) as influx_connection:
        database = mongo_connection[mongo.database]
        windows = database[mongo.collection]
        series = InfluxSeries(influx_connection, influx)
        writer = influx_connection.write_api(write_options=SYNCHRONOUS)
        groups = sorted(
            {
                (doc["symbol"], doc["window"])
                for doc in windows.find(LEGACY, {"symbol": 1, "window": 1})
            }
        )
        for symbol, window in groups:
            group = {**LEGACY, "symbol": symbol, "window": window}
            documents = list(windows.find(group))
            series.delete({"symbol": symbol, "window": window})
            lines = [_point(document, influx.measurement) for document in documents]
            for start in range(0, len(lines), WRITE_BATCH):
                chunk = lines[start : start + WRITE_BATCH]
                writer.write(bucket=influx.bucket, record=chunk, write_precision="ms")
            windows.bulk_write(
                [
                    UpdateOne(
                        {"_id": window_id(FILE_EXCHANGE, symbol, window, start_ms)},
                        {"$setOnInsert": {**without_id(doc), EXCHANGE: FILE_EXCHANGE}},
                        upsert=True,
                    )
                    for doc in documents
                    for start_ms in [epoch_ms(doc["window_start"])]
                ],
                ordered=False,
            )
            windows.delete_many(group)
            migrated.mongo_windows += len(documents)
            migrated.influx_points += len(lines)
            progress(f"{symbol} {window}: {len(documents):,} windows moved")
        series.delete({EXCHANGE: ""})  # series only InfluxDB had (a tag compared with "" is absent)
        if left := series.untagged_values():
            raise MigrationRefused(
                f"InfluxDB still holds {left:,} field values of {influx.measurement} without an "
                f"{EXCHANGE} tag; delete them (they have no window in MongoDB) and run again"
            )
        if LEGACY_INDEX in windows.index_information():
            windows.drop_index(LEGACY_INDEX)
        ledger = database[mongo.late_collection].update_many(
            LEGACY, {"$set": {EXCHANGE: FILE_EXCHANGE}}
        )
        migrated.ledger_entries = ledger.modified_count
    return migrated


def without_id(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "_id"}
