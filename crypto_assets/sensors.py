"""Sensors: new or changed files in the incoming folder trigger a replay; each replay triggers the
Spark job and the checks; the continuous job's health is observed and its freshness checked."""

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_assets.assets.aggregates import INFLUX_ASSET, MONGO_ASSET
from crypto_assets.assets.market_data import kafka_klines
from crypto_assets.job_state import pid_alive, running_stream_pid, status_file
from crypto_assets.jobs import freshness_job, ohlcv_job, replay_job
from crypto_pipeline.clients import end_offsets
from crypto_pipeline.settings import Settings

REPLAYABLE_SUFFIXES = (".csv", ".csv.gz")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def incoming_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.name.endswith(REPLAYABLE_SUFFIXES)
    )


@dg.sensor(
    job=replay_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Replays each new or changed CSV in INCOMING_DIR (run key = path + content hash).",
)
def incoming_files_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    folder = Settings.from_env().incoming_dir
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for path in incoming_files(folder):
        digest = file_digest(path)
        if seen.get(str(path)) == digest:
            continue
        seen[str(path)] = digest
        requests.append(
            dg.RunRequest(
                run_key=f"{path}:{digest}",
                run_config={"ops": {"kafka_klines": {"config": {"path": str(path)}}}},
                tags={"source_file": path.name},
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


# Tag on the Spark runs a replay triggered: which replay run they aggregate.
REPLAY_RUN_TAG = "crypto/replay-run-id"


@dg.asset_sensor(
    asset_key=kafka_klines.key,
    job=ohlcv_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each replay, runs the Spark job available-now and every check of both "
    "sinks, unless the continuous job is running (it processes the replay itself).",
)
def replay_done_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    topic = Settings.from_env().kafka_topic
    stream_pid = running_stream_pid(topic)
    if stream_pid is not None:
        return dg.SkipReason(f"the continuous job (pid {stream_pid}) processes {topic}")
    return dg.RunRequest(
        run_key=f"replay:{asset_event.run_id}",
        tags={REPLAY_RUN_TAG: asset_event.run_id},
    )


def streaming_health(settings: Settings, status: dict, now: float) -> dict[str, Any]:
    """Alive, seconds since the last progress, and the Kafka lag of the slowest query."""
    topic = settings.kafka_topic
    latest = end_offsets(settings, topic)
    lag = 0
    for processed in status["processed_offsets"].values():
        done = {int(p): o for p, o in processed.get(topic, {}).items()}
        lag = max(lag, sum(end - done.get(p, 0) for p, end in latest.items()))
    return {
        "alive": pid_alive(int(status["pid"])),
        "pid": int(status["pid"]),
        "seconds_since_progress": round(now - float(status["last_progress_at"]), 1),
        "kafka_lag_messages": lag,
        "kafka_end_offsets": {str(p): o for p, o in latest.items()},
    }


FRESHNESS_CHECK_EVERY_S = 120


@dg.sensor(
    job=freshness_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Health of the continuous Spark job: alive, last progress, Kafka lag; recorded "
    f"as observations of both sink assets. While it runs, the `fresh` check every "
    f"{FRESHNESS_CHECK_EVERY_S} s.",
)
def streaming_health_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = Settings.from_env()
    path = status_file(settings.kafka_topic)
    if not path.exists():
        return dg.SensorResult(skip_reason=f"no streaming job has run for {settings.kafka_topic}")
    now = time.time()
    health = streaming_health(settings, json.loads(path.read_text()), now)
    context.log.info(f"streaming job health: {health}")
    due = health["alive"] and now - float(context.cursor or 0) >= FRESHNESS_CHECK_EVERY_S
    return dg.SensorResult(
        asset_events=[
            dg.AssetObservation(asset_key=key, metadata=health)
            for key in (MONGO_ASSET, INFLUX_ASSET)
        ],
        run_requests=[dg.RunRequest()] if due else [],
        cursor=str(now) if due else context.cursor,
    )
