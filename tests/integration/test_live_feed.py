"""Live feeds from the simulated exchange (Binance's, Bybit's and OKX's protocols) into real
Kafka, under every fault the simulator injects; the topic and both sinks compared with the
simulator's truth. The three exchanges and a file share one topic and the same symbols: each
exchange's windows stay its own."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from crypto_assets.definitions import build_definitions
from crypto_cli.live_command import start_feed_process
from crypto_pipeline.clients import end_offsets, ensure_topic
from crypto_pipeline.readback import read_influx, read_mongo
from crypto_pipeline.replay.row_fields import ms_to_iso
from crypto_pipeline.settings import (
    REPO_ROOT,
    Settings,
    dead_letter_topic,
    live_status_file,
    trades_topic,
)
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.integration.dagster_helpers import resources_for
from tests.integration.job_helpers import (
    influx_of,
    job_for,
    mongo_of,
    replay_file,
    run_job,
    start_job,
)
from tests.integration.kafka_helpers import consume_all, decoded
from tests.integration.live_helpers import Simulator, simulator, stop_feed, wait_s
from tests.integration.test_poison_and_late import stop, wait_until_committed

EXCHANGES = ("binance", "bybit", "okx")
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
SPEED = 120  # two one-minute candles a second
WINDOWS = ("5m", "1h")
VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "trades")
SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
FILE_ROWS = 600  # five hours of each symbol, all in the topic before the job starts


def read_topic(settings: Settings, topic: str) -> list[tuple[str, dict[str, Any]]]:
    total = sum(end_offsets(settings.kafka.bootstrap_servers, topic).values())
    return decoded(consume_all(settings, topic, total))


def truth_rows(sim: Simulator, exchange: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The simulator's closed candles, as rows of the independent reference."""
    rows = {}
    for symbol in SYMBOLS:
        for t, o, h, low, c, volume, quote, trades in sim.truth(exchange, symbol)["closed"]:
            trade_count = trades if exchange == "binance" else None  # only Binance counts them
            rows[symbol, t] = {
                "exchange": exchange,
                "symbol": symbol,
                "t": t,
                "open": o,
                "high": h,
                "low": low,
                "close": c,
                "volume": volume,
                "quote_volume": quote,
                "trades": trade_count,
            }
    return rows


def final_candles(messages: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, int], dict]:
    """Per candle, the last message (what the job keeps); asserts that nothing revises a candle
    after its closed version."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for _, message in messages:
        key = (message["symbol"], message["event_time_ms"])  # of one exchange
        assert not (last.get(key, {}).get("closed") and not message["closed"]), (
            f"an open revision after the closed candle {key}"
        )
        last[key] = message
    return last


def assert_topic_holds_the_truth(
    candles: dict[tuple[str, int], dict], truth: dict[tuple[str, int], dict], since_ms: int
) -> int:
    """Every closed candle of the truth from `since_ms` up to the newest closed one in the topic
    is there, closed, with the truth's values; nothing else is closed. Returns the cutoff."""
    cutoff = min(
        max(t for (s, t), m in candles.items() if s == symbol and m["closed"]) for symbol in SYMBOLS
    )
    expected = {k: row for k, row in truth.items() if since_ms <= k[1] <= cutoff}
    closed = {k: m for k, m in candles.items() if m["closed"] and k[1] <= cutoff}
    assert sorted(expected.keys() - closed.keys()) == [], "closed candles missing"
    assert sorted(closed.keys() - expected.keys()) == [], "candles the exchange never closed"
    wrong = [k for k in expected if any(closed[k][v] != expected[k][v] for v in VALUES)]
    assert wrong == []
    assert all(m["exchange"] and m["connection"] and m["received_ms"] for m in candles.values())
    return cutoff


def settled(aggregates: dict, cutoff_ms: int) -> dict:
    """The windows that end by the last closed candle (later ones hold open candles)."""
    sizes = {"5m": 300_000, "1h": 3_600_000}
    return {k: v for k, v in aggregates.items() if k[3] + sizes[k[2]] <= cutoff_ms + 60_000}


