"""The candles API and chart page (`crypto-pipeline serve`): FastAPI, OpenAPI docs at /docs.

- `GET /api/candles`: a series' windows of one length, a page at a time
  (crypto_api/candle_store.py);
- `GET /api/symbols`: the series written, per source, with their window lengths;
- `GET /api/health`: the Spark jobs' heartbeats, the live feeds', the servers' reachability and
  the live push's counts;
- `WS /api/live`: each update of a series' windows of one length, from the candles topic
  (crypto_api/live_hub.py);
- `/`: the chart page (crypto_api/page).

Two sources: `klines` (candles built from candles) and `trades` (built from trades), each a MongoDB
collection and a candles topic. With API_TOKEN set, every /api request carries it (header
`Authorization: Bearer <token>`, or `token=` in the query: what a browser's WebSocket can send)."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import HTTPConnection

from crypto_api.candle_store import (
    EARLIEST_MS,
    LATEST_MS,
    MAX_LIMIT,
    CandleStore,
    NotFound,
    parse_time,
)
from crypto_api.live_hub import MAX_CLIENTS, LiveHub, Subscriber
from crypto_pipeline.candle_rules import EXCHANGE_PATTERN, SYMBOL_PATTERN
from crypto_pipeline.clients import end_offsets, influx_client, mongo_client
from crypto_pipeline.formats.window_values import series_key, split_series
from crypto_pipeline.live.exchanges import EXCHANGES
from crypto_pipeline.live.feed_status import feed_health, read_feed_status
from crypto_pipeline.settings import Settings, candles_topic, live_status_file, stream_status_file
from crypto_pipeline.windows import WINDOW_LABEL, interval_ms, window_ms
from spark_jobs.interface.config import DEFAULT_WATERMARK, trade_targets
from spark_jobs.interface.heartbeat import read_status, streaming_health

PAGE_DIR = Path(__file__).parent / "page"
CHART_LIBRARY = (
    PAGE_DIR / "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js"
)
DEFAULT_LIMIT = 1_000
Source = Literal["klines", "trades"]
SOURCES: tuple[Source, ...] = ("klines", "trades")
ExchangeParam = Annotated[str, Query(pattern=f"^{EXCHANGE_PATTERN}$", examples=["binance"])]
SymbolParam = Annotated[str, Query(pattern=f"^{SYMBOL_PATTERN}$", examples=["BTCUSDT"])]
WindowParam = Annotated[str, Query(pattern=WINDOW_LABEL.pattern, examples=["1m"])]


class Pipeline:
    """What the API reads, per source: its topic (heartbeat, candles topic) and its windows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mongo = mongo_client(settings.mongo.uri)
        database = self.mongo[settings.mongo.database]
        trades_kafka, trades_mongo, _ = trade_targets(
            settings.kafka, settings.mongo, settings.influx
        )
        targets = {
            "klines": (settings.kafka, settings.mongo),
            "trades": (trades_kafka, trades_mongo),
        }
        self.topics = {source: kafka.topic for source, (kafka, _) in targets.items()}
        self.stores = {
            source: CandleStore(database, mongo.collection, mongo.writers_collection)
            for source, (_, mongo) in targets.items()
        }

    def heartbeat(self, source: str) -> dict[str, Any] | None:
        return read_status(stream_status_file(self.settings.stack_dir, self.topics[source]))

    def watermark_ms(self, source: str) -> int:
        """The running job's allowed delay (its heartbeat), or the job's default."""
        status = self.heartbeat(source)
        if status is not None and "watermark_ms" in status:
            return int(status["watermark_ms"])
        return interval_ms(DEFAULT_WATERMARK)


