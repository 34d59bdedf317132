from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from crypto_assets.assets.aggregates import refuse_if_streaming
from crypto_assets.resources import IncomingFilesResource, SparkResource
from crypto_assets.sensors import file_digest, incoming_files_sensor
from crypto_pipeline.stream_status import running_stream_pid


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


def tick(cursor: str | None, folder: Path) -> dg.SensorResult:
    resources = {"incoming": IncomingFilesResource(folder=str(folder))}
    result = incoming_files_sensor(dg.build_sensor_context(cursor=cursor, resources=resources))
    assert isinstance(result, dg.SensorResult)
    return result


def test_same_file_twice_gives_one_run_and_a_change_gives_another(incoming: Path) -> None:
    csv_file = incoming / "btc.csv"
    csv_file.write_text("open_time_ms,symbol,open,high,low,close,volume\n")
    (incoming / "notes.txt").write_text("not replayable")

    first = tick(None, incoming)
    digest = file_digest(csv_file)
    assert [(r.run_key, r.run_config) for r in first.run_requests or []] == [
        (
            f"{csv_file}:{digest}",
            {"ops": {"kafka_klines": {"config": {"path": str(csv_file)}}}},
        )
    ]
    assert json.loads(first.cursor or "") == {str(csv_file): digest}

    second = tick(first.cursor, incoming)
    assert second.run_requests == []
    assert second.cursor == first.cursor

    csv_file.write_text("open_time_ms,symbol,open,high,low,close,volume\n60000,X,1,2,0.5,1,3\n")
    third = tick(second.cursor, incoming)
    new_digest = file_digest(csv_file)
    assert new_digest != digest
    assert [r.run_key for r in third.run_requests or []] == [f"{csv_file}:{new_digest}"]
    assert json.loads(third.cursor or "") == {str(csv_file): new_digest}


def test_gzip_files_are_picked_up_in_name_order(incoming: Path) -> None:
    (incoming / "b.csv.gz").write_bytes(gzip.compress(b"x"))
    (incoming / "a.csv").write_text("y")
    paths = [
        r.run_config["ops"]["kafka_klines"]["config"]["path"]
        for r in tick(None, incoming).run_requests or []
    ]
    assert paths == [str(incoming / "a.csv"), str(incoming / "b.csv.gz")]


def test_missing_folder_requests_nothing(tmp_path: Path) -> None:
    result = tick(None, tmp_path / "absent")
    assert result.run_requests == []
    assert result.cursor == "{}"


def test_no_second_spark_job_starts_on_the_checkpoints_of_a_running_stream(
    tmp_path: Path,
) -> None:
    spark = SparkResource(master="local[1]", connectors_dir="/jars", state_dir=str(tmp_path))
    status = spark.status_file("t")
    assert status == tmp_path / "streaming" / "t.json"
    refuse_if_streaming(spark, "t")  # no heartbeat: free to start
    status.parent.mkdir(parents=True)
    status.write_text(json.dumps({"pid": os.getpid()}))
    assert running_stream_pid(status) == os.getpid()
    with pytest.raises(dg.Failure, match=f"continuous job \\(pid {os.getpid()}\\)"):
        refuse_if_streaming(spark, "t")
    status.write_text(json.dumps({"pid": 2**22 + 1}))  # above pid_max: never alive
    assert running_stream_pid(status) is None
