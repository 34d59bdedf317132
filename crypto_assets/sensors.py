"""Sensors: new or changed files in the incoming folder trigger a replay; each replay triggers the
Spark job and the checks; the continuous job's health is observed, its freshness checked, and a
failed stream restarted."""

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_assets.aggregation.ohlcv_sinks import INFLUX_ASSET, MONGO_ASSET
from crypto_assets.aggregation.streaming import streaming_job
from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.jobs import freshness_job, ohlcv_job, replay_job
from crypto_assets.resources import IncomingFilesResource, KafkaResource, SparkResource
from spark_jobs.interface.heartbeat import read_status, running_stream_pid, streaming_health

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
    context: dg.SensorEvaluationContext,
    asset_event: dg.EventLogEntry,
    kafka: KafkaResource,
    spark: SparkResource,
) -> dg.RunRequest | dg.SkipReason:
    topic = kafka.topic
    stream_pid = running_stream_pid(spark.status_file(topic))
    if stream_pid is not None:
        return dg.SkipReason(f"the continuous job (pid {stream_pid}) processes {topic}")
    return dg.RunRequest(
        run_key=f"replay:{asset_event.run_id}",
        tags={REPLAY_RUN_TAG: asset_event.run_id},
    )


FRESHNESS_CHECK_EVERY_S = 120
# The restart sensor gives up after this many streaming runs in a row have failed (a stream that
# fails at once would otherwise be restarted forever); each failed run is an alert in the UI.
STREAM_RESTARTS = 3
RESTART_OF_TAG = "crypto/restart-of"


@dg.sensor(
    job=freshness_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Health of the continuous Spark job: state (running, stopped, failed, crashed), "
    f"last progress, Kafka lag; recorded as observations of both sink assets. While it runs, the "
    f"`fresh` check every {FRESHNESS_CHECK_EVERY_S} s.",
)
def streaming_health_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, spark: SparkResource
) -> dg.SensorResult:
    status = read_status(spark.status_file(kafka.topic))
    if status is None:
        return dg.SensorResult(skip_reason=f"no streaming job has run for {kafka.topic}")
    now = time.time()
    health = streaming_health(status, kafka.topic, kafka.end_offsets(), now)
    log = context.log.warning if health["state"] in ("failed", "crashed") else context.log.info
    log(f"streaming job health: {health}")
    due = health["alive"] and now - float(context.cursor or 0) >= FRESHNESS_CHECK_EVERY_S
    return dg.SensorResult(
        asset_events=[
            dg.AssetObservation(asset_key=key, metadata=health)
            for key in (MONGO_ASSET, INFLUX_ASSET)
        ],
        run_requests=[dg.RunRequest()] if due else [],
        cursor=str(now) if due else context.cursor,
    )


@dg.sensor(
    job=streaming_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Restarts the continuous job, with the same config, when its last run failed "
    "(the job crashed, a sink stayed down past its retries, its run worker died) and no stream "
    f"runs; gives up after {STREAM_RESTARTS} failed runs in a row. A stopped run (terminated "
    "from the UI) is never restarted.",
)
def streaming_restart_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, spark: SparkResource
) -> dg.RunRequest | dg.SkipReason:
    stream_pid = running_stream_pid(spark.status_file(kafka.topic))
    if stream_pid is not None:
        return dg.SkipReason(f"the continuous job (pid {stream_pid}) is running")
    recent = context.instance.get_runs(
        dg.RunsFilter(job_name=streaming_job.name), limit=STREAM_RESTARTS
    )
    if not recent or recent[0].status != dg.DagsterRunStatus.FAILURE:
        state = recent[0].status.value if recent else "none"
        return dg.SkipReason(f"last streaming run: {state}; nothing to restart")
    failed = recent[0]
    if len(recent) == STREAM_RESTARTS and all(
        run.status == dg.DagsterRunStatus.FAILURE for run in recent
    ):
        context.log.warning(f"{STREAM_RESTARTS} streaming runs failed in a row; not restarting")
        return dg.SkipReason(f"{STREAM_RESTARTS} streaming runs failed in a row")
    context.log.warning(f"streaming run {failed.run_id} failed; restarting it")
    user_tags = {k: v for k, v in failed.tags.items() if not k.startswith("dagster/")}
    return dg.RunRequest(
        run_key=f"restart:{failed.run_id}",
        run_config=failed.run_config,
        tags={**user_tags, RESTART_OF_TAG: failed.run_id},
    )
