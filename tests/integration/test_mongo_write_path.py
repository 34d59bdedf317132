"""The one MongoDB write path, the one docker compose runs against MongoDB: replace-upserts by `_id`
in unordered bulk writes of 512, inserts for windows no writer has stored (spark_jobs/sinks.py),
here on the local stack's FerretDB built with the patches in local_stack/ferretdb/patches (each
patch's test below fails without it)."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest
from pymongo import ReplaceOne

from crypto_pipeline.clients import mongo_client
from crypto_pipeline.formats import window_document
from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.settings import REPO_ROOT, Settings
from spark_jobs.sinks import StoredAfterAll, aggregate_columns, write_mongo
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.integration.job_helpers import job_for, replay_file, run_job

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
# FerretDB's backend pool holds ~100 connections on SQLite: a command must match more documents.
MORE_THAN_THE_POOL = 1_000


def test_one_bulk_replace_of_more_existing_documents_than_the_pool_holds_completes(
    local_stack: Settings, unique_name: str
) -> None:
    """Patch 0001: unpatched, this single update command deadlocks the whole server."""
    with mongo_client(local_stack.mongo.uri) as client:
        collection = client[unique_name]["docs"]
        collection.insert_many([{"_id": f"k{i}", "v": i} for i in range(MORE_THAN_THE_POOL)])
        replaced = collection.bulk_write(
            [
                ReplaceOne({"_id": f"k{i}"}, {"_id": f"k{i}", "v": -i - 1}, upsert=True)
                for i in range(MORE_THAN_THE_POOL)
            ]
        )
        assert (replaced.matched_count, replaced.modified_count) == (MORE_THAN_THE_POOL,) * 2
        values = {doc["_id"]: doc["v"] for doc in collection.find({})}
    assert values == {f"k{i}": -i - 1 for i in range(MORE_THAN_THE_POOL)}


def test_lookups_by_id_use_the_id_index(local_stack: Settings, unique_name: str) -> None:
    """Patch 0002: unpatched, SQLite scans the whole table for every `_id` (the plan says SCAN)."""
    with mongo_client(local_stack.mongo.uri) as client:
        client[unique_name]["docs"].insert_many([{"_id": f"k{i}"} for i in range(10)])
        explained = client[unique_name].command(
            "explain", {"find": "docs", "filter": {"_id": "k3"}}
        )
    (plan,) = explained["queryPlanner"]["Plan"]
    assert "SEARCH" in plan and "USING INDEX" in plan and "__id_" in plan, plan


def test_concurrent_upserts_of_the_same_new_documents_all_succeed(
    local_stack: Settings, unique_name: str
) -> None:
    """Patch 0004: unpatched, an upsert racing another writer's insert of the same `_id` fails
    its whole command (seen in two of three runs of exactly this)."""
    writers = 4
    start = threading.Barrier(writers)
    errors: list[str] = []

    def upsert_all(writer: int) -> None:
        with mongo_client(local_stack.mongo.uri) as client:
            collection = client[unique_name]["docs"]
            ops = [
                ReplaceOne({"_id": f"k{i}"}, {"_id": f"k{i}", "writer": writer}, upsert=True)
                for i in range(3_000)
            ]
            start.wait()
            try:
                for first in range(0, len(ops), 512):
                    collection.bulk_write(ops[first : first + 512], ordered=False)
            except Exception as error:  # collected: the assertion below shows them
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=upsert_all, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with mongo_client(local_stack.mongo.uri) as client:
        documents = list(client[unique_name]["docs"].find({}))
    assert len(documents) == 3_000
    assert {doc["writer"] for doc in documents} <= set(range(writers))


def test_concurrent_jobs_upserting_the_same_windows_end_exact(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """Two jobs on the same topic (own checkpoints) write the same windows into one collection at
    the same time, each with four connector writers: both succeed and every window equals the
    independent recomputation, once."""
    replay_file(local_stack, SAMPLE, unique_name)
    jobs = [
        job_for(local_stack, unique_name, tmp_path / f"ckpt-{n}", mongo_writers=4) for n in (1, 2)
    ]
    results: dict[int, int] = {}
    errors: dict[int, str] = {}

    def run(index: int) -> None:
        finished = run_job(jobs[index])
        results[index] = finished.returncode
        errors[index] = finished.stderr[-3000:]

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {0: 0, 1: 0}, errors
    expected = expected_aggregates(read_csv_rows(SAMPLE), jobs[0].windows)
    mongo, bad_ids = read_mongo(jobs[0].mongo)
    assert bad_ids == []
    assert mismatches(expected, mongo)[:10] == []
    assert len(mongo) == len(expected) == 1908
    assert mismatches(expected, read_influx(jobs[0].influx))[:10] == []


def hours(volume: float, count: int) -> pd.DataFrame:
    """`count` consecutive 1h windows of one series, each of volume `volume`."""
    starts = [1735689600000 + hour * 3_600_000 for hour in range(count)]
    return pd.DataFrame(
        {
            "symbol": ["file:BTCUSDT"] * count,
            "window": ["1h"] * count,
            "window_start_ms": starts,
            "window_end_ms": [start + 3_600_000 for start in starts],
            **{name: [1.0] * count for name in ("open", "high", "low", "close", "vwap")},
            "volume": [volume] * count,
            "quote_volume": [volume] * count,
            "trades": [60] * count,
            "rows": [60] * count,
            "first_event_ms": starts,
            "last_event_ms": [start + 59 * 60_000 for start in starts],
            "input_offsets": [{"0": hour} for hour in range(count)],
        }
    )


def test_windows_nobody_stored_are_inserted_and_one_stored_after_all_keeps_the_newer_version(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """The windows past the frontiers are inserted, not upserted. One found stored after all (a
    retry, or a writer whose lease lapsed) is replaced only by a version that covers the stored
    one; a newer stored version stays, and the write fails (and with it the batch)."""
    config = job_for(local_stack, unique_name, tmp_path / "ckpt")
    write_mongo(aggregate_columns(hours(volume=1.0, count=1)), config)  # the same input as below
    columns = aggregate_columns(hours(volume=2.0, count=MORE_THAN_THE_POOL))
    unstored = frozenset(doc["_id"] for doc in window_document.encode(columns))
    assert write_mongo(columns, config, unstored) == MORE_THAN_THE_POOL
    mongo, bad_ids = read_mongo(config.mongo)
    assert bad_ids == [] and len(mongo) == MORE_THAN_THE_POOL
    assert {values["volume"] for values in mongo.values()} == {2.0}

    newer = hours(volume=3.0, count=1).assign(input_offsets=[{"0": 10**6}])
    write_mongo(aggregate_columns(newer), config)
    with pytest.raises(StoredAfterAll, match="1 windows past the frontiers are stored"):
        write_mongo(columns, config, unstored)
    volumes = {key[3]: values["volume"] for key, values in read_mongo(config.mongo)[0].items()}
    first_hour = min(volumes)
    assert volumes.pop(first_hour) == 3.0
    assert set(volumes.values()) == {2.0} and len(volumes) == MORE_THAN_THE_POOL - 1
