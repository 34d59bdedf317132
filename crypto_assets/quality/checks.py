"""Asset checks on the two sinks: they agree with each other, they match the source CSV, the job
left nothing unread in Kafka, no candle is missing, and they keep up with the stream. Each check
runs on both assets and reports counts and a sample of what differs."""

import time
from collections.abc import Iterator

import dagster as dg

from crypto_assets.aggregation.ohlcv_sinks import INFLUX_ASSET, MONGO_ASSET
from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.quality.check_results import (
    SINKS,
    FreshnessConfig,
    both_sinks,
    freshness_results,
    late_ledger_results,
    latest_metadata,
    left_behind_results,
    results_for_both,
)
from crypto_assets.resources import InfluxResource, KafkaResource, MongoResource, SparkResource
from crypto_pipeline.formats import candle_message
from crypto_pipeline.formats.candle_message import FILE_EXCHANGE
from crypto_pipeline.formats.window_values import Aggregates
from crypto_pipeline.gaps import Series, Span, closed_candle_times, find_gaps
from crypto_pipeline.reconcile import (
    ReplayScope,
    compare,
    newest_events,
    reference_aggregates,
    settled,
)
from crypto_pipeline.replay.row_fields import ms_to_iso
from crypto_pipeline.windows import window_ms
from spark_jobs.interface.config import DEFAULT_WINDOWS
from spark_jobs.interface.heartbeat import read_status, stream_state

AGREE_ATTEMPTS = 2
AGREE_RETRY_S = 10.0
GAP_SAMPLE = 10


@dg.multi_asset_check(
    specs=both_sinks(
        "sinks_agree",
        "MongoDB and InfluxDB hold the same (exchange, symbol, window, window_start) keys with "
        "equal values (1e-9 relative), and every document's _id matches its key. While the "
        "continuous job runs: its settled windows (ended at or before their series' "
        "watermark), and a difference is read again before it fails.",
        blocking=True,
    )
)
def sinks_agree(
    context: dg.AssetCheckExecutionContext,
    mongo: MongoResource,
    influx: InfluxResource,
    kafka: KafkaResource,
    spark: SparkResource,
) -> Iterator[dg.AssetCheckResult]:
    # While the continuous job runs it rewrites its open windows every batch, MongoDB and InfluxDB
    # a moment apart: only settled windows are compared, and a difference is read again once
    # before it counts (a batch may have been between its two writes). Without a stream running,
    # a difference is real at once.
    for attempt in range(1, AGREE_ATTEMPTS + 1):
        mongo_aggregates, bad_ids = mongo.read_aggregates()
        influx_aggregates = influx.read_aggregates()
        status = read_status(spark.status_file(kafka.topic))
        streaming = status is not None and stream_state(status) == "running"
        if streaming and status is not None:
            newest = newest_events(mongo_aggregates, influx_aggregates)
            watermark_ms = int(status["watermark_ms"])
            mongo_aggregates = settled(mongo_aggregates, newest, watermark_ms)
            influx_aggregates = settled(influx_aggregates, newest, watermark_ms)
        comparison = compare(mongo_aggregates, influx_aggregates)
        if comparison.passed or not streaming or attempt == AGREE_ATTEMPTS:
            break
        context.log.info(
            f"{comparison.summary('mongodb', 'influxdb')}; reading again in {AGREE_RETRY_S:.0f} s"
        )
        time.sleep(AGREE_RETRY_S)
    description = comparison.summary("mongodb", "influxdb")
    if streaming:
        description += " (settled windows: the continuous job is running)"
    if bad_ids:
        description += f"; {len(bad_ids)} documents whose _id is not their key (e.g. {bad_ids[0]})"
    metadata = {
        "mongodb_aggregates": len(mongo_aggregates),
        "influxdb_aggregates": comparison.compared + len(comparison.only_right),
        "ids_not_matching_key": bad_ids[:10],
        "only_settled_windows": streaming,
        "attempts": attempt,
        **comparison.metadata("mongodb", "influxdb"),
    }
    yield from results_for_both(
        comparison.passed and not bad_ids, metadata, description=description
    )


@dg.multi_asset_check(
    specs=both_sinks(
        "matches_source",
        "The closed windows of the latest replay, recomputed from its CSV in pandas, equal the "
        "aggregates in each sink (1e-9 relative).",
    )
)
def matches_source(
    context: dg.AssetCheckExecutionContext, mongo: MongoResource, influx: InfluxResource
) -> Iterator[dg.AssetCheckResult]:
    replay_metadata = latest_metadata(context.instance, kafka_klines.key)
    if "replay_scope" not in replay_metadata:
        yield from results_for_both(
            False, {}, description="no replay is recorded for kafka_klines: nothing to compare"
        )
        return
    scope = ReplayScope.from_metadata(replay_metadata["replay_scope"])
    windows = latest_metadata(context.instance, MONGO_ASSET).get("windows") or DEFAULT_WINDOWS
    expected = reference_aggregates(scope.candles(), list(windows), scope)
    sinks: dict[dg.AssetKey, Aggregates] = {
        MONGO_ASSET: mongo.read_aggregates()[0],
        INFLUX_ASSET: influx.read_aggregates(),
    }
    for key, actual in sinks.items():
        comparison = compare(expected, actual, left_only_keys=True)
        description = comparison.summary("source", SINKS[key])
        if not expected:
            description = f"the latest replay ({scope.path}) covers no closed window"
        yield dg.AssetCheckResult(
            asset_key=key,
            passed=bool(expected) and comparison.passed,
            description=description,
            metadata={
                "source_file": scope.path,
                "windows": list(windows),
                "expected_aggregates": len(expected),
                **comparison.metadata("source", SINKS[key]),
            },
        )