def authorized(token: str, connection: HTTPConnection) -> bool:
    """No token set, or the request carries it: `Authorization: Bearer <token>` or `token=`."""
    if not token:
        return True
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    given = credentials if scheme.lower() == "bearer" else connection.query_params.get("token")
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def create_app(settings: Settings) -> FastAPI:
    pipeline = Pipeline(settings)
    hub = LiveHub(
        settings.kafka.bootstrap_servers,
        {source: candles_topic(topic) for source, topic in pipeline.topics.items()},
        pipeline.watermark_ms,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.start()
        yield
        await hub.stop()
        pipeline.mongo.close()

    app = FastAPI(
        title="crypto-pipeline candles API",
        summary="OHLCV windows from the pipeline's MongoDB, and their live updates.",
        lifespan=lifespan,
    )

    class TokenRequired(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            if request.url.path.startswith("/api/") and not authorized(settings.api_token, request):
                return JSONResponse({"detail": "a valid API token is required"}, status_code=401)
            return await call_next(request)

    app.add_middleware(TokenRequired)

    @app.get("/api/candles")
    def candles(
        exchange: ExchangeParam,
        symbol: SymbolParam,
        window: WindowParam,
        start: str | None = Query(
            None, description="epoch ms or ISO 8601; default: `limit` windows before `end`"
        ),
        end: str | None = Query(
            None,
            description="epoch ms or ISO 8601, exclusive; default: the end of the newest window",
        ),
        limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="windows a page spans"),
        cursor: str | None = Query(None, description="`next_cursor` of the previous page"),
        source: Source = "klines",
    ) -> JSONResponse:
        """A series' windows of one length in [start, end), oldest first, a page of at most
        `limit` windows of time; `next_cursor` (with the same other parameters) gives the next
        page, and is null on the last. `closed`: the stream will not change the window again."""
        size_ms = window_ms(window)
        # Everything given is checked before any read.
        given_end = None if end is None else _time(end, "end")
        given_start = None if start is None else _time(start, "start")
        if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) == 13):
            raise HTTPException(400, "cursor is not a next_cursor of this range")
        store = pipeline.stores[source]
        try:
            latest_end = store.latest_end(exchange, symbol, window)
        except NotFound as missing:
            raise HTTPException(404, str(missing)) from None
        end_ms = latest_end if given_end is None else given_end
        start_ms = (
            max(EARLIEST_MS, end_ms - limit * size_ms) if given_start is None else given_start
        )
        if cursor is not None:
            if not start_ms <= int(cursor) < end_ms:
                raise HTTPException(400, "cursor is not a next_cursor of this range")
            start_ms = int(cursor)
        start_ms -= start_ms % size_ms  # the window holding `start`
        if not EARLIEST_MS <= start_ms < end_ms:
            raise HTTPException(400, "start must be before end, both after 2001-09-09")
        watermark_ms = pipeline.watermark_ms(source)
        page = store.page(
            (exchange, symbol, window), (start_ms, end_ms), limit, latest_end, watermark_ms
        )
        # Plain values already: a JSONResponse skips FastAPI's encoder (a third of the time).
        return JSONResponse(
            {
                "exchange": exchange,
                "symbol": symbol,
                "window": window,
                "source": source,
                "watermark_ms": watermark_ms,
                "candles": page.candles,
                "next_cursor": None if page.next_start_ms is None else str(page.next_start_ms),
            }
        )

    @app.get("/api/symbols")
    def symbols() -> dict[str, Any]:
        """Every series written, per source, with the end of its newest window per length."""
        return {
            source: [
                {"exchange": exchange, "symbol": symbol, "windows": ends}
                for key, ends in sorted(pipeline.stores[source].series().items())
                for exchange, symbol in [split_series(key)]
            ]
            for source in SOURCES
        }

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """What the Dagster health sensors read (the jobs' and the feeds' heartbeats), whether
        each server answers, and the live push's clients and counts."""
        now = time.time()
        streams: dict[str, Any] = {}
        for source, topic in pipeline.topics.items():
            status = pipeline.heartbeat(source)
            if status is None:
                streams[source] = {"state": "never started"}
                continue
            try:
                latest = end_offsets(settings.kafka.bootstrap_servers, topic)
                streams[source] = streaming_health(status, topic, latest, now)
            except Exception as error:  # Kafka away: said here, and under servers
                streams[source] = {"state": "unknown", "error": str(error).splitlines()[0][:200]}
        feeds = [
            feed_health(status, now)
            for exchange in EXCHANGES
            if (
                status := read_feed_status(
                    live_status_file(settings.stack_dir, exchange, settings.kafka.topic)
                )
            )
        ]
        return {
            "streams": streams,
            "feeds": feeds,
            "servers": servers(pipeline),
            "live": hub.status(),
        }

    @app.websocket("/api/live")
    async def live(
        websocket: WebSocket,
        exchange: ExchangeParam,
        symbol: SymbolParam,
        window: WindowParam,
        source: Source = "klines",
    ) -> None:
        """Each update of the series' windows of this length, as GET /api/candles shows a window
        (with `source` and `published_ms`, when the candles topic received it)."""
        if not authorized(settings.api_token, websocket):
            await websocket.close(code=1008, reason="a valid API token is required")
            return
        if hub.full():
            await websocket.close(code=1013, reason=f"{MAX_CLIENTS} clients already")
            return
        await websocket.accept()
        subscriber = hub.subscribe((source, series_key(exchange, symbol), window))
        try:
            await _push(websocket, subscriber, hub)
        finally:
            hub.unsubscribe(subscriber)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html")

    @app.get("/chart.js", include_in_schema=False)
    def chart_script() -> FileResponse:
        return FileResponse(PAGE_DIR / "chart.js", media_type="text/javascript")

    @app.get("/lightweight-charts.js", include_in_schema=False)
    def chart_library() -> FileResponse:
        if not CHART_LIBRARY.exists():
            raise HTTPException(503, "the chart library is not installed: run `make install`")
        return FileResponse(CHART_LIBRARY, media_type="text/javascript")

    return app


