"""The main command as users run it (a subprocess): `demo --once` passes on a clean stack and
fails after one MongoDB document is corrupted; `demo` serves the UI, streams, and stops
everything it started on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_cli.dagster_services import DagsterApi
from crypto_cli.demo import DEMO_TAG
from crypto_pipeline.clients import mongo_client
from crypto_pipeline.settings import Settings, trade_candles
from tests.integration.conftest import free_port

CLI = [sys.executable, "-m", "crypto_cli"]


def demo_env(name: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "incoming").mkdir(exist_ok=True)
    return {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "KAFKA_TOPIC": name,
        "MONGO_DATABASE": name,
        "INFLUXDB_MEASUREMENT": name,
        "INCOMING_DIR": str(tmp_path / "incoming"),
    }


def test_demo_once_passes_then_fails_after_a_document_is_corrupted(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    env = demo_env(unique_name, tmp_path)
    clean = subprocess.run([*CLI, "demo", "--once"], env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert "rows in                      8,640" in clean.stdout
    assert "windows in MongoDB           1,908" in clean.stdout
    assert "sinks_agree           passed                passed" in clean.stdout
    assert "no_gaps               passed                passed" in clean.stdout
    assert "fresh                 passed                passed" in clean.stdout

    # Run again: the same rows are now behind each symbol's watermark, so the job drops them as
    # late (all but the 35 minutes of each symbol still in open 5m windows) and the backfill in
    # the same run rewrites them. A window the source does not have is not the backfill's: it
    # stays, and the agreement check fails on it.
    with mongo_client(local_stack.mongo.uri) as client:
        collection = client[unique_name][local_stack.mongo.collection]
        extra = collection.find_one({"_id": "file|SOLUSDT|4h|1735689600000"})
        assert extra is not None
        extra_start = datetime(2024, 12, 31, 20, tzinfo=UTC)
        extra.update(_id="file|SOLUSDT|4h|1735675200000", window_start=extra_start)
        collection.insert_one(extra)

    broken = subprocess.run([*CLI, "demo", "--once"], env=env, capture_output=True, text=True)
    assert broken.returncode == 1
    late_line = next(line for line in broken.stdout.splitlines() if line.startswith("late rows"))
    assert late_line.split()[2] == "8,535"
    assert "sinks_agree           FAILED (ERROR)        FAILED (ERROR)" in broken.stdout
    assert "matches_source        passed                passed" in broken.stdout
    assert "late_rows_repaired    passed                passed" in broken.stdout
    last_line = broken.stderr.strip().splitlines()[-1]
    assert last_line.startswith("crypto-pipeline: error: 2 checks failed: ")
    assert "Traceback" not in broken.stderr


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment contains `marker` (our DAGSTER_HOME)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_demo_runs_until_ctrl_c_and_then_stops_everything_it_started(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    env = {**demo_env(unique_name, tmp_path), "DAGSTER_PORT": str(free_port())}
    env["API_PORT"] = str(free_port())
    demo = subprocess.Popen(
        [*CLI, "demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 900
        for line in demo.stdout:
            output.append(line)
            if "Press Ctrl-C" in line or time.monotonic() > deadline:
                break
        text = "".join(output)
        assert "Press Ctrl-C" in text, text[-3000:]
        assert "check mongo_realtime/matches_source: succeeded" in text
        assert f"Dagster UI          http://127.0.0.1:{env['DAGSTER_PORT']}" in text

        api = DagsterApi(f"http://127.0.0.1:{env['DAGSTER_PORT']}")
        runs = {r["jobName"]: r["status"] for r in api.runs_tagged(DEMO_TAG, "live feed")}
        assert runs == {"live_feed_job": "STARTED"}
        stream = api.runs_tagged(DEMO_TAG, "continuous job")
        assert [r["status"] for r in stream] == ["STARTED"]
        trades = api.runs_tagged(DEMO_TAG, "trades job")
        assert [r["status"] for r in trades] == ["STARTED"]
        # Candles from the simulated exchange's trades, beside the kline-built ones.
        trade_windows = wait_for_trade_candles(local_stack, unique_name, timeout_s=120)
        assert trade_windows and {doc["exchange"] for doc in trade_windows} == {"binance"}
        # ... and both on the chart page's API.
        chart = f"http://127.0.0.1:{env['API_PORT']}/"
        assert f"chart page          {chart}" in text
        # A series is listed once its frontier is raised, just after its first windows are stored.
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(chart + "api/symbols", timeout=30) as response:
                listed = json.loads(response.read())
            if listed["trades"] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert ("file", "BTCUSDT") in {(s["exchange"], s["symbol"]) for s in listed["klines"]}
        assert {s["exchange"] for s in listed["trades"]} == {"binance"}
        first = listed["trades"][0]["symbol"]  # the first symbol whose trades have arrived
        query = f"exchange=binance&symbol={first}&window=1s&source=trades"
        with urllib.request.urlopen(f"{chart}api/candles?{query}", timeout=30) as response:
            assert json.loads(response.read())["candles"]
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=300)
    text = "".join(output) + rest
    assert demo.returncode == 0, text[-3000:]
    assert "runs terminated (the Spark job stopped its queries)" in text
    assert processes_with(env["DAGSTER_HOME"]) == []

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        statuses = {
            run.tags[DEMO_TAG]: run.status for run in instance.get_runs() if DEMO_TAG in run.tags
        }
    assert statuses == {
        "first replay": dg.DagsterRunStatus.SUCCESS,
        "continuous job": dg.DagsterRunStatus.CANCELED,
        "trades job": dg.DagsterRunStatus.CANCELED,
        "live feed": dg.DagsterRunStatus.CANCELED,
    }
    # The feed refilled the last hour over REST and stopped cleanly when its run was terminated.
    feed_status = local_stack.stack_dir / "live" / f"binance-{unique_name}.json"
    feed = json.loads(feed_status.read_text())
    assert feed["outcome"] == "stopped" and feed["counts"]["refilled"] >= 59 * 3, feed


def wait_for_trade_candles(settings: Settings, name: str, timeout_s: float) -> list[dict[str, Any]]:
    """The one-second candles the trades job has written from the feed's trades (waits for the
    first ones)."""
    deadline = time.monotonic() + timeout_s
    with mongo_client(settings.mongo.uri) as client:
        collection = client[name][trade_candles(settings.mongo.collection)]
        while True:
            found = list(collection.find({"window": "1s"}, {"exchange": 1}))
            if found or time.monotonic() > deadline:
                return found
            time.sleep(2)
