"""Kafka with replication: a 3-node KRaft cluster of the local stack (its own nodes and ports,
started for this module); one broker SIGKILLed during a full-speed replay and during a
continuous run loses and duplicates nothing, and both sinks end exact."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import ConfigResource

import local_stack as stack
from crypto_pipeline.clients import ensure_topic, iter_records, kafka_admin
from crypto_pipeline.settings import REPO_ROOT, KafkaTarget, Settings
from tests.conftest import SHARED_DATA
from tests.expected_ohlcv import expected_aggregates, read_csv_rows
from tests.integration.dagster_helpers import wait_until
from tests.integration.job_helpers import job_for, start_job
from tests.integration.test_faults import start_replay, wait_until_replay_under_way
from tests.integration.test_poison_and_late import stop, wait_until_committed
from tests.integration.test_spark_job import assert_sinks_match

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
SHARED_Q1 = SHARED_DATA / "binance_spot_15m_10sym_2025Q1.csv.gz"
NODES = ("kafka-1", "kafka-2", "kafka-3")
FIRST_PORT = 19092


@pytest.fixture(scope="module")
def kafka_cluster(
    local_stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The stack's MongoDB and InfluxDB, with Kafka a 3-node cluster of its own."""
    servers = ",".join(f"127.0.0.1:{FIRST_PORT + 2 * i}" for i in range(3))
    cluster = dataclasses.replace(
        local_stack,
        kafka=KafkaTarget(servers, local_stack.kafka.topic),
        kafka_controller_port=FIRST_PORT + 1,
        kafka_brokers=3,
        stack_dir=tmp_path_factory.mktemp("kafka_cluster"),
    )
    stack.up(cluster, only=set(NODES))
    try:
        yield cluster
    finally:
        # A throwaway cluster: SIGKILL, since a graceful stop of the last nodes waits on the
        # quorum the first ones took with them (30-40 s).
        for node in NODES:
            with contextlib.suppress(stack.StackError):  # a node a failed test left stopped
                stack.kill(cluster, node)
        stack.down(cluster, only=set(NODES))


def test_topics_are_replicated_three_times_with_two_in_sync_required(
    kafka_cluster: Settings, unique_name: str
) -> None:
    ensure_topic(kafka_cluster.kafka.bootstrap_servers, unique_name, partitions=3)
    admin = kafka_admin(kafka_cluster.kafka.bootstrap_servers)
    try:
        # A new topic's partitions reach every broker's metadata a moment after it is created.
        (described,) = wait_until(
            lambda: [t for t in admin.describe_topics([unique_name]) if t["partitions"]],
            30,
            "the topic's partitions in the metadata",
        )
        configs = admin.describe_configs(
            [ConfigResource("TOPIC", unique_name, ["min.insync.replicas"])]
        )
    finally:
        admin.close()
    assert [len(p["replica_nodes"]) for p in described["partitions"]] == [3, 3, 3]
    assert configs["topic"][unique_name]["min.insync.replicas"]["value"] == "2"


def test_a_broker_killed_during_a_full_speed_replay_loses_nothing(
    kafka_cluster: Settings, unique_name: str, tmp_path: Path
) -> None:
    path = SHARED_Q1 if SHARED_Q1.exists() else SAMPLE
    rows = read_csv_rows(path)
    log = tmp_path / "replay.log"
    replay = start_replay(kafka_cluster, path, unique_name, "max", log)
    wait_until_replay_under_way(kafka_cluster, unique_name, len(rows))
    stack.kill(kafka_cluster, "kafka-2")
    try:
        assert replay.wait(timeout=300) == 0, log.read_text()[-2000:]
    finally:
        stack.up(kafka_cluster, only={"kafka-2"})
    records = iter_records(kafka_cluster.kafka.bootstrap_servers, unique_name)
    lines = Counter(json.loads(r.value)["source_line"] for r in records)
    assert len(lines) == len(rows) and max(lines.values()) == 1


def test_a_broker_killed_during_a_continuous_run_ends_exact(
    kafka_cluster: Settings, unique_name: str, tmp_path: Path
) -> None:
    ensure_topic(kafka_cluster.kafka.bootstrap_servers, unique_name, partitions=3)
    job = job_for(
        kafka_cluster, unique_name, tmp_path / "ckpt", windows=("5m", "1h"), trigger="1 second"
    )
    process = start_job(job)
    # The sample in 60 s: the broker dies while the replay still sends, even when a busy machine
    # makes the job's first batch take the whole sample's first half.
    replay = start_replay(
        kafka_cluster, SAMPLE, unique_name, str(2 * 86_400 / 60), tmp_path / "replay.log"
    )
    commits = Path(job.checkpoint_dir) / "ohlcv" / "commits"
    try:
        wait_until(lambda: any(commits.glob("[0-9]*")), 180, "a batch committed")
        stack.kill(kafka_cluster, "kafka-3")
        assert replay.wait(timeout=300) == 0
        wait_until_committed(job, process)
        assert process.poll() is None
    except BaseException:
        process.kill()
        raise
    finally:
        replay.kill()
        stack.up(kafka_cluster, only={"kafka-3"})
    stop(process)
    assert_sinks_match(
        kafka_cluster, unique_name, expected_aggregates(read_csv_rows(SAMPLE), ("5m", "1h"))
    )
