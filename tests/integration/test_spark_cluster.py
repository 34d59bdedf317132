"""The job on the local stack's Spark standalone cluster (a master and two one-core workers,
started and stopped like the other services): its tasks run in executors on the workers, and
both sinks equal the independent reference, from the job's command line and from Dagster."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

import local_stack as stack
from crypto_assets.aggregation.ohlcv_sinks import ohlcv_sinks
from crypto_pipeline.settings import REPO_ROOT, Settings
from local_stack.spark_cluster import spark_master_state
from tests.conftest import SHARED_DATA
from tests.expected_ohlcv import expected_aggregates, read_csv_rows
from tests.integration.dagster_helpers import resources_for
from tests.integration.job_helpers import job_for, replay_file, run_job
from tests.integration.test_spark_job import assert_sinks_match

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
SHARED_Q1 = SHARED_DATA / "binance_spot_15m_10sym_2025Q1.csv.gz"
WINDOWS = ("1h", "4h")
CLUSTER = ("spark-master", "spark-worker-1", "spark-worker-2")


@pytest.fixture(scope="module")
def spark_cluster(local_stack: Settings) -> Iterator[Settings]:
    """The stack's settings with the cluster up and SPARK_MASTER pointing at it."""
    cluster = dataclasses.replace(local_stack, spark_workers=2)
    stack.up(cluster, only=set(CLUSTER))
    try:
        yield dataclasses.replace(cluster, spark_master=cluster.stack_spark_master)
    finally:
        stack.down(cluster, only=set(CLUSTER))


def executors_of(settings: Settings, app_name: str) -> dict[str, int]:
    """Executors per worker (by the worker's work folder) of the applications named so: each
    executor leaves `<work dir>/<app id>/<executor id>/`."""
    state = spark_master_state(settings)
    ids = {
        app["id"] for app in state["completedapps"] + state["activeapps"] if app["name"] == app_name
    }
    return {
        worker: sum(
            1 for app in ids for _ in (settings.stack_dir / "data" / worker / app).glob("*")
        )
        for worker in CLUSTER[1:]
    }


def test_the_job_on_a_two_worker_cluster_is_exact_from_the_cli_and_from_dagster(
    spark_cluster: Settings, unique_name: str, tmp_path: Path
) -> None:
    path = SHARED_Q1 if SHARED_Q1.exists() else SAMPLE
    replay_file(spark_cluster, path, unique_name)
    expected = expected_aggregates(read_csv_rows(path), WINDOWS)

    job = job_for(spark_cluster, unique_name, tmp_path / "ckpt", windows=WINDOWS)
    assert job.spark_master == f"spark://127.0.0.1:{spark_cluster.spark_master_port}"
    result = run_job(job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert executors_of(spark_cluster, f"crypto-ohlcv-{unique_name}") == {
        "spark-worker-1": 1,
        "spark-worker-2": 1,
    }
    assert_sinks_match(spark_cluster, unique_name, expected)

    # Dagster: the sink assets through Pipes and spark-submit, on the same cluster, from a new
    # checkpoint (every window written again: still exact).
    resources = resources_for(
        spark_cluster, unique_name, tmp_path / "dagster", spark_master=spark_cluster.spark_master
    )
    materialized = dg.materialize(
        [ohlcv_sinks],
        resources=resources,
        run_config={"ops": {"ohlcv_sinks": {"config": {"windows": ",".join(WINDOWS)}}}},
    )
    assert materialized.success
    assert executors_of(spark_cluster, f"crypto-ohlcv-{unique_name}") == {
        "spark-worker-1": 2,
        "spark-worker-2": 2,
    }
    assert_sinks_match(spark_cluster, unique_name, expected)