@dg.multi_asset_check(
    specs=both_sinks(
        "nothing_left_behind",
        "The job's streaming query has committed the topic's end offsets; dead letters are "
        "counted (WARN above zero, reasons grouped).",
    )
)
def nothing_left_behind(
    context: dg.AssetCheckExecutionContext, kafka: KafkaResource, spark: SparkResource
) -> Iterator[dg.AssetCheckResult]:
    job_metadata = latest_metadata(context.instance, MONGO_ASSET)
    yield from left_behind_results(kafka, kafka.target, spark, job_metadata, SINKS)


@dg.multi_asset_check(
    specs=both_sinks(
        "late_rows_repaired",
        "Every window the live job could not make whole (candles behind their symbol's "
        "watermark, a write refused as a conflict) has been recomputed into both sinks by a "
        "backfill: ERROR while the late ledger holds an open entry (per symbol: rows and "
        "event-time ranges), and while a backfill found one unrepairable (the reason: the "
        "topic no longer holds its input) until a person acts.",
    )
)
def late_rows_repaired(kafka: KafkaResource, mongo: MongoResource) -> Iterator[dg.AssetCheckResult]:
    yield from late_ledger_results(mongo.open_late_entries(kafka.topic), SINKS)


def _spans(gaps: dict[Series, list[Span]]) -> dict[str, list[str]]:
    """Per series, its first missing spans as ISO ranges."""
    return {
        f"{exchange}:{symbol}": [f"{ms_to_iso(a)} .. {ms_to_iso(b)}" for a, b in spans[:GAP_SAMPLE]]
        for (exchange, symbol), spans in gaps.items()
    }


@dg.multi_asset_check(
    specs=both_sinks(
        "no_gaps",
        "Per exchange and symbol, every closed candle between the first and the last is in the "
        "topic (where the exchange sends a candle for every interval: Binance, Bybit, files) and "
        "in the sink (each window of the shortest length holds every candle the topic has in "
        "it); the missing spans are listed. ERROR for a live series' gap or a sink's, WARN for "
        "a gap between files.",
    )
)
def no_gaps(
    context: dg.AssetCheckExecutionContext,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
) -> Iterator[dg.AssetCheckResult]:
    times = closed_candle_times(kafka.read_records())
    windows = latest_metadata(context.instance, MONGO_ASSET).get("windows") or DEFAULT_WINDOWS
    shortest = min(windows, key=window_ms)
    sinks = {MONGO_ASSET: mongo.read_aggregates()[0], INFLUX_ASSET: influx.read_aggregates()}
    report = find_gaps(
        times, {SINKS[key]: aggregates for key, aggregates in sinks.items()}, shortest
    )
    for key, name in SINKS.items():
        in_sink = report.sinks[name]
        parts = [
            f"{len(spans)} missing in {where} of {exchange}:{symbol} (first "
            f"{ms_to_iso(spans[0][0])} .. {ms_to_iso(spans[0][1])})"
            for where, gaps in (("the topic", report.topic), (name, in_sink))
            for (exchange, symbol), spans in gaps.items()
        ]
        description = "; ".join(parts[:GAP_SAMPLE]) or (
            f"{len(times)} series without a gap in the topic or {name} ({shortest} windows)"
        )
        # A file's own gaps (two files of separate periods) are the source's: a warning. A live
        # series' gap, or a candle the sink lacks, is data lost.
        lost = in_sink or any(exchange != FILE_EXCHANGE for exchange, _ in report.topic)
        yield dg.AssetCheckResult(
            asset_key=key,
            passed=bool(times) and not report.topic and not in_sink,
            severity=dg.AssetCheckSeverity.ERROR
            if lost or not times
            else dg.AssetCheckSeverity.WARN,
            description=description if times else f"{kafka.topic} holds no closed candle",
            metadata={
                "series_checked": len(times),
                "gaps_in_topic": _spans(report.topic),
                f"gaps_in_{name}": _spans(in_sink),
                # OKX sends no candle for an interval without trades: not a gap in its topic.
                "topic_unchecked_series": [f"{e}:{s}" for e, s in report.unchecked_topic],
            },
        )


@dg.multi_asset_check(
    specs=both_sinks(
        "fresh",
        "The newest event in each sink is no further behind the newest event in Kafka than "
        "max_lag_minutes (event time).",
    )
)
def fresh(
    config: FreshnessConfig, kafka: KafkaResource, mongo: MongoResource, influx: InfluxResource
) -> Iterator[dg.AssetCheckResult]:
    newest = [
        candle_message.decode(v)["event_time_ms"] for v in kafka.read_messages(last_only=True)
    ]
    sinks = {MONGO_ASSET: mongo.newest_event_ms(), INFLUX_ASSET: influx.newest_event_ms()}
    yield from freshness_results(config, kafka.topic, max(newest, default=None), sinks, SINKS)


reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.checks(
        sinks_agree, matches_source, nothing_left_behind, late_rows_repaired, no_gaps
    ),
    description="Full reconciliation: both sinks against each other and against the source.",
)

nightly_reconciliation = dg.ScheduleDefinition(
    name="nightly_reconciliation",
    job=reconciliation_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 03:00 UTC: reconcile both sinks with each other and the source.",
)