def _time(text: str, name: str) -> int:
    try:
        ms = parse_time(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be epoch ms or an ISO 8601 time") from None
    if not EARLIEST_MS <= ms <= LATEST_MS:
        raise HTTPException(400, f"{name} must be between 2001-09-09 and 2286-11-20")
    return ms


async def _push(websocket: WebSocket, subscriber: Subscriber, hub: LiveHub) -> None:
    """The subscriber's updates until it is dropped (then close with 1013) or leaves."""

    async def until_disconnect() -> None:
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            subscriber.drop("the client left")  # wakes the sender

    leaving = asyncio.ensure_future(until_disconnect())
    try:
        await hub.push(websocket.send_text, subscriber)
        if not leaving.done():
            reason = (subscriber.dropped or "dropped")[:120]
            await asyncio.wait_for(websocket.close(code=1013, reason=reason), 1)
    except (WebSocketDisconnect, TimeoutError, RuntimeError, OSError):
        pass  # the client left, or cannot even be told it is dropped
    finally:
        leaving.cancel()


def servers(pipeline: Pipeline) -> dict[str, Any]:
    """Whether MongoDB, InfluxDB and Kafka answer (the error's first line if not)."""
    settings = pipeline.settings

    def mongo() -> None:
        pipeline.mongo.admin.command("ping")

    def influx() -> None:
        with influx_client(settings.influx, timeout_ms=2_000) as client:
            if not client.ping():
                raise ConnectionError(f"InfluxDB at {settings.influx.url} does not answer")

    def kafka() -> None:
        end_offsets(settings.kafka.bootstrap_servers, settings.kafka.topic)

    answers: dict[str, Any] = {}
    for name, probe in (("mongo", mongo), ("influx", influx), ("kafka", kafka)):
        try:
            probe()
            answers[name] = {"up": True}
        except Exception as error:
            answers[name] = {"up": False, "error": str(error).splitlines()[0][:200]}
    return answers