def test_feeds_under_every_fault_deliver_every_closed_candle_and_the_sinks_equal_the_truth(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """Three feeds (one per exchange protocol) and a file replay into one topic, read by the
    continuous job, while the simulator drops connections (1006), stalls, disconnects on
    schedule, skips candles only REST has, duplicates, reorders, sends malformed frames and open
    versions of closed candles, and rate-limits REST."""
    topic = unique_name
    file_rows = [r for r in read_csv_rows(SAMPLE) if r["symbol"] in SYMBOLS][:FILE_ROWS]
    with simulator(SYMBOLS, SPEED) as sim:
        since = sim.get("/sim/clock")["now_ms"] // 60_000 * 60_000 - 5 * 60_000
        ensure_topic(local_stack.kafka.bootstrap_servers, topic, partitions=3)
        # The same symbols from a file: windows of the "file" exchange, never mixed in.
        replay_file(local_stack, SAMPLE, topic, symbols=frozenset(SYMBOLS), limit=FILE_ROWS)
        job = job_for(local_stack, topic, tmp_path / "ckpt", windows=WINDOWS, trigger="1 second")
        job_process = start_job(job)
        logs = {exchange: tmp_path / f"{exchange}.log" for exchange in EXCHANGES}
        feeds = {
            exchange: start_feed_process(
                local_stack,
                sim,
                exchange,
                SYMBOLS,
                topic,
                logs[exchange],
                "--trades",
                "--stall-s",
                "2",
                "--since",
                str(since),
            )
            for exchange in EXCHANGES
        }
        schedule = [
            (8, "drop", {}),
            (14, "skip", {"count": 3}),
            (20, "stall", {"seconds": 4}),
            (30, "duplicate", {"count": 5}),
            (30, "reorder", {"count": 3}),
            (30, "malformed", {"count": 2}),
            (30, "stale", {"count": 3}),
            (36, "rate-limit", {"count": 3}),
            (36, "disconnect", {}),
        ]
        started = time.monotonic()
        watch = ConnectWatch([status_path(local_stack, e, topic) for e in EXCHANGES])
        injected = {}
        for at_s, kind, options in schedule:
            time.sleep(max(0.0, started + at_s - time.monotonic()))
            injected[kind] = time.monotonic()
            for exchange in EXCHANGES:
                sim.fault(exchange, kind, **options)
        time.sleep(max(0.0, started + 50 - time.monotonic()))
        watch.stop()
        for exchange in EXCHANGES:
            stop_feed(feeds[exchange], logs[exchange])
        truths = {exchange: truth_rows(sim, exchange) for exchange in EXCHANGES}
    messages = read_topic(local_stack, topic)
    dead = read_topic(local_stack, dead_letter_topic(topic))
    trades = read_topic(local_stack, trades_topic(topic))
    cutoffs = {}
    for exchange in EXCHANGES:
        own = [(k, m) for k, m in messages if m.get("exchange") == exchange]
        candles = final_candles(own)
        cutoffs[exchange] = assert_topic_holds_the_truth(candles, truths[exchange], since)
        status = json.loads(status_path(local_stack, exchange, topic).read_text())
        assert status["outcome"] == "stopped"
        assert status["reconnects"] >= 3 and status["stalls"] >= 1, status
        assert status["refills"] > 0 and status["rest_rate_limited"] > 0, status
        assert status["counts"]["stale_revisions"] >= 1, status  # not sent: the close is final
        own_dead = [d for _, d in dead if d["exchange"] == exchange]
        assert len(own_dead) >= 2 and all(d["reason"] and d["raw"] for d in own_dead)
        own_trades = [t for _, t in trades if t["exchange"] == exchange]
        assert own_trades and len(own_trades) == status["counts"]["trades"]
        assert all(t["price"] > 0 and t["qty"] > 0 for t in own_trades)
    # Through the continuous job: both sinks equal the reference computed from the simulator's
    # candles, per exchange, and from the file.
    wait_until_committed(job, job_process)
    stop(job_process)
    cutoff = min(cutoffs.values())
    rows = [r for truth in truths.values() for (_, t), r in truth.items() if since <= t <= cutoff]
    expected = {
        **settled(expected_aggregates(rows, WINDOWS), cutoff),
        **expected_aggregates(file_rows, WINDOWS),
    }
    assert {key[0] for key in expected} == {*EXCHANGES, "file"}
    assert any(key[2] == "1h" for key in expected)
    mongo, bad_ids = read_mongo(mongo_of(local_stack, topic))
    influx = read_influx(influx_of(local_stack, topic))
    assert bad_ids == []
    for sink in (mongo, influx):
        live = settled({k: v for k, v in sink.items() if k[0] != "file"}, cutoff)
        files = {k: v for k, v in sink.items() if k[0] == "file"}
        assert mismatches(expected, {**live, **files})[:10] == []
    gaps = no_gaps(local_stack, topic, tmp_path)
    assert all(e.passed for e in gaps.values()), {k: e.description for k, e in gaps.items()}
    series = (len(EXCHANGES) + 1) * len(SYMBOLS)  # the file's too
    assert gaps["mongo_realtime"].metadata["series_checked"].value == series
    # Reconnects: from the fault to the feeds' next connect (the slowest of the three).
    recoveries = {
        kind: watch.reconnected_after(injected[kind]) for kind in ("drop", "stall", "disconnect")
    }
    print(f"live feed recoveries (s): {recoveries}")  # noqa: T201 (docs/reliability.md)
    assert all(seconds < 30 for seconds in recoveries.values()), recoveries


def no_gaps(settings: Settings, topic: str, tmp_path: Path) -> dict[str, Any]:
    """The `no_gaps` check's evaluation of each sink, run by Dagster on the topic's sinks."""
    defs = build_definitions(resources_for(settings, topic, tmp_path / "dagster"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("reconciliation_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
    return {
        e.asset_key.to_user_string(): e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "no_gaps"
    }


def test_a_gap_neither_websocket_nor_rest_can_fill_fails_no_gaps_with_its_range(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """The exchange loses three candles of BTCUSDT on every interface: the feed cannot refill
    them, and `no_gaps` fails on both sinks naming the topic's missing span."""
    with simulator(SYMBOLS, SPEED) as sim:
        since = sim.get("/sim/clock")["now_ms"] // 60_000 * 60_000 - 5 * 60_000
        log = tmp_path / "binance.log"
        feed = start_feed_process(
            local_stack, sim, "binance", SYMBOLS, unique_name, log, "--since", str(since)
        )
        wait_s(4)
        sim.fault("binance", "lose", symbol="BTCUSDT", count=3)
        wait_s(8)
        stop_feed(feed, log)
        lost = sim.truth("binance", "BTCUSDT")["lost"]
    assert len(lost) == 3
    job = job_for(local_stack, unique_name, tmp_path / "ckpt", windows=WINDOWS)
    assert run_job(job).returncode == 0
    gaps = no_gaps(local_stack, unique_name, tmp_path)
    span = f"{ms_to_iso(lost[0])} .. {ms_to_iso(lost[-1] + 60_000)}"
    for evaluation in gaps.values():
        assert not evaluation.passed
        assert evaluation.metadata["gaps_in_topic"].value == {"binance:BTCUSDT": [span]}
        assert "1 missing in the topic of binance:BTCUSDT" in (evaluation.description or "")


def status_path(settings: Settings, exchange: str, topic: str) -> Path:
    return live_status_file(settings.stack_dir, exchange, topic)


class ConnectWatch:
    """When each feed's heartbeat counted a new connect (read every 0.1 s)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.connects: dict[Path, list[tuple[float, int]]] = {path: [] for path in paths}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            for path in self.paths:
                with contextlib.suppress(OSError, ValueError):
                    count = json.loads(path.read_text())["connects"]
                    if not self.connects[path] or self.connects[path][-1][1] != count:
                        self.connects[path].append((time.monotonic(), count))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def reconnected_after(self, moment: float) -> float:
        delays = [
            min(t for t, _ in changes if t > moment) - moment for changes in self.connects.values()
        ]
        return round(max(delays), 2)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_an_unknown_symbol_stops_the_feed_with_one_line(
    local_stack: Settings, unique_name: str, tmp_path: Path, exchange: str
) -> None:
    with simulator(SYMBOLS, SPEED) as sim:
        command = [
            sys.executable,
            "-m",
            "crypto_cli",
            "live",
            "--exchange",
            exchange,
            "--symbols",
            "BTCUSDT,NOPEUSDT",
            "--topic",
            unique_name,
            "--ws-url",
            sim.ws_url,
            "--rest-url",
            sim.rest_url,
            "--quiet",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("crypto-pipeline: error:"), result.stderr
    assert "NOPE" in errors[0] or "symbol" in errors[0].lower(), errors[0]
