"""Sensors: new or changed files in the incoming folder trigger a replay."""

import hashlib
import json
from pathlib import Path

import dagster as dg

from crypto_assets.jobs import replay_job
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
