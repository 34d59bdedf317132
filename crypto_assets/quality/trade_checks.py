"""Asset checks on the candles built from trades, on both trade assets: the two sinks agree, they
match the latest replayed trade file recomputed in pandas (no code shared with the Spark job),
the trades job left nothing unread (its dead letters counted), the trades' late ledger has been
repaired, and the sinks keep up with the trades topic."""

import json
from collections.abc import Iterator

import dagster as dg

from crypto_assets.aggregation.trade_candles import INFLUX_TRADE_ASSET, MONGO_TRADE_ASSET
from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.quality.check_results import (
    FreshnessConfig,
    both_sinks,
    freshness_results,
    late_ledger_results,
    latest_metadata,
    left_behind_results,
    results_for_both,
)
from crypto_assets.resources import InfluxResource, KafkaResource, MongoResource, SparkResource
from crypto_pipeline.formats import late_ledger
from crypto_pipeline.formats.trade_message import TIME_MS, Trade
from crypto_pipeline.readback import (
    newest_influx_event_ms,
    newest_mongo_event_ms,
    read_influx,
    read_mongo,
)
from crypto_pipeline.reconcile import ReplayScope, compare, reference_trade_aggregates
from spark_jobs.interface.config import DEFAULT_TRADE_WINDOWS, trade_targets

TRADE_SINKS = {MONGO_TRADE_ASSET: "mongodb", INFLUX_TRADE_ASSET: "influxdb"}


def both_trade_sinks(
    name: str, description: str, blocking: bool = False
) -> list[dg.AssetCheckSpec]:
    return both_sinks(name, description, blocking, (MONGO_TRADE_ASSET, INFLUX_TRADE_ASSET))


@dg.multi_asset_check(
    name="trade_sinks_agree",
    specs=both_trade_sinks(
        "sinks_agree",
        "MongoDB and InfluxDB hold the same trade-built windows with equal values (1e-9 "
        "relative, taker volumes included), and every document's _id matches its key.",
        blocking=True,
    ),
)
def trade_sinks_agree(
    kafka: KafkaResource, mongo: MongoResource, influx: InfluxResource
) -> Iterator[dg.AssetCheckResult]:
    _, mongo_target, influx_target = trade_targets(kafka.target, mongo.target, influx.target)
    mongo_windows, bad_ids = read_mongo(mongo_target)
    comparison = compare(mongo_windows, read_influx(influx_target))
    description = comparison.summary("mongodb", "influxdb")
    if bad_ids:
        description += f"; {len(bad_ids)} documents whose _id is not their key (e.g. {bad_ids[0]})"
    metadata = {
        "mongodb_aggregates": len(mongo_windows),
        "ids_not_matching_key": bad_ids[:10],
        **comparison.metadata("mongodb", "influxdb"),
    }
    yield from results_for_both(
        comparison.passed and not bad_ids, metadata, TRADE_SINKS, description=description
    )


@dg.multi_asset_check(
    name="trade_matches_source",
    specs=both_trade_sinks(
        "matches_source",
        "The windows of the latest replayed trade file, recomputed from it in pandas (each "
        "trade id once, open and close by time and id), equal those in each sink.",
    ),
)
def trade_matches_source(
    context: dg.AssetCheckExecutionContext,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
) -> Iterator[dg.AssetCheckResult]:
    trades_topic, mongo_target, influx_target = trade_targets(
        kafka.target, mongo.target, influx.target
    )
    replay = latest_metadata(context.instance, kafka_klines.key)
    if replay.get("topic") != trades_topic.topic or "replay_scope" not in replay:
        description = (
            f"the latest replay sent no trades to {trades_topic.topic}: nothing to compare"
        )
        yield from results_for_both(False, {}, TRADE_SINKS, description=description)
        return
    scope = ReplayScope.from_metadata(replay["replay_scope"])
    job = latest_metadata(context.instance, MONGO_TRADE_ASSET)
    windows = list(job.get("windows") or DEFAULT_TRADE_WINDOWS)
    expected = reference_trade_aggregates(scope.records(Trade), windows, scope)
    sinks = {
        MONGO_TRADE_ASSET: read_mongo(mongo_target)[0],
        INFLUX_TRADE_ASSET: read_influx(influx_target),
    }
    for key, actual in sinks.items():
        comparison = compare(expected, actual, left_only_keys=True)
        yield dg.AssetCheckResult(
            asset_key=key,
            passed=bool(expected) and comparison.passed,
            description=comparison.summary("source", TRADE_SINKS[key])
            if expected
            else f"the latest replay ({scope.path}) holds no trade",
            metadata={
                "source_file": scope.path,
                "windows": windows,
                "expected_aggregates": len(expected),
                **comparison.metadata("source", TRADE_SINKS[key]),
            },
        )


