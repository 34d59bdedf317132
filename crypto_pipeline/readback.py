"""Reading the aggregates back from both sinks into one shape, for checks and tests:
(exchange, symbol, window, window_start_ms) -> {field: value}."""

from __future__ import annotations

from crypto_pipeline.clients import influx_client, mongo_client
from crypto_pipeline.formats import influx_point, window_document
from crypto_pipeline.formats.window_values import Aggregates, epoch_ms, window_id
from crypto_pipeline.settings import InfluxTarget, MongoTarget


def flux_string(value: str) -> str:
    """`value` as a Flux string literal: quotes, backslashes and `${` (interpolation) escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def influx_measurement_query(target: InfluxTarget, measurement: str, then: str) -> str:
    """Flux over all time of one measurement of the target's bucket, followed by `then`."""
    return (
        f"from(bucket: {flux_string(target.bucket)})"
        " |> range(start: 1970-01-01T00:00:00Z, stop: 2100-01-01T00:00:00Z)"
        f" |> filter(fn: (r) => r._measurement == {flux_string(measurement)})" + then
    )


def read_mongo(target: MongoTarget) -> tuple[Aggregates, list[str]]:
    """All aggregate documents, and the `_id`s that do not match their own key."""
    result: Aggregates = {}
    bad_ids = []
    with mongo_client(target.uri) as client:
        for document in client[target.database][target.collection].find({}):
            key, values = window_document.decode(document)
            if document["_id"] != window_id(*key):
                bad_ids.append(str(document["_id"]))
            result[key] = values
    return result, bad_ids


def read_influx(target: InfluxTarget) -> Aggregates:
    """Every point of the measurement (influx_point.py)."""
    query = influx_measurement_query(target, target.measurement, influx_point.PIVOT)
    result: Aggregates = {}
    with influx_client(target) as client:
        for table in client.query_api().query(query):
            for record in table.records:
                time_ms = epoch_ms(record.get_time())
                key, values = influx_point.decode(record.values, time_ms)
                result[key] = values
    return result


def newest_mongo_event_ms(target: MongoTarget) -> int | None:
    """The latest `last_event_ms` of any aggregate document (None if there is none)."""
    with mongo_client(target.uri) as client:
        docs = list(
            client[target.database][target.collection]
            .find({}, {"last_event_ms": 1})
            .sort("last_event_ms", -1)
            .limit(1)
        )
    return int(docs[0]["last_event_ms"]) if docs else None


def newest_influx_event_ms(target: InfluxTarget) -> int | None:
    """The latest `last_event_ms` field of any point of the measurement (None if there is none)."""
    query = influx_measurement_query(
        target,
        target.measurement,
        ' |> filter(fn: (r) => r._field == "last_event_ms") |> group() |> max()',
    )
    with influx_client(target) as client:
        values = [r.get_value() for t in client.query_api().query(query) for r in t.records]
    return int(values[0]) if values else None
