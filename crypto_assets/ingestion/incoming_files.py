"""Files dropped into the incoming folder are replayed: the sensor requests a `replay_job` run
per new or changed file, once it has settled, and retries a failed replay a few times."""

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.resources import IncomingFilesResource
from crypto_pipeline.settings import SAMPLE_FILE

REPLAY_DEFAULT_CONFIG = {"ops": {"kafka_klines": {"config": {"path": SAMPLE_FILE}}}}

replay_job = dg.define_asset_job(
    "replay_job",
    selection=[kafka_klines],
    config=REPLAY_DEFAULT_CONFIG,
    description="Replay a CSV file into the Kafka topic (default: the shipped sample, max speed).",
)

REPLAYABLE_SUFFIXES = (".csv", ".csv.gz")
# A file is replayed once it has not changed for this long (a copy in progress keeps changing);
# writing under a name starting with "." and renaming it into place hands it over at once.
SETTLED_AFTER_S = 10
# A failed replay of a file is requested again on later ticks, at most this many times in all.
REPLAY_ATTEMPTS = 3
INCOMING_FILE_TAG = "crypto/incoming-file"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def incoming_files(folder: Path, now: float) -> list[Path]:
    """The replayable files directly in the folder that have settled: no symlinks (they may point
    outside it), no hidden names (files being written)."""
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if not path.is_symlink()
        and path.is_file()
        and not path.name.startswith(".")
        and path.name.endswith(REPLAYABLE_SUFFIXES)
        and now - path.stat().st_mtime >= SETTLED_AFTER_S
    )


def _replay_request(path: Path, digest: str, attempt: int) -> dg.RunRequest:
    key = f"{path}:{digest}"
    # A later attempt sends only what the failed ones did not.
    config = {"path": str(path)} | ({"resume": True} if attempt > 1 else {})
    return dg.RunRequest(
        run_key=key if attempt == 1 else f"{key}:attempt-{attempt}",
        run_config={"ops": {"kafka_klines": {"config": config}}},
        tags={"source_file": path.name, INCOMING_FILE_TAG: key},
    )


def _retry_request(
    context: dg.SensorEvaluationContext, path: Path, digest: str
) -> dg.RunRequest | None:
    """Another replay of a file whose every replay so far failed (none running)."""
    runs = context.instance.get_run_records(
        dg.RunsFilter(tags={INCOMING_FILE_TAG: f"{path}:{digest}"})
    )
    statuses = [record.dagster_run.status for record in runs]
    if not statuses or any(s != dg.DagsterRunStatus.FAILURE for s in statuses):
        return None
    if len(statuses) >= REPLAY_ATTEMPTS:
        context.log.warning(f"{path}: {len(statuses)} replays failed; not trying again")
        return None
    return _replay_request(path, digest, len(statuses) + 1)


@dg.sensor(
    job=replay_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Replays each new or changed CSV in INCOMING_DIR once it has not changed for "
    f"{SETTLED_AFTER_S} s (run key = path + content hash; a failed replay is resumed, "
    f"{REPLAY_ATTEMPTS} attempts in all; symlinks and hidden files are ignored).",
)
def incoming_files_sensor(
    context: dg.SensorEvaluationContext, incoming: IncomingFilesResource
) -> dg.SensorResult:
    folder = incoming.path
    # Per path: the content's digest and the size and mtime it had then. A file whose size and
    # mtime are unchanged is not read again: a tick costs a stat per file, not a hash.
    seen: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for path in incoming_files(folder, time.time()):
        known = seen.get(str(path))
        known = known if isinstance(known, dict) else {"digest": known}
        try:
            status = path.stat()
            fingerprint = [status.st_size, status.st_mtime_ns]
            unchanged = known.get("stat") == fingerprint
            digest = known["digest"] if unchanged else file_digest(path)
        except OSError as error:  # one unreadable file does not hold up the others
            context.log.warning(f"{path}: cannot read ({error.strerror}); skipped")
            continue
        seen[str(path)] = {"digest": digest, "stat": fingerprint}
        if known.get("digest") == digest:
            retry = _retry_request(context, path, digest)
            requests += [retry] if retry else []
            continue
        requests.append(_replay_request(path, digest, 1))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
