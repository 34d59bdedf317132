"""Sinks and a checkpoint written before windows had an exchange: the job refuses them until
`crypto-pipeline migrate-keys` has moved the sinks in place; then the job continues on the old
checkpoint (its state re-keyed) and both sinks equal the independent reference of every row.

The old format is written here by hand, as the previous version stored it: `_id`
SYMBOL|window|start and no `exchange` in MongoDB, no `exchange` tag in InfluxDB, ledger entries
without `exchange`, frontiers per symbol, the checkpoint's state keyed by symbol and its stamp
without `series`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from influxdb_client.client.write_api import SYNCHRONOUS
from kafka import KafkaProducer

from crypto_pipeline.clients import ensure_topic, influx_client, mongo_client
from crypto_pipeline.formats.window_values import AGGREGATE_FIELDS, INTEGER_FIELDS
from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.settings import REPO_ROOT, InfluxTarget, Settings
from spark_jobs.state_store import rename_series
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.integration.job_helpers import job_for, replay_file, run_job

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
WINDOWS = ("5m", "1h")
# 6.5 hours of 3 symbols, then 5.5 more: an hour holds candles of both runs, so a state not
# re-keyed (the hour started afresh) would show.
FIRST, MORE = 1_170, 990


def influxql(target: InfluxTarget, statement: str) -> None:
    query = urllib.parse.urlencode({"db": target.database, "q": statement})
    with urllib.request.urlopen(
        urllib.request.Request(f"{target.url}/query?{query}", method="POST"), timeout=30
    ) as response:
        assert "error" not in json.load(response)


def old_line(measurement: str, symbol: str, window: str, start: int, values: dict) -> str:
    """A point as the previous version wrote it: tags symbol and window only."""
    fields = [
        f"{name}={int(values[name])}i" if name in INTEGER_FIELDS else f"{name}={values[name]!r}"
        for name in AGGREGATE_FIELDS
        if values[name] is not None
    ]
    nulls = ",".join(name for name in AGGREGATE_FIELDS if values[name] is None)
    fields.append(f'null_fields="{nulls}"')
    return f"{measurement},symbol={symbol},window={window} {','.join(fields)} {start}"


def make_old(settings: Settings, name: str, checkpoint: Path) -> int:
    """The job's output turned into the previous version's; returns the windows stored."""
    job = job_for(settings, name, checkpoint)
    with mongo_client(job.mongo.uri) as client:
        database = client[job.mongo.database]
        windows = database[job.mongo.collection]
        documents = list(windows.find({}))
        windows.delete_many({})
        for document in documents:
            del document["exchange"]
            document["_id"] = document["_id"].removeprefix("file|")
        windows.insert_many(documents)
        # The writers' documents: frontiers per symbol, the old index marker, no keys check.
        writers = database[job.mongo.writers_collection]
        for document in list(writers.find({})):
            writers.delete_one({"_id": document["_id"]})
            if document["_id"].startswith("frontier|"):
                document["_id"] = "frontier|" + document["_id"].partition(":")[2]
            elif document["_id"].startswith("frontiers-indexed"):
                document["_id"] = "frontiers-indexed"
            elif document["_id"].startswith("keys-checked"):
                continue
            writers.insert_one(document)
        database[job.mongo.late_collection].insert_one(
            {"_id": "old-entry", "topic": "other", "symbol": "BTCUSDT", "repaired_at": 1}
        )
    points = read_influx(job.influx)
    influxql(job.influx, f'DROP SERIES FROM "{name}" WHERE "exchange" = \'file\'')
    with influx_client(job.influx) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=job.influx.bucket,
            record=[old_line(name, s, w, t, v) for (_, s, w, t), v in points.items()],
            write_precision="ms",
        )
    rename_series(checkpoint / "state", lambda key: key.partition(":")[2])
    stamp = checkpoint / "job.json"
    stamp.write_text(
        json.dumps({k: v for k, v in json.loads(stamp.read_text()).items() if k != "series"})
    )
    return len(documents)


def test_old_keys_are_refused_then_migrated_in_place_and_the_stream_continues_exactly(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint"
    job = job_for(local_stack, unique_name, checkpoint, windows=WINDOWS)
    replay_file(local_stack, SAMPLE, unique_name, limit=FIRST)
    assert run_job(job).returncode == 0
    stored = make_old(local_stack, unique_name, checkpoint)
    assert stored == len(expected_aggregates(read_csv_rows(SAMPLE)[:FIRST], WINDOWS))

    refused = run_job(job)
    assert refused.returncode == 2
    assert "keyed by symbol alone" in refused.stderr and "migrate-keys" in refused.stderr

    env = {
        **os.environ,
        "KAFKA_TOPIC": unique_name,
        "MONGO_DATABASE": unique_name,
        "INFLUXDB_MEASUREMENT": unique_name,
    }

    def migrate_keys(**changes: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "crypto_cli", "migrate-keys"]
        return subprocess.run(
            command, env={**env, **changes}, capture_output=True, text=True, timeout=300
        )

    # A topic a live feed wrote to: its old windows mixed exchanges, so nothing is moved.
    live_topic = f"{unique_name}_live"
    ensure_topic(local_stack.kafka.bootstrap_servers, live_topic, partitions=1)
    with KafkaProducer(bootstrap_servers=local_stack.kafka.bootstrap_servers) as producer:
        producer.send(live_topic, b'{"symbol":"BTCUSDT","exchange":"binance"}').get(timeout=30)
    mixed = migrate_keys(KAFKA_TOPIC=live_topic)
    assert mixed.returncode == 1 and len(mixed.stderr.strip().splitlines()) == 1, mixed.stderr
    assert "live-feed messages" in mixed.stderr

    moved = f"migrated {stored:,} MongoDB windows, 1 ledger entries and {stored:,} InfluxDB points"
    first = migrate_keys()
    assert first.returncode == 0 and moved in first.stdout, first.stdout + first.stderr
    # Run again, nothing is left to move.
    again = migrate_keys().stdout
    assert "migrated 0 MongoDB windows, 0 ledger entries and 0 InfluxDB points" in again
    with mongo_client(job.mongo.uri) as client:
        database = client[job.mongo.database]
        assert database[job.mongo.collection].count_documents({"exchange": "file"}) == stored
        entry = database[job.mongo.late_collection].find_one({"_id": "old-entry"})
        assert entry is not None and entry["exchange"] == "file"

    # The stream goes on from its old checkpoint: the next six hours, then everything exact.
    rows = read_csv_rows(SAMPLE)[: FIRST + MORE]
    replay_file(local_stack, SAMPLE, unique_name, start_ms=rows[FIRST]["t"], limit=MORE)
    continued = run_job(job)
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert "re-keyed to file series" in continued.stderr
    expected = expected_aggregates(rows, WINDOWS)
    mongo, bad_ids = read_mongo(job.mongo)
    assert bad_ids == []
    assert mismatches(expected, mongo)[:10] == []
    assert mismatches(expected, read_influx(job.influx))[:10] == []