@dg.multi_asset_check(
    name="trade_late_rows_repaired",
    specs=both_trade_sinks(
        "late_rows_repaired",
        "Every trade the trades job could not count in closed windows (behind its series' "
        "watermark, or re-sent after the dedupe horizon) has been recomputed by a backfill: "
        "ERROR while the trades' late ledger holds an open entry.",
    ),
)
def trade_late_rows_repaired(
    kafka: KafkaResource, mongo: MongoResource, influx: InfluxResource
) -> Iterator[dg.AssetCheckResult]:
    trades_topic, mongo_target, _ = trade_targets(kafka.target, mongo.target, influx.target)
    entries = late_ledger.open_entries_in(mongo_target, trades_topic.topic)
    yield from late_ledger_results(entries, TRADE_SINKS)


@dg.multi_asset_check(
    name="trade_nothing_left_behind",
    specs=both_trade_sinks(
        "nothing_left_behind",
        "The trades job's streaming query has committed the trades topic's end offsets; its "
        "dead letters (<topic>.trades.dlq) are counted (WARN above zero, reasons grouped).",
    ),
)
def trade_nothing_left_behind(
    context: dg.AssetCheckExecutionContext,
    kafka: KafkaResource,
    mongo: MongoResource,
    influx: InfluxResource,
    spark: SparkResource,
) -> Iterator[dg.AssetCheckResult]:
    trades_topic, _, _ = trade_targets(kafka.target, mongo.target, influx.target)
    job_metadata = latest_metadata(context.instance, MONGO_TRADE_ASSET)
    yield from left_behind_results(kafka, trades_topic, spark, job_metadata, TRADE_SINKS)


def trade_time_ms(value: bytes) -> int | None:
    """A trade message's time; None for a message that is not JSON with an integer time (a dead
    letter, counted by `nothing_left_behind`). Other rules are the job's: the newest trade counts
    here even if the rules refuse it."""
    try:
        time_ms = json.loads(value)[TIME_MS]
    except (ValueError, KeyError, TypeError):
        return None
    return time_ms if isinstance(time_ms, int) else None


@dg.multi_asset_check(
    name="trade_fresh",
    specs=both_trade_sinks(
        "fresh",
        "The newest trade counted in each sink is no further behind the newest trade in the "
        "trades topic than max_lag_minutes (event time).",
    ),
)
def trade_fresh(
    config: FreshnessConfig, kafka: KafkaResource, mongo: MongoResource, influx: InfluxResource
) -> Iterator[dg.AssetCheckResult]:
    trades_topic, mongo_target, influx_target = trade_targets(
        kafka.target, mongo.target, influx.target
    )
    times = [trade_time_ms(v) for v in kafka.read_messages(trades_topic.topic, last_only=True)]
    newest = max((t for t in times if t is not None), default=None)
    sinks = {
        MONGO_TRADE_ASSET: newest_mongo_event_ms(mongo_target),
        INFLUX_TRADE_ASSET: newest_influx_event_ms(influx_target),
    }
    yield from freshness_results(config, trades_topic.topic, newest, sinks, TRADE_SINKS)
