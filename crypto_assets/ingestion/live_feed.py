"""Live feeds as supervised Dagster runs: `live_feed_job` runs one exchange's feed
(crypto_pipeline/live) until the run is terminated (which flushes what is buffered), its health
is observed on the `kafka_klines` asset, and a failed feed is restarted with the same config.

(No `from __future__ import annotations` here: Dagster reads the config annotations at run time.)"""

import sys
import time

import dagster as dg
from pydantic import Field

from crypto_assets.resources import InfluxResource, KafkaResource, LiveFeedResource
from crypto_assets.supervision import RESTARTS, restart_of_failed_run
from crypto_pipeline.live.exchanges import EXCHANGES
from crypto_pipeline.live.feed_status import feed_health, feed_state, read_feed_status

EXCHANGE_TAG = "crypto/exchange"
KLINES_ASSET = dg.AssetKey("kafka_klines")


class LiveFeedConfig(dg.Config):
    exchange: str = Field(default="binance", description=f"one of {', '.join(EXCHANGES)}")
    symbols: list[str] = Field(
        default=["BTCUSDT", "ETHUSDT"], description="pairs, any spelling (BTC-USDT, btcusdt)"
    )
    interval: str = Field(default="1m", description="candle interval")
    trades: bool = Field(default=False, description="also the trades, to <topic>.trades")
    stall_s: float = Field(default=60.0, description="no data for this long: reconnect")
    since: str | None = Field(
        default=None, description="first start only: refill closed candles since this time"
    )

    def arguments(self) -> list[str]:
        arguments = [
            "--exchange",
            self.exchange,
            "--symbols",
            ",".join(self.symbols),
            "--interval",
            self.interval,
            "--stall-s",
            str(self.stall_s),
        ]
        arguments += ["--trades"] if self.trades else []
        return arguments + (["--since", self.since] if self.since else [])


@dg.op(description="Run one exchange's live feed into Kafka until the run is terminated.")
def run_live_feed(
    context: dg.OpExecutionContext,
    config: LiveFeedConfig,
    kafka: KafkaResource,
    influx: InfluxResource,
    live_feed: LiveFeedResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> None:
    if config.exchange not in EXCHANGES:
        raise dg.Failure(
            f"unknown exchange {config.exchange!r}; choose from {', '.join(EXCHANGES)}"
        )
    # The restart sensor follows each exchange's runs by this tag.
    context.instance.add_run_tags(context.run_id, {EXCHANGE_TAG: config.exchange})
    command = [sys.executable, "-m", "crypto_pipeline.live", *config.arguments()]
    context.log.info(" ".join(command))
    # Blocks while the feed runs; a terminated run stops it with SIGTERM, and it flushes.
    environment = live_feed.environment(kafka, influx)
    pipes_subprocess_client.run(command=command, context=context, env=environment)


@dg.job(description="A live exchange feed into Kafka (one exchange per run), supervised.")
def live_feed_job() -> None:
    run_live_feed()


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Health of each live feed (state, connected, seconds since its last message, "
    "reconnects, candles refilled over REST), recorded as observations of kafka_klines.",
)
def live_feed_health_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, live_feed: LiveFeedResource
) -> dg.SensorResult:
    now = time.time()
    events = []
    for exchange in EXCHANGES:
        status = read_feed_status(live_feed.status_file(exchange, kafka.topic))
        if status is not None:
            health = feed_health(status, now)
            bad = health["state"] in ("failed", "crashed") or not health["connected"]
            (context.log.warning if bad else context.log.info)(f"live feed health: {health}")
            events.append(dg.AssetObservation(asset_key=KLINES_ASSET, metadata=health))
    if not events:
        return dg.SensorResult(skip_reason=f"no live feed has run for {kafka.topic}")
    return dg.SensorResult(asset_events=events)


@dg.sensor(
    job=live_feed_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Restarts an exchange's live feed, with the same config, when its last run failed "
    f"and it is not running; gives up after {RESTARTS} failed runs in a row; never restarts a "
    "run stopped on purpose.",
)
def live_feed_restart_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, live_feed: LiveFeedResource
) -> dg.SensorResult:
    requests, skipped = [], []
    for exchange in EXCHANGES:
        status = read_feed_status(live_feed.status_file(exchange, kafka.topic))
        if status is not None and feed_state(status) == "running":
            skipped.append(f"{exchange}: running")
            continue
        runs = context.instance.get_runs(
            dg.RunsFilter(job_name=live_feed_job.name, tags={EXCHANGE_TAG: exchange}),
            limit=RESTARTS,
        )
        result = restart_of_failed_run(context, list(runs), f"{exchange} feed")
        if isinstance(result, dg.RunRequest):
            requests.append(result)
        else:
            skipped.append(result.skip_message or exchange)
    return dg.SensorResult(
        run_requests=requests, skip_reason=None if requests else "; ".join(skipped)
    )
