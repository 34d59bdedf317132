"""What the asset checks report, on a pair of sink assets (the kline-built candles' or the
trade-built ones'): their specs, results on both, and the checks both pairs share the body of."""

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from crypto_assets.aggregation.ohlcv_sinks import INFLUX_ASSET, MONGO_ASSET
from crypto_assets.resources import KafkaResource, SparkResource
from crypto_pipeline.formats import dead_letter
from crypto_pipeline.formats.late_ledger import LateEntry, repair_ranges
from crypto_pipeline.reconcile import committed_offsets
from crypto_pipeline.replay.row_fields import ms_to_iso
from crypto_pipeline.settings import KafkaTarget

SINKS = {MONGO_ASSET: "mongodb", INFLUX_ASSET: "influxdb"}


def both_sinks(
    name: str,
    description: str,
    blocking: bool = False,
    assets: tuple[dg.AssetKey, dg.AssetKey] = (MONGO_ASSET, INFLUX_ASSET),
) -> list[dg.AssetCheckSpec]:
    """One check name on both sink assets, each depending on the other."""
    return [
        dg.AssetCheckSpec(
            name,
            asset=key,
            additional_deps=[other],
            blocking=blocking,
            description=description,
        )
        for key, other in (assets, assets[::-1])
    ]


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    """The metadata of the asset's latest materialization, as plain values."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: entry.value for name, entry in event.asset_materialization.metadata.items()}


def results_for_both(
    passed: bool, metadata: dict[str, Any], keys: Iterable[dg.AssetKey] = SINKS, **kwargs: Any
) -> Iterator[Any]:
    for key in keys:
        yield dg.AssetCheckResult(asset_key=key, passed=passed, metadata=metadata, **kwargs)


def left_behind_results(
    kafka: KafkaResource,
    target: KafkaTarget,
    spark: SparkResource,
    job_metadata: dict[str, Any],
    keys: Iterable[dg.AssetKey],
) -> Iterator[dg.AssetCheckResult]:
    """`nothing_left_behind` of the job that reads `target`'s topic, on these assets."""
    topic = target.topic
    if job_metadata.get("topic") != topic:  # the job's last run was on another topic
        job_metadata = {}
    checkpoint = Path(job_metadata.get("checkpoint_dir") or spark.checkpoint_dir(topic))
    ends = kafka.end_offsets(topic)
    # A streaming query's checkpoint is a folder with an offsets log.
    queries = sorted(p.parent for p in checkpoint.glob("*/offsets")) if checkpoint.is_dir() else []
    behind: dict[str, int] = {}
    for query in queries:
        committed = (committed_offsets(query) or {}).get(topic, {})
        behind[query.name] = sum(end - committed.get(p, 0) for p, end in ends.items())
    dead = kafka.read_dead_letters(target.dlq_topic)
    reasons = Counter(dead_letter.reason_kind_of(value) for value in dead)
    dead_letters = sum(reasons.values())
    metadata = {
        "topic": topic,
        "end_offsets": {str(p): o for p, o in ends.items()},
        "messages_not_committed_per_query": behind,
        "checkpoint_dir": str(checkpoint),
        "dead_letters": dead_letters,
        "dead_letter_reasons": dict(reasons.most_common()),
    }
    left_behind = {name: lag for name, lag in behind.items() if lag}
    if not queries:
        passed, severity = False, dg.AssetCheckSeverity.ERROR
        description = f"no streaming query has a checkpoint in {checkpoint}"
    elif left_behind:
        passed, severity = False, dg.AssetCheckSeverity.ERROR
        description = f"messages not committed by the job: {left_behind}"
    elif dead_letters:
        passed, severity = False, dg.AssetCheckSeverity.WARN
        description = f"all offsets committed; {dead_letters} dead letters: {dict(reasons)}"
    else:
        passed, severity = True, dg.AssetCheckSeverity.ERROR
        description = f"all {sum(ends.values()):,} messages committed"
    yield from results_for_both(passed, metadata, keys, severity=severity, description=description)


def late_ledger_results(
    entries: list[LateEntry], keys: Iterable[dg.AssetKey]
) -> Iterator[dg.AssetCheckResult]:
    """`late_rows_repaired` of a ledger's open entries, on these assets."""
    rows_by_series = Counter[str]()
    for entry in entries:
        rows_by_series[entry.series] += entry.rows
    ranges = {
        series: f"{rows_by_series[series]} rows "
        + ", ".join(f"{ms_to_iso(first)} .. {ms_to_iso(end)}" for first, end in spans)
        for series, spans in sorted(repair_ranges(entries).items())
    }
    unrepairable = {e.id: str(e.unrepairable) for e in entries if e.unrepairable}
    late_rows = sum(rows_by_series.values())
    if unrepairable:
        description = (
            f"{len(unrepairable)} late-ledger entries cannot be repaired from what the topic "
            f"holds, e.g. {next(iter(unrepairable.values()))}"
        )
    elif entries:
        description = (
            f"{late_rows:,} late rows not repaired yet: {ranges} (the late_rows_sensor or "
            "`crypto-pipeline backfill --late` repairs them)"
        )
    else:
        description = "no late row waits for repair"
    yield from results_for_both(
        not entries,
        keys=keys,
        metadata={
            "unrepaired_late_rows": late_rows,
            "unrepaired_by_symbol": ranges,
            "unrepairable": unrepairable,
        },
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
    )


class FreshnessConfig(dg.Config):
    max_lag_minutes: float = Field(
        default=15.0,
        description="how far (in event time) the newest aggregate may trail the newest event",
    )


def freshness_results(
    config: FreshnessConfig,
    topic: str,
    newest_event_ms: int | None,
    newest_in_sinks: Mapping[dg.AssetKey, int | None],
    names: Mapping[dg.AssetKey, str],
) -> Iterator[dg.AssetCheckResult]:
    """`fresh` on each sink asset: its newest event (None: the sink is empty) against the newest
    one in `topic`."""
    if newest_event_ms is None:
        yield from results_for_both(
            False, {}, newest_in_sinks, description=f"{topic} holds no events"
        )
        return
    for key, sink_newest_ms in newest_in_sinks.items():
        metadata: dict[str, Any] = {
            "newest_event_in_kafka": ms_to_iso(newest_event_ms),
            "newest_event_in_sink": ms_to_iso(sink_newest_ms),
            "checked_at": ms_to_iso(int(time.time() * 1000)),
        }
        if sink_newest_ms is None:
            yield dg.AssetCheckResult(
                asset_key=key, passed=False, metadata=metadata, description="the sink is empty"
            )
            continue
        lag_minutes = (newest_event_ms - sink_newest_ms) / 60_000
        metadata["lag_minutes"] = round(lag_minutes, 2)
        yield dg.AssetCheckResult(
            asset_key=key,
            passed=lag_minutes <= config.max_lag_minutes,
            metadata=metadata,
            description=f"{names[key]} trails Kafka by {lag_minutes:.1f} min of event time "
            f"(bound {config.max_lag_minutes:g})",
        )
