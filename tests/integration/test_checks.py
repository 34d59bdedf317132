"""The asset checks on real sinks: all pass after a replay and the Spark job, and each fails, with
the offending key in its message, when a MongoDB document is corrupted, an InfluxDB point is
deleted, or messages are left in Kafka."""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from influxdb_client.client.write_api import SYNCHRONOUS

from crypto_assets.definitions import build_definitions
from crypto_pipeline.clients import influx_client, mongo_client
from crypto_pipeline.replay.row_fields import ms_to_iso
from crypto_pipeline.settings import REPO_ROOT, Settings
from tests.integration.dagster_helpers import resources_for
from tests.integration.job_helpers import influx_of, mongo_of

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
# The first 4h window of the sample; later replays never re-emit it (the watermark is past it).
FIRST_WINDOW = ("file", "BTCUSDT", "4h", 1735689600000)

Evaluations = dict[tuple[str, str], dg.AssetCheckEvaluation]


@dataclass
class Pipeline:
    settings: Settings
    name: str
    defs: dg.Definitions
    instance: dg.DagsterInstance
    first_run: Evaluations

    def run(self, job: str, run_config: dict[str, Any] | None = None) -> Evaluations:
        result = self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, run_config=run_config, raise_on_error=False
        )
        return {
            (e.asset_key.to_user_string(), e.check_name): e
            for e in result.get_asset_check_evaluations()
        }

    def checks(self) -> Evaluations:
        return {**self.run("reconciliation_job"), **self.run("freshness_job")}


def assert_all_pass(evaluations: Evaluations) -> None:
    failed = {key: e.description for key, e in evaluations.items() if not e.passed}
    assert not failed, failed


def statuses(evaluations: Evaluations) -> dict[tuple[str, str], str]:
    return {
        key: "passed" if e.passed else f"failed:{e.severity.value}"
        for key, e in evaluations.items()
    }


