"""The project's main command on the local stack.

`crypto-pipeline demo`: the stack, the Dagster webserver and daemon, a first replay whose Spark
run and checks the replay sensor starts, then the continuous Spark job and a live feed
(`live_feed_job`) from the simulated exchange (or from the endpoints LIVE_WS_URL and LIVE_REST_URL
name); runs until Ctrl-C and then stops everything it started.

`crypto-pipeline demo --once`: replay a fixed range, run the Spark job available-now and every
check, in this process, against the same Dagster instance; print a summary; exit 1 if a check
fails."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import local_stack as stack
from crypto_cli.dagster_services import (
    ASSET_GRAPH_PATH,
    FINISHED,
    DagsterApi,
    DagsterServices,
    prepare_dagster_home,
)
from crypto_cli.live_command import SimulatorProcess
from crypto_cli.serve_command import ApiProcess
from crypto_pipeline.clients import end_offsets
from crypto_pipeline.console import say
from crypto_pipeline.settings import SAMPLE_FILE, Settings, stream_status_file, trade_candles
from local_stack.artifacts import StackError
from spark_jobs.interface.heartbeat import read_status, streaming_health
from spark_jobs.interface.summary import INFLUX_ASSET, MONGO_ASSET

# The whole sample: 3 symbols x 2 days of 1-minute candles.
ONCE_START = "2025-01-01T00:00:00Z"
ONCE_END = "2025-01-03T00:00:00Z"
CHECKS = (
    "sinks_agree",
    "matches_source",
    "nothing_left_behind",
    "late_rows_repaired",
    "no_gaps",
    "fresh",
)
DEMO_TAG = "crypto/demo"
# The live part: Binance's protocol from the simulated exchange, real time, with two hours of
# history of which the feed's first connect refills the last hour over REST.
LIVE_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
LIVE_FEED = {"exchange": "binance", "symbols": LIVE_SYMBOLS, "trades": True}


def run_once(settings: Settings, start: str = ONCE_START, end: str = ONCE_END) -> int:
    """Stops the stack afterwards if it started it (the Dagster instance keeps the runs)."""
    started_stack = not stack.is_running(settings)
    try:
        return _run_once(settings, start, end)
    finally:
        if started_stack:
            stack.down(settings)


def _run_once(settings: Settings, start: str, end: str) -> int:
    began = time.monotonic()
    stack.up(settings)
    prepare_dagster_home(settings)
    import dagster as dg

    from crypto_assets.definitions import defs as load_definitions

    defs = load_definitions()

    info_logs = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    replay_config = {"path": SAMPLE_FILE, "start": start, "end": end}
    with dg.DagsterInstance.get() as instance:
        say(f"[demo] replaying {SAMPLE_FILE} [{start}, {end}) into {settings.kafka.topic} ...")
        replayed = defs.resolve_job_def("replay_job").execute_in_process(
            instance=instance,
            run_config={**info_logs, "ops": {"kafka_klines": {"config": replay_config}}},
            raise_on_error=False,
        )
        if not replayed.success:
            raise StackError(f"the replay failed (run {replayed.run_id}); see its log above")
        replay_metadata = _metadata(replayed.get_asset_materialization_events()[0])
        say("[demo] running the Spark job available-now, then every check of both sinks ...")
        job = defs.resolve_job_def("ohlcv_job").execute_in_process(
            instance=instance, run_config=info_logs, raise_on_error=False
        )
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e for e in job.get_asset_check_evaluations()
    }
    failed = [
        key
        for key, e in evaluations.items()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    materialized = job.get_asset_materialization_events()
    job_metadata = _metadata(materialized[0]) if materialized else {}
    lines = _summary(replay_metadata, job_metadata, evaluations, time.monotonic() - began)
    say("")
    for line in lines:
        say(line)
    if not evaluations:
        raise StackError(f"the Spark job failed before any check ran (run {job.run_id})")
    if failed:
        raise StackError(
            f"{len(failed)} checks failed: " + ", ".join(f"{a}/{c}" for a, c in failed)
        )
    return 0


def _metadata(event: Any) -> dict[str, Any]:
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _summary(
    replay: dict[str, Any],
    job: dict[str, Any],
    evaluations: dict[tuple[str, str], Any],
    elapsed: float,
) -> list[str]:
    def status(asset: str, check: str) -> str:
        evaluation = evaluations.get((asset, check))
        if evaluation is None:
            return "not run"
        return "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"

    def metadata(asset: str, check: str, name: str) -> Any:
        evaluation = evaluations.get((asset, check))
        entry = evaluation.metadata.get(name) if evaluation else None
        return "?" if entry is None else entry.value

    def windows(name: str) -> str:
        count = metadata(MONGO_ASSET, "sinks_agree", name)
        return f"{count:,}" if isinstance(count, int) else str(count)

    dead_letters = metadata(MONGO_ASSET, "nothing_left_behind", "dead_letters")
    lines = [
        f"{'rows in':<22}{replay['rows_sent']:>12,}",
        f"{'dead letters':<22}{dead_letters:>12}  (rejected by this replay: "
        f"{replay['rows_rejected']})",
        f"{'late rows':<22}{job.get('late_rows', 0):>12,}  (repaired by a backfill: "
        f"{(job.get('late_repair') or {}).get('late_entries_repaired', 0)} ledger entries)",
        f"{'windows in MongoDB':<22}{windows('mongodb_aggregates'):>12}",
        f"{'windows in InfluxDB':<22}{windows('influxdb_aggregates'):>12}",
        "",
        f"{'check':<22}{MONGO_ASSET:<22}{INFLUX_ASSET}",
    ]
    lines += [
        f"{check:<22}{status(MONGO_ASSET, check):<22}{status(INFLUX_ASSET, check)}"
        for check in CHECKS
    ]
    for (asset, check), evaluation in sorted(evaluations.items()):
        if not evaluation.passed:
            lines.append(f"  {asset}/{check}: {evaluation.description}")
    lines += ["", f"{'elapsed':<22}{elapsed:>10.1f} s"]
    return lines


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM both end the demo through KeyboardInterrupt (even when started
    without job control, where SIGINT may arrive ignored)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_interactive(settings: Settings) -> int:
    from crypto_assets.aggregation.ohlcv_sinks import REPLAY_RUN_TAG

    started_stack = not stack.is_running(settings)
    launched: list[str] = []
    services: DagsterServices | None = None
    exchange: SimulatorProcess | None = None
    chart: ApiProcess | None = None
    with _interruptible():
        try:
            stack.up(settings)
            if not settings.live_ws_url:
                exchange = _start_simulated_exchange()
            chart = ApiProcess({}, settings.api_port, settings.stack_dir / "logs" / "api.log")
            say(f"[demo] chart page and candles API on {chart.url} (OpenAPI: {chart.url}docs)")
            services = DagsterServices(prepare_dagster_home(settings), settings.dagster_port)
            say(f"[demo] starting the Dagster webserver and daemon on {services.url} ...")
            services.start()
            api = DagsterApi(services.url)

            say("[demo] replay_job: the sample into Kafka ...")
            replay_id = api.launch("replay_job", tags={DEMO_TAG: "first replay"})
            launched.append(replay_id)
            _expect(api, replay_id, "SUCCESS", api.wait_for_run(replay_id, 600))
            say("[demo] the replay sensor starts ohlcv_job (Spark available-now, then checks) ...")
            ohlcv_id = _wait_for_tagged_run(api, REPLAY_RUN_TAG, replay_id)
            launched.append(ohlcv_id)
            _expect(api, ohlcv_id, "SUCCESS", api.wait_for_run(ohlcv_id, 900))
            for (asset, check), status in sorted(api.check_statuses().items()):
                say(f"[demo]   check {asset}/{check}: {status.lower()}")

            stream_id = api.launch("streaming_job", tags={DEMO_TAG: "continuous job"})
            launched.append(stream_id)
            status = api.wait_for_run(
                stream_id, 300, until=lambda s: s == "STARTED" or s in FINISHED
            )
            _expect(api, stream_id, "STARTED", status)
            trades_id = api.launch("trade_streaming_job", tags={DEMO_TAG: "trades job"})
            launched.append(trades_id)
            _expect(api, trades_id, "STARTED", api.wait_for_run(trades_id, 300, until=started))
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
            feed_config = {"ops": {"run_live_feed": {"config": {**LIVE_FEED, "since": since}}}}
            feed_id = api.launch("live_feed_job", feed_config, {DEMO_TAG: "live feed"})
            launched.append(feed_id)
            _expect(api, feed_id, "STARTED", api.wait_for_run(feed_id, 300, until=started))
            _print_guide(services.url, chart.url, settings)
            while True:
                time.sleep(60)
                _print_status(api, launched, settings)
        except KeyboardInterrupt:
            say("\n[demo] stopping ...")
        finally:
            # A second Ctrl-C must not cut the cleanup short and leave the servers running.
            for number in (signal.SIGINT, signal.SIGTERM):
                signal.signal(number, _still_stopping)
            if services is not None:
                _terminate_runs(services, launched)
                services.stop()
                say("[demo] Dagster webserver and daemon stopped")
            if exchange is not None:
                exchange.stop()
                say("[demo] simulated exchange stopped")
            if chart is not None:
                chart.stop()
                say("[demo] candles API stopped")
            if started_stack:
                stack.down(settings)
    return 0


def _start_simulated_exchange() -> SimulatorProcess:
    """The simulated exchange, and the settings that point the feeds at it (in this process's
    environment, which the Dagster processes inherit)."""
    exchange = SimulatorProcess("--symbols", ",".join(LIVE_SYMBOLS), "--history-minutes", "120")
    os.environ["LIVE_WS_URL"], os.environ["LIVE_REST_URL"] = exchange.ws_url, exchange.rest_url
    say(f"[demo] simulated exchange (Binance, Bybit, OKX protocols) on {exchange.rest_url}")
    return exchange


def _still_stopping(signum: int, frame: Any) -> None:
    say("[demo] still stopping the runs and servers; a moment please")


def started(status: str) -> bool:
    return status == "STARTED" or status in FINISHED


def _expect(api: DagsterApi, run_id: str, wanted: str, status: str) -> None:
    if status != wanted:
        raise StackError(f"run {run_id} ended {status}; open {api.url}/runs/{run_id}")


def _wait_for_tagged_run(api: DagsterApi, key: str, value: str, timeout_s: float = 180) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = api.runs_tagged(key, value)
        if runs:
            return runs[0]["runId"]
        time.sleep(2)
    raise StackError(f"no run tagged {key}={value} within {timeout_s:.0f} s: is the daemon up?")


def _terminate_runs(services: DagsterServices, run_ids: list[str]) -> None:
    if not services.processes:
        return
    api = DagsterApi(services.url)
    try:
        running = [r for r in run_ids if api.run_status(r) not in FINISHED]
        for run_id in running:
            api.terminate(run_id)
        for run_id in running:
            api.wait_for_run(run_id, 120)
        if running:
            say(f"[demo] {len(running)} runs terminated (the Spark job stopped its queries)")
    except (OSError, StackError) as error:
        say(f"[demo] could not terminate the runs cleanly ({error}); stopping the processes")


def _print_guide(url: str, chart_url: str, settings: Settings) -> None:
    for line in [
        "",
        "The pipeline is running:",
        f"  chart page          {chart_url}  (candles from klines and from trades, live)",
        f"  candles API         {chart_url}docs",
        f"  Dagster UI          {url}",
        f"  asset graph         {url}{ASSET_GRAPH_PATH}",
        f"  runs                {url}/runs  (streaming_job, trade_streaming_job and "
        "live_feed_job stay started)",
        f"  checks              {url}/assets/{MONGO_ASSET}?view=checks",
        "What to look at: the four checks of each sink (green after the first replay), the",
        "streaming and live-feed health observations (every 30 s) and the `fresh` check (every",
        "2 minutes). The feed sends a candle a minute per symbol (BTCUSDT, ETHUSDT, SOLUSDT)",
        "and every trade; trade_streaming_job builds candles from 1 second up from the trades.",
        f"MongoDB {settings.mongo.redacted_uri} {settings.mongo.database}."
        f"{settings.mongo.collection} (from klines) and "
        f"{trade_candles(settings.mongo.collection)} (from trades); InfluxDB "
        f"{settings.influx.url} bucket {settings.influx.bucket}, measurements "
        f"{settings.influx.measurement} and {trade_candles(settings.influx.measurement)}.",
        "Grafana dashboards come with the docker compose deployment (see the README).",
        "The chart page lists file:* (the replayed sample) and binance:* (the feed); choose",
        "`candles from trades` for the candles built from the feed's trades, from 1 second up.",
        "Press Ctrl-C to stop everything this command started.",
        "",
    ]:
        say(line)


def _print_status(api: DagsterApi, run_ids: list[str], settings: Settings) -> None:
    topic = settings.kafka.topic
    status = read_status(stream_status_file(settings.stack_dir, topic))
    if status is not None:
        latest = end_offsets(settings.kafka.bootstrap_servers, topic)
        health = streaming_health(status, topic, latest, time.time())
        stream = (
            f"stream {'alive' if health['alive'] else 'DOWN'}, lag {health['kafka_lag_messages']} "
            f"messages, last progress {health['seconds_since_progress']:.0f} s ago"
        )
    else:
        stream = "stream: no heartbeat yet"
    runs = ", ".join(f"{r[:8]} {api.run_status(r).lower()}" for r in run_ids[-2:])
    say(f"[demo] {stream}; runs {runs}")
