"""The three servers answer their ordinary clients; Spark reaches them through the connectors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from influxdb_client import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError
from pyspark.sql import SparkSession

from crypto_pipeline.clients import influx_client, mongo_client
from crypto_pipeline.settings import Settings
from tests.integration.kafka_helpers import consume_all


def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def test_kafka_round_trip_of_10000_keyed_messages(local_stack: Settings, unique_name: str) -> None:
    create_topic(local_stack, unique_name, partitions=3)
    sent = {(f"key-{i % 37}", f"value-{i}") for i in range(10_000)}
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka.bootstrap_servers, acks="all")
    for key, value in sorted(sent):
        producer.send(unique_name, key=key.encode(), value=value.encode())
    producer.flush()
    producer.close()

    records = consume_all(local_stack, unique_name, expected=10_000)

    assert len(records) == 10_000
    assert {(r.key.decode(), r.value.decode()) for r in records} == sent
    partitions_per_key: dict[str, set[int]] = {}
    for record in records:
        partitions_per_key.setdefault(record.key.decode(), set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions_per_key.values())
    assert {r.partition for r in records} == {0, 1, 2}


def test_mongo_insert_unique_index_upsert_and_sorted_find(
    local_stack: Settings, unique_name: str
) -> None:
    with mongo_client(local_stack.mongo.uri) as client:
        collection = client[unique_name]["docs"]
        collection.insert_many([{"_id": i, "symbol": f"S{i % 5}", "n": i} for i in range(100)])
        collection.create_index([("symbol", ASCENDING), ("n", ASCENDING)], unique=True)
        with pytest.raises(DuplicateKeyError):
            collection.insert_one({"_id": 1000, "symbol": "S0", "n": 0})

        collection.replace_one({"_id": "k"}, {"symbol": "X", "n": 1}, upsert=True)
        collection.replace_one({"_id": "k"}, {"symbol": "X", "n": 2}, upsert=True)

        assert collection.count_documents({"_id": "k"}) == 1
        assert collection.find_one({"_id": "k"}) == {"_id": "k", "symbol": "X", "n": 2}
        top = list(collection.find({"symbol": "S3"}).sort("n", DESCENDING).limit(3))
        assert [doc["n"] for doc in top] == [98, 93, 88]
        client.drop_database(unique_name)


def test_influx_v2_write_and_flux_read(local_stack: Settings, unique_name: str) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    points = [
        Point(unique_name)
        .tag("symbol", "BTCUSDT")
        .field("close", 100.0 + i / 8)
        .field("trades", i)
        .time(start + timedelta(minutes=i))
        for i in range(50)
    ]
    with influx_client(local_stack.influx) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=local_stack.influx.bucket, record=points
        )
        tables = client.query_api().query(
            f'from(bucket: "{local_stack.influx.bucket}")'
            " |> range(start: 2024-12-31T00:00:00Z, stop: 2025-01-02T00:00:00Z)"
            f' |> filter(fn: (r) => r._measurement == "{unique_name}" and r._field == "close")'
        )
    rows = [(record.get_time(), record.get_value()) for table in tables for record in table]
    assert rows == [(start + timedelta(minutes=i), 100.0 + i / 8) for i in range(50)]


def test_spark_reads_kafka_through_the_connector(
    local_stack: Settings, spark: SparkSession, unique_name: str
) -> None:
    create_topic(local_stack, unique_name, partitions=2)
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka.bootstrap_servers)
    expected = {f"BTC{i}": {"price": i * 1.5} for i in range(200)}
    for key, value in expected.items():
        producer.send(unique_name, key=key.encode(), value=json.dumps(value).encode())
    producer.flush()
    producer.close()

    rows = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", local_stack.kafka.bootstrap_servers)
        .option("subscribe", unique_name)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS payload")
        .collect()
    )

    assert {row["key"]: json.loads(row["payload"]) for row in rows} == expected