@pytest.fixture(scope="module")
def pipeline(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    name = f"t_checks_{uuid.uuid4().hex[:8]}"
    defs = build_definitions(resources_for(local_stack, name, tmp_path_factory.mktemp("state")))
    with dg.DagsterInstance.ephemeral() as instance:
        replayed = defs.resolve_job_def("replay_job").execute_in_process(instance=instance)
        assert replayed.success
        pipeline = Pipeline(local_stack, name, defs, instance, {})
        pipeline.first_run = pipeline.run("ohlcv_job", {"ops": {"ohlcv_sinks": {"config": {}}}})
        yield pipeline


def test_every_check_passes_after_a_replay_and_the_job(pipeline: Pipeline) -> None:
    evaluations = pipeline.first_run
    assert_all_pass(evaluations)
    assert {check for _, check in evaluations} == {
        "sinks_agree",
        "matches_source",
        "nothing_left_behind",
        "late_rows_repaired",
        "no_gaps",
        "fresh",
    }
    assert {asset for asset, _ in evaluations} == {"mongo_realtime", "influx_ohlcv"}
    agree = evaluations[("mongo_realtime", "sinks_agree")].metadata
    assert agree["mongodb_aggregates"].value == agree["influxdb_aggregates"].value == 1908
    source = evaluations[("influx_ohlcv", "matches_source")].metadata
    assert source["expected_aggregates"].value == source["keys_compared"].value == 1908
    left = evaluations[("mongo_realtime", "nothing_left_behind")].metadata
    assert left["dead_letters"].value == 0
    assert set(left["messages_not_committed_per_query"].value.values()) == {0}  # type: ignore[union-attr]


def test_a_corrupted_mongodb_document_fails_agreement_and_source(pipeline: Pipeline) -> None:
    doc_id = "|".join(map(str, FIRST_WINDOW))
    mongo = mongo_of(pipeline.settings, pipeline.name)
    with mongo_client(mongo.uri) as client:
        collection = client[mongo.database][mongo.collection]
        original = collection.find_one({"_id": doc_id})
        assert original is not None
        collection.update_one({"_id": doc_id}, {"$set": {"close": original["close"] * 1.001}})
        try:
            evaluations = pipeline.checks()
        finally:
            collection.update_one({"_id": doc_id}, {"$set": {"close": original["close"]}})

    assert statuses(evaluations) == {
        ("mongo_realtime", "sinks_agree"): "failed:ERROR",
        ("influx_ohlcv", "sinks_agree"): "failed:ERROR",
        ("mongo_realtime", "matches_source"): "failed:ERROR",
        ("influx_ohlcv", "matches_source"): "passed",
        ("mongo_realtime", "nothing_left_behind"): "passed",
        ("influx_ohlcv", "nothing_left_behind"): "passed",
        ("mongo_realtime", "late_rows_repaired"): "passed",
        ("influx_ohlcv", "late_rows_repaired"): "passed",
        ("mongo_realtime", "no_gaps"): "passed",
        ("influx_ohlcv", "no_gaps"): "passed",
        ("mongo_realtime", "fresh"): "passed",
        ("influx_ohlcv", "fresh"): "passed",
    }
    description = evaluations[("mongo_realtime", "matches_source")].description or ""
    assert f"1 values differ (e.g. {doc_id} close:" in description
    assert "values_different" in evaluations[("influx_ohlcv", "sinks_agree")].metadata
    assert_all_pass(pipeline.checks())  # restored


def influxql(settings: Settings, statement: str) -> None:
    query = urllib.parse.urlencode({"db": settings.influx.database, "q": statement})
    request = urllib.request.Request(f"{settings.influx.url}/query?{query}", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_a_deleted_influxdb_point_fails_agreement_and_source(pipeline: Pipeline) -> None:
    _, symbol, window, start_ms = FIRST_WINDOW
    point = datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    influx = influx_of(pipeline.settings, pipeline.name)
    with influx_client(influx) as client:
        flux = (
            f'from(bucket: "{influx.bucket}") |> range(start: {point}, '
            f'stop: 2025-01-01T00:00:01Z) |> filter(fn: (r) => r._measurement == "{pipeline.name}"'
            f' and r.symbol == "{symbol}" and r.window == "{window}")'
        )
        saved = [r for table in client.query_api().query(flux) for r in table.records]
    assert saved
    influxql(
        pipeline.settings,
        f"DELETE FROM \"{pipeline.name}\" WHERE symbol = '{symbol}' AND \"window\" = '{window}' "
        f"AND time = '{point}'",
    )
    try:
        evaluations = pipeline.checks()
    finally:
        with influx_client(influx) as client:
            client.write_api(write_options=SYNCHRONOUS).write(
                bucket=influx.bucket,
                record=[
                    line_for(r.get_measurement(), r.values, r.get_field(), r.get_value())
                    for r in saved
                ],
            )

    failed = {key for key, status in statuses(evaluations).items() if status != "passed"}
    assert failed == {
        ("mongo_realtime", "sinks_agree"),
        ("influx_ohlcv", "sinks_agree"),
        ("influx_ohlcv", "matches_source"),
    }
    label = "|".join(map(str, FIRST_WINDOW))
    assert label in (evaluations[("influx_ohlcv", "matches_source")].description or "")
    agree = evaluations[("mongo_realtime", "sinks_agree")].metadata
    assert agree["sample_only_in_mongodb"].value == [label]
    assert_all_pass(pipeline.checks())  # restored


def line_for(measurement: str, values: dict[str, Any], field: str, value: Any) -> str:
    """One field of a point as line protocol, integers and strings marked as such."""
    if value is None or isinstance(value, str):  # Flux reads an empty string as None
        rendered = f'"{value or ""}"'
    else:
        rendered = f"{value}i" if isinstance(value, int) else repr(value)
    stamp = int(values["_time"].timestamp()) * 1_000_000_000
    return (
        f"{measurement},exchange={values['exchange']},symbol={values['symbol']},"
        f"window={values['window']} "
        f"{field}={rendered} {stamp}"
    )


def test_unconsumed_messages_and_dead_letters_fail_nothing_left_behind(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Runs last in this module: it adds rows a day after the sample to the topic."""
    late = tmp_path / "late.csv"
    late.write_text(
        "open_time_ms,symbol,open,high,low,close,volume,quote_volume,trades\n"
        "1735948800000,BTCUSDT,1,2,0.5,1.5,10,15,3\n"
        "1735948860000,BTCUSDT,1.5,2,1,1,10,12,4\n"
        "1735948920000,BTCUSDT,1,1,1,abc,10,10,1\n"
        "1735948980000,BTCUSDT,1,0.5,2,1,10,10,1\n"
    )
    replay_late = {"ops": {"kafka_klines": {"config": {"path": str(late)}}}}
    assert (
        pipeline.defs.resolve_job_def("replay_job")
        .execute_in_process(instance=pipeline.instance, run_config=replay_late)
        .success
    )

    evaluations = pipeline.checks()

    left = evaluations[("mongo_realtime", "nothing_left_behind")]
    assert not left.passed
    assert left.severity == dg.AssetCheckSeverity.ERROR
    lags: Any = left.metadata["messages_not_committed_per_query"].value
    assert lags == {"ohlcv": 2}
    assert left.metadata["dead_letters"].value == 2
    fresh = evaluations[("influx_ohlcv", "fresh")]
    assert not fresh.passed
    assert fresh.metadata["lag_minutes"].value == 24 * 60 + 2

    after_job = pipeline.run("ohlcv_job", {"ops": {"ohlcv_sinks": {"config": {}}}})
    left = after_job[("mongo_realtime", "nothing_left_behind")]
    assert not left.passed
    assert left.severity == dg.AssetCheckSeverity.WARN
    assert left.metadata["dead_letter_reasons"].value == {
        "close is not a number": 1,
        "high < low": 1,
    }, left.metadata["dead_letter_reasons"]
    assert after_job[("mongo_realtime", "sinks_agree")].passed
    assert after_job[("mongo_realtime", "matches_source")].passed
    assert after_job[("mongo_realtime", "fresh")].passed
    # The file skips a day of BTCUSDT: a gap in the topic, listed with its span.
    gaps = after_job[("influx_ohlcv", "no_gaps")]
    assert not gaps.passed
    span = f"{ms_to_iso(1735862400000)} .. {ms_to_iso(1735948800000)}"
    assert gaps.metadata["gaps_in_topic"].value == {"file:BTCUSDT": [span]}
