"""The sink assets materialized through Dagster Pipes (spark-submit), and the continuous job under
Dagster with its health sensor, against the real stack."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_assets.aggregation.ohlcv_sinks import INFLUX_ASSET, MONGO_ASSET, ohlcv_sinks
from crypto_pipeline.clients import end_offsets
from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.settings import REPO_ROOT, Settings
from spark_jobs.interface.heartbeat import streaming_health
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.integration.dagster_helpers import resources_for, wait_until
from tests.integration.job_helpers import influx_of, job_for, mongo_of, replay_file, start_job

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"


def test_sink_assets_materialize_through_pipes_with_progress_metadata(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    replay_file(local_stack, SAMPLE, unique_name)

    result = dg.materialize(
        [ohlcv_sinks],
        resources=resources_for(local_stack, unique_name, tmp_path),
        run_config={"ops": {"ohlcv_sinks": {"config": {"windows": "1h"}}}},
    )

    assert result.success
    by_key = {m.asset_key: m for m in result.get_asset_materialization_events()}
    assert set(by_key) == {MONGO_ASSET, INFLUX_ASSET}
    metadata = by_key[MONGO_ASSET].materialization.metadata
    assert metadata["input_rows"].value == 8640
    assert metadata["dead_letters"].value == 0
    assert metadata["late_rows"].value == 0
    # One batch: each of the 3 symbols x 48 hourly windows written once.
    assert (metadata["batches"].value, metadata["windows_written"].value) == (1, 144)
    # The resource's checkpoint rule, under the resource's state directory.
    assert metadata["checkpoint_dir"].value == str(tmp_path / "checkpoints" / unique_name)
    expected = expected_aggregates(read_csv_rows(SAMPLE), ("1h",))
    mongo, _ = read_mongo(mongo_of(local_stack, unique_name))
    assert mismatches(expected, mongo) == []
    assert mismatches(expected, read_influx(influx_of(local_stack, unique_name))) == []


def test_continuous_job_picks_up_new_rows_and_reports_health(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """The job keeps running; rows replayed while it runs appear in both sinks within a few
    trigger intervals; its heartbeat gives alive, progress time and zero lag."""
    status = tmp_path / "status.json"
    rows = read_csv_rows(SAMPLE, {"BTCUSDT"})
    first, later = rows[:600], rows[600:1200]
    csv_path = tmp_path / "part.csv"

    def write_rows(selected: list[dict[str, Any]]) -> None:
        header = "open_time_ms,symbol,open,high,low,close,volume,quote_volume,trades"
        lines = [
            f"{r['t']},{r['symbol']},{r['open']!r},{r['high']!r},{r['low']!r},{r['close']!r},"
            f"{r['volume']!r},{r['quote_volume']!r},{r['trades']}"
            for r in selected
        ]
        csv_path.write_text("\n".join([header, *lines]) + "\n")

    write_rows(first)
    replay_file(local_stack, csv_path, unique_name)
    stream = job_for(
        local_stack,
        unique_name,
        tmp_path / "ckpt",
        trigger="2 seconds",
        windows=("5m",),
        status_file=str(status),
    )
    job = start_job(stream)
    try:
        expected = expected_aggregates(first, ("5m",))
        wait_until(lambda: not mismatches(expected, read_influx(stream.influx)), 240)

        write_rows(later)
        started = time.monotonic()
        replay_file(local_stack, csv_path, unique_name)
        expected = expected_aggregates(first + later, ("5m",))

        def both_sinks_current() -> bool:
            mongo, _ = read_mongo(stream.mongo)
            influx = read_influx(stream.influx)
            return not mismatches(expected, mongo) and not mismatches(expected, influx)

        wait_until(both_sinks_current, 120)
        # "within a few trigger intervals" on 2 cores: generous, but bounded.
        assert time.monotonic() - started < 60

        def caught_up() -> dict[str, Any] | None:
            # Every query, the dead letters' too, has reported a batch up to the end offsets.
            latest = end_offsets(local_stack.kafka.bootstrap_servers, unique_name)
            health = streaming_health(
                json.loads(status.read_text()), unique_name, latest, time.time()
            )
            return health if health["kafka_lag_messages"] == 0 else None

        health = wait_until(caught_up, 60, "zero lag in the heartbeat")
        assert health["alive"] is True
        assert health["seconds_since_progress"] < 30
    finally:
        job.terminate()
        assert job.wait(timeout=120) == 0
