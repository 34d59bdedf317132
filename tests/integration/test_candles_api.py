"""The serving layer on the real stack: the sample replayed and the Spark job run (its three sinks),
then `crypto-pipeline serve` in its own process, read over HTTP and WebSocket and in headless
Chromium. Candles are compared with aggregates computed from the CSV (tests/expected_ohlcv.py)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from crypto_api.candle_store import FRONTIERS, id_range
from crypto_cli.serve_command import ApiProcess
from crypto_pipeline.clients import iter_records, kafka_admin, mongo_client
from crypto_pipeline.formats import candle_update
from crypto_pipeline.settings import REPO_ROOT, Settings, candles_topic
from tests.expected_ohlcv import expected_aggregates, mismatches, read_csv_rows
from tests.integration.browser import Page, chromium_page
from tests.integration.conftest import free_port
from tests.integration.job_helpers import job_for, replay_file, run_job

SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
WINDOWS = ("5m", "1h")
WATERMARK_MS = 30 * 60_000  # the job's default allowed delay (no heartbeat: the API's default)
# 2025-01-03T00:10Z: after the sample's last minute (23:59), two 5-minute windows later.
NEW_CANDLE_MS = 1_735_863_000_000
SCREENSHOT = REPO_ROOT / "artifacts" / "chart_page.png"


class Served:
    def __init__(self, settings: Settings, name: str, directory: Path) -> None:
        self.settings, self.name, self.directory = settings, name, directory
        self.job = job_for(settings, name, directory / "ckpt", windows=WINDOWS)
        env = {
            "KAFKA_TOPIC": name,
            "MONGO_DATABASE": name,
            "INFLUXDB_MEASUREMENT": name,
            "STACK_DIR": str(directory / "state"),
        }
        self.api = ApiProcess(env, free_port(), directory / "api.log")

    def get(self, path: str, **query: Any) -> tuple[int, Any]:
        url = f"{self.api.url}{path.lstrip('/')}?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def clients(self) -> int:
        return int(self.get("/api/health")[1]["live"]["clients"])

    @contextmanager
    def live(self, symbol: str, window: str, **options: Any) -> Iterator[ClientConnection]:
        """A WebSocket client of /api/live, once the API has subscribed it."""
        query = urllib.parse.urlencode({"exchange": "file", "symbol": symbol, "window": window})
        url = self.api.url.replace("http://", "ws://") + f"api/live?{query}"
        before = self.clients()
        with connect(url, **options) as client:
            deadline = time.monotonic() + 10
            while self.clients() <= before:
                assert time.monotonic() < deadline, "the WebSocket client was not subscribed"
                time.sleep(0.1)
            yield client


@pytest.fixture(scope="module")
def served(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = f"t_api_{uuid.uuid4().hex[:8]}"
    directory = tmp_path_factory.mktemp("api")
    replay_file(local_stack, SAMPLE, name)
    result = run_job(job_for(local_stack, name, directory / "ckpt", windows=WINDOWS))
    assert result.returncode == 0, result.stderr[-3000:]
    served = Served(local_stack, name, directory)
    try:
        yield served
    finally:
        served.api.stop()


def all_pages(served: Served, symbol: str, window: str, limit: int) -> list[dict[str, Any]]:
    """Every candle of the sample's range through next_cursor, checking each page's size."""
    query = {"exchange": "file", "symbol": symbol, "window": window, "limit": limit}
    query |= {"start": "2025-01-01T00:00:00Z", "end": str(NEW_CANDLE_MS)}
    candles: list[dict[str, Any]] = []
    while True:
        status, page = served.get("/api/candles", **query)
        assert status == 200, page
        assert len(page["candles"]) <= limit
        candles += page["candles"]
        if page["next_cursor"] is None:
            return candles
        query["cursor"] = page["next_cursor"]


def test_the_api_serves_the_reference_candles_page_by_page_with_their_closed_flag(
    served: Served,
) -> None:
    rows = read_csv_rows(SAMPLE)
    expected = expected_aggregates(rows, WINDOWS)
    newest = {symbol: max(r["t"] for r in rows if r["symbol"] == symbol) for symbol in ("BTCUSDT",)}
    served_candles: dict[Any, dict[str, Any]] = {}
    for symbol in sorted({r["symbol"] for r in rows}):
        for window in WINDOWS:
            candles = all_pages(served, symbol, window, limit=100)
            starts = [c["start_ms"] for c in candles]
            assert starts == sorted(set(starts))
            served_candles |= {("file", symbol, window, c["start_ms"]): c for c in candles}
    assert mismatches(expected, served_candles)[:10] == []
    for (_, symbol, _, _), shown in served_candles.items():
        if symbol in newest:
            assert shown["closed"] == (shown["end_ms"] <= newest[symbol] - WATERMARK_MS), shown
    assert any(c["closed"] for c in served_candles.values())
    assert not all(c["closed"] for c in served_candles.values())

    status, listed = served.get("/api/symbols")
    assert status == 200
    assert {(s["exchange"], s["symbol"]) for s in listed["klines"]} == {
        ("file", "BTCUSDT"),
        ("file", "ETHUSDT"),
        ("file", "SOLUSDT"),
    }
    assert listed["trades"] == []


def test_the_candles_topic_holds_exactly_what_mongodb_holds(served: Served) -> None:
    topic = candles_topic(served.name)
    latest = {
        record.key.decode(): candle_update.decode(record.value)
        for record in iter_records(served.settings.kafka.bootstrap_servers, topic)
        if b"SLOWTEST" not in record.key  # the slow-client test's own updates
    }
    with mongo_client(served.settings.mongo.uri) as client:
        stored = {doc["_id"]: doc for doc in client[served.name]["realtime"].find({})}
    assert len(stored) >= 3 * (576 + 48)  # 2 days of 3 symbols (and the new candle, if added)
    assert latest.keys() == stored.keys()
    for key, document in stored.items():
        shown = latest[key]
        for moment in ("window_start", "window_end"):
            assert (
                shown[moment].timestamp()
                == document[moment].replace(tzinfo=shown[moment].tzinfo).timestamp()
            )
        same = {k: v for k, v in shown.items() if k not in ("window_start", "window_end")}
        assert same == {
            k: v for k, v in document.items() if k not in ("window_start", "window_end")
        }
    admin = kafka_admin(served.settings.kafka.bootstrap_servers)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    configs = described["topic"][topic]
    assert configs["cleanup.policy"]["value"] == "compact"


def test_a_page_and_the_series_list_are_ranges_of_the_id_index_not_scans(served: Served) -> None:
    """What FerretDB's SQLite plans for the API's two queries (MongoDB uses its `_id` index for
    both alike)."""
    window_range = id_range("file", "BTCUSDT", "5m", 1_735_689_600_000, 1_735_719_600_000)
    with mongo_client(served.settings.mongo.uri) as client:
        database = client[served.name]
        for collection, query in (("realtime_writers", FRONTIERS), ("realtime", window_range)):
            explained = database.command("explain", {"find": collection, "filter": query})
            (plan,) = explained["queryPlanner"]["Plan"]
            assert "SEARCH" in plan and "USING INDEX" in plan and "_id_" in plan, plan
            assert explained["filterPushdown"] is True
    listed = served.get("/api/symbols")[1]["klines"]
    assert {s["symbol"]: sorted(s["windows"]) for s in listed}["BTCUSDT"] == ["1h", "5m"]
    # The OpenAPI document (what /docs shows) describes the HTTP endpoints.
    status, openapi = served.get("/openapi.json")
    assert status == 200
    assert {"/api/candles", "/api/symbols", "/api/health"} <= set(openapi["paths"])


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"symbol": "NOPEUSDT", "window": "5m"}, 404),  # unknown symbol
        ({"symbol": "BTCUSDT", "window": "15m"}, 404),  # a length the series does not have
        ({"symbol": "btc", "window": "5m"}, 422),
        ({"symbol": "BTCUSDT", "window": "5x"}, 422),
        ({"symbol": "BTCUSDT", "window": "5m", "limit": "100000"}, 422),  # huge limit
        ({"symbol": "BTCUSDT", "window": "5m", "limit": "0"}, 422),
        ({"symbol": "BTCUSDT", "window": "5m", "start": "yesterday"}, 400),
        ({"symbol": "BTCUSDT", "window": "5m", "start": "1999-01-01"}, 400),
        ({"symbol": "BTCUSDT", "window": "5m", "start": "2025-01-02", "end": "2025-01-01"}, 400),
        ({"symbol": "BTCUSDT", "window": "5m", "cursor": "12"}, 400),
        ({"symbol": "BTCUSDT", "window": "5m", "source": "ticks"}, 422),
    ],
)
def test_bad_requests_get_a_clear_4xx(served: Served, query: dict[str, str], status: int) -> None:
    got, body = served.get("/api/candles", exchange="file", **query)
    assert got == status, body
    assert body["detail"]


def test_a_token_is_required_beyond_loopback_and_then_on_every_request(
    served: Served, tmp_path: Path
) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "crypto_cli", "serve", "--port", "0"],
        env={**os.environ, "API_HOST": "0.0.0.0", "API_TOKEN": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("crypto-pipeline: error: serving on 0.0.0.0 (not loopback)")
    assert len(refused.stderr.strip().splitlines()) == 1
    env = {"KAFKA_TOPIC": served.name, "MONGO_DATABASE": served.name, "API_TOKEN": "s3cret"}
    api = ApiProcess(env, free_port(), tmp_path / "api.log")
    try:
        with pytest.raises(urllib.error.HTTPError) as missing:
            api.get("/api/symbols")
        assert missing.value.code == 401
        for credentials in ({"Authorization": "Bearer s3cret"}, {}):
            query = "" if credentials else "?token=s3cret"
            request = urllib.request.Request(api.url + "api/symbols" + query, headers=credentials)
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.loads(response.read())["klines"]
        assert b"lightweight-charts.js" in api.get("/")  # the page is public, its calls are not
        live = (
            api.url.replace("http://", "ws://") + "api/live?exchange=file&symbol=BTCUSDT&window=5m"
        )
        with pytest.raises(InvalidStatus) as refused_socket:
            with connect(live):
                pass
        assert refused_socket.value.response.status_code == 403
        with connect(live + "&token=s3cret") as allowed:
            assert allowed.protocol.state.name == "OPEN"
    finally:
        api.stop()


def add_candle(served: Served, directory: Path) -> None:
    """One more BTCUSDT candle, after a quiet 10 minutes, replayed and run through the job."""
    new = directory / "new.csv"
    with new.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                *("open_time_ms", "symbol", "open", "high", "low", "close"),
                *("volume", "quote_volume", "trades"),
            ]
        )
        writer.writerow(
            [NEW_CANDLE_MS, "BTCUSDT", 96000.5, 96100.25, 95900.0, 96050.75, 2.5, 240125.0, 77]
        )
    replay_file(served.settings, new, served.name)
    result = run_job(served.job)
    assert result.returncode == 0, result.stderr[-3000:]


def wait_for(page: Page, condition: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while page.evaluate(condition) is not True:
        assert time.monotonic() < deadline, f"{condition} not true; page shows {page.text()!r}"
        time.sleep(0.25)


def test_a_new_candle_reaches_websocket_clients_and_the_chart_page(
    served: Served, tmp_path: Path
) -> None:
    page_url = f"{served.api.url}?series=file:BTCUSDT&window=5m"
    with chromium_page(page_url, tmp_path / "profile", free_port()) as page:
        wait_for(page, "document.body.dataset.live === 'open'")
        # The sample's 2 days of 5-minute windows (the page asks for the newest 1,000), no gap.
        assert page.evaluate("document.body.dataset.candles") == "576"
        assert page.evaluate("document.body.dataset.gaps") == "0"
        with served.live("BTCUSDT", "5m") as client:
            add_candle(served, tmp_path)
            update = json.loads(client.recv(timeout=60))
        shown = {k: update[k] for k in ("symbol", "window", "start_ms", "open", "close", "rows")}
        assert shown == {
            "symbol": "BTCUSDT",
            "window": "5m",
            "start_ms": NEW_CANDLE_MS,
            "open": 96000.5,
            "close": 96050.75,
            "rows": 1,
        }
        assert update["published_ms"] > 0
        assert update["closed"] is False
        wait_for(page, "document.body.dataset.candles === '577'")
        assert int(page.evaluate("document.body.dataset.updates")) >= 1
        # The windows of 00:00 and 00:05 have no candle: drawn as gaps, not closed up.
        assert page.evaluate("document.body.dataset.gaps") == "2"
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(SCREENSHOT)
        assert page.errors == []
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 20_000  # a drawn chart, not a blank page


def synthetic_update(symbol: str, index: int) -> tuple[bytes, bytes]:
    start = NEW_CANDLE_MS + index * 60_000
    document = {
        "_id": f"file|{symbol}|1m|{start}",
        "exchange": "file",
        "symbol": symbol,
        "window": "1m",
        "window_start": datetime.fromtimestamp(start / 1000, tz=UTC),
        "window_end": datetime.fromtimestamp(start / 1000 + 60, tz=UTC),
        **{"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": float(index)},
        **{"quote_volume": 3.0, "vwap": 1.5, "trades": 7, "rows": 1},
        **{"first_event_ms": start, "last_event_ms": start, "input_offsets": {"0": index}},
    }
    return candle_update.encode(document)


def test_a_slow_client_is_dropped_while_the_others_keep_receiving(served: Served) -> None:
    """Updates written straight to the candles topic, as the job writes them, for a series of
    this test's own: a client that stops reading (a tiny receive buffer, no compression) is
    dropped; a reading client gets every update, in order."""
    symbol, count = "SLOWTEST", 30_000
    host, port = served.api.url.removeprefix("http://").rstrip("/").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    with (
        served.live(symbol, "1m", sock=stalled, compression=None, max_queue=1),
        served.live(symbol, "1m") as reading,
    ):
        producer = KafkaProducer(bootstrap_servers=served.settings.kafka.bootstrap_servers)
        for index in range(count):  # about 4,000 updates/s: a reading client keeps up
            key, value = synthetic_update(symbol, index)
            producer.send(candles_topic(served.name), key=key, value=value)
            if index % 400 == 399:
                producer.flush()
                time.sleep(0.1)
        producer.flush()
        producer.close()
        received = [json.loads(reading.recv(timeout=60))["volume"] for _ in range(count)]
        assert received == [float(index) for index in range(count)]
        # Dropped once its queue filled or a send stalled 5 s (the watchdog looks every second).
        deadline = time.monotonic() + 15
        while (live := served.get("/api/health")[1]["live"])["dropped_clients"] < 1:
            assert time.monotonic() < deadline, live
            time.sleep(0.5)
        assert live["dropped_clients"] == 1
        assert live["clients"] == 1  # the reading one
