from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_assets.aggregation.launcher import refuse_if_streaming
from crypto_assets.ingestion import incoming_files
from crypto_assets.ingestion.incoming_files import (
    INCOMING_FILE_TAG,
    file_digest,
    incoming_files_sensor,
)
from crypto_assets.resources import IncomingFilesResource, SparkResource
from crypto_pipeline.processes import identity_of
from spark_jobs.interface.heartbeat import running_stream_pid


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


def settled(*paths: Path) -> None:
    """As if written a minute ago: past the sensor's settling time."""
    for path in paths:
        past = time.time() - 60
        os.utime(path, (past, past), follow_symlinks=False)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def tick(cursor: str | None, folder: Path, instance: dg.DagsterInstance) -> dg.SensorResult:
    resources = {"incoming": IncomingFilesResource(folder=str(folder))}
    context = dg.build_sensor_context(cursor=cursor, resources=resources, instance=instance)
    result = incoming_files_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def digests(cursor: str | None) -> dict[str, str]:
    return {path: seen["digest"] for path, seen in json.loads(cursor or "").items()}


def test_an_unchanged_file_is_not_read_again_on_later_ticks(
    incoming: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, every tick hashed every file of the folder: its cost grew with the folder until
    the sensor timed out. Now a file whose size and mtime did not change is not read."""
    for name in ("a.csv", "b.csv"):
        (incoming / name).write_text("open_time_ms,symbol,open,high,low,close,volume\n")
        settled(incoming / name)
    hashed: list[Path] = []

    def counting_digest(path: Path) -> str:
        hashed.append(path)
        return file_digest(path)

    monkeypatch.setattr(incoming_files, "file_digest", counting_digest)
    cursor = tick(None, incoming, instance).cursor
    assert len(hashed) == 2
    for _ in range(3):
        later = tick(cursor, incoming, instance)
        assert later.run_requests == [] and later.cursor == cursor
    assert len(hashed) == 2
    (incoming / "b.csv").write_text("open_time_ms,symbol,open,high,low,close,volume\n\n")
    settled(incoming / "b.csv")
    assert [r.tags["source_file"] for r in tick(cursor, incoming, instance).run_requests or []] == [
        "b.csv"
    ]
    assert hashed[2:] == [incoming / "b.csv"]


def test_same_file_twice_gives_one_run_and_a_change_gives_another(
    incoming: Path, instance: dg.DagsterInstance
) -> None:
    csv_file = incoming / "btc.csv"
    csv_file.write_text("open_time_ms,symbol,open,high,low,close,volume\n")
    (incoming / "notes.txt").write_text("not replayable")
    settled(csv_file)

    first = tick(None, incoming, instance)
    digest = file_digest(csv_file)
    assert [(r.run_key, r.run_config) for r in first.run_requests or []] == [
        (
            f"{csv_file}:{digest}",
            {"ops": {"kafka_klines": {"config": {"path": str(csv_file)}}}},
        )
    ]
    assert digests(first.cursor) == {str(csv_file): digest}

    second = tick(first.cursor, incoming, instance)
    assert second.run_requests == []
    assert second.cursor == first.cursor

    csv_file.write_text("open_time_ms,symbol,open,high,low,close,volume\n60000,X,1,2,0.5,1,3\n")
    settled(csv_file)
    third = tick(second.cursor, incoming, instance)
    new_digest = file_digest(csv_file)
    assert new_digest != digest
    assert [r.run_key for r in third.run_requests or []] == [f"{csv_file}:{new_digest}"]
    assert digests(third.cursor) == {str(csv_file): new_digest}


def test_gzip_files_are_picked_up_in_name_order(
    incoming: Path, instance: dg.DagsterInstance
) -> None:
    (incoming / "b.csv.gz").write_bytes(gzip.compress(b"x"))
    (incoming / "a.csv").write_text("y")
    settled(incoming / "b.csv.gz", incoming / "a.csv")
    paths = [
        r.run_config["ops"]["kafka_klines"]["config"]["path"]
        for r in tick(None, incoming, instance).run_requests or []
    ]
    assert paths == [str(incoming / "a.csv"), str(incoming / "b.csv.gz")]


def test_missing_folder_requests_nothing(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    result = tick(None, tmp_path / "absent", instance)
    assert result.run_requests == []
    assert result.cursor == "{}"


def test_no_second_spark_job_starts_on_the_checkpoints_of_a_running_stream(
    tmp_path: Path,
) -> None:
    spark = SparkResource(
        master="local[1]", driver_host="127.0.0.1", connectors_dir="/jars", state_dir=str(tmp_path)
    )
    status = spark.status_file("t")
    assert status == tmp_path / "streaming" / "t.json"
    refuse_if_streaming(spark, "t")  # no heartbeat: free to start
    status.parent.mkdir(parents=True)
    status.write_text(json.dumps({"pid": os.getpid(), "pid_identity": identity_of(os.getpid())}))
    assert running_stream_pid(status) == os.getpid()
    with pytest.raises(dg.Failure, match=f"continuous job \\(pid {os.getpid()}\\)"):
        refuse_if_streaming(spark, "t")
    status.write_text(json.dumps({"pid": 2**22 + 1}))  # above pid_max: never alive
    assert running_stream_pid(status) is None


def test_files_still_changing_hidden_or_symlinked_wait_or_are_ignored(
    incoming: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    fresh = incoming / "fresh.csv"
    fresh.write_text("y")
    (incoming / ".copying.csv").write_text("y")
    outside = tmp_path / "outside.csv"
    outside.write_text("y")
    (incoming / "link.csv").symlink_to(outside)
    settled(incoming / ".copying.csv", outside, incoming / "link.csv")

    assert tick(None, incoming, instance).run_requests == []  # fresh.csv has not settled yet
    settled(fresh)
    assert [r.run_key for r in tick(None, incoming, instance).run_requests or []] == [
        f"{fresh}:{file_digest(fresh)}"
    ]


def test_an_unreadable_file_does_not_hold_up_the_others(
    incoming: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreadable, readable = incoming / "a.csv", incoming / "b.csv"
    unreadable.write_text("x")
    readable.write_text("y")
    settled(unreadable, readable)
    digest = file_digest(readable)

    def read_or_refuse(path: Path) -> str:  # what a file without read permission does
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return digest

    monkeypatch.setattr(incoming_files, "file_digest", read_or_refuse)
    assert [r.run_key for r in tick(None, incoming, instance).run_requests or []] == [
        f"{readable}:{digest}"
    ]


def test_a_failed_replay_is_requested_again_up_to_three_attempts(
    incoming: Path, instance: dg.DagsterInstance
) -> None:
    csv_file = incoming / "btc.csv"
    csv_file.write_text("y")
    settled(csv_file)
    key = f"{csv_file}:{file_digest(csv_file)}"
    first = tick(None, incoming, instance)
    assert [r.run_key for r in first.run_requests or []] == [key]
    cursor = first.cursor
    for attempt in (2, 3):
        instance.add_run(failed_run(key, attempt))
        retried = tick(cursor, incoming, instance)
        assert [(r.run_key, r.run_config) for r in retried.run_requests or []] == [
            (
                f"{key}:attempt-{attempt}",
                {"ops": {"kafka_klines": {"config": {"path": str(csv_file), "resume": True}}}},
            )
        ]
    instance.add_run(failed_run(key, 4))
    assert tick(cursor, incoming, instance).run_requests == []


def failed_run(key: str, attempt: int) -> dg.DagsterRun:
    return dg.DagsterRun(
        job_name="replay_job",
        run_id=f"00000000-0000-0000-0000-00000000000{attempt}",
        status=dg.DagsterRunStatus.FAILURE,
        tags={INCOMING_FILE_TAG: key},
    )
