"""The closed candles of a range, over the exchange's REST API: paged, by the exchange's clock,
honouring rate limits (429 and 418 with Retry-After, and the exchanges' own rate-limit codes)."""

from __future__ import annotations

import dataclasses
import functools
import http.client
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from crypto_pipeline.live.exchanges.base import Exchange, RestRejected
from crypto_pipeline.live.market import FrameError, KlineUpdate

log = logging.getLogger(__name__)

RATE_LIMIT_STATUSES = (418, 429)
DEFAULT_RETRY_AFTER_S = 1.0
T = TypeVar("T")


class RestUnavailable(RuntimeError):
    """The REST API did not answer within the client's patience."""


def retry_after_s(header: str | None) -> float:
    """Retry-After in seconds (the exchanges send seconds; a date or nothing: a second)."""
    try:
        return max(0.0, float(header)) if header else DEFAULT_RETRY_AFTER_S
    except ValueError:
        return DEFAULT_RETRY_AFTER_S


@dataclasses.dataclass
class RestClient:
    exchange: Exchange
    rest_url: str
    timeout_s: float = 10.0
    # How long to keep retrying one request (unreachable, 5xx, rate limits) before giving up.
    patience_s: float = 300.0
    stopped: threading.Event = dataclasses.field(default_factory=threading.Event)
    rate_limited: int = 0

    def stop(self) -> None:
        """Requests under way and waiting give up at once (RestUnavailable)."""
        self.stopped.set()

    def _call(self, url: str, parse: Callable[[bytes], T]) -> T:
        """The parsed answer; retried while the API is unreachable, answers 5xx, or asks to come
        back later (429, 418, a 403 with Retry-After, the exchanges' rate-limit codes)."""
        deadline = time.monotonic() + self.patience_s
        failures = 0
        while not self.stopped.is_set():
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                    return parse(response.read())
            except urllib.error.HTTPError as error:
                later = error.headers.get("Retry-After")
                if error.code in RATE_LIMIT_STATUSES or (error.code == 403 and later):
                    self.rate_limited += 1
                    wait_s, reason = retry_after_s(later), f"HTTP {error.code}"
                elif error.code >= 500:
                    failures += 1
                    wait_s, reason = min(2.0**failures, 30.0), f"HTTP {error.code}"
                else:
                    detail = error.read()[:300].decode(errors="replace")
                    message = f"{self.exchange.name} HTTP {error.code}: {detail}"
                    raise RestRejected(message) from None
            except RestRejected as rejected:
                if rejected.retry_after_s is None:
                    raise
                self.rate_limited += 1
                wait_s, reason = rejected.retry_after_s, str(rejected)
            except FrameError as error:
                message = f"{self.exchange.name} REST answer unreadable: {error}"
                raise RestRejected(message) from None
            except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, TLS
                failures += 1
                wait_s = min(2.0**failures, 30.0)
                reason = str(getattr(error, "reason", error)) or type(error).__name__
            if time.monotonic() + wait_s > deadline:
                raise RestUnavailable(f"{self.exchange.name} REST: {reason} ({url})")
            log.warning("%s REST: %s; again in %.1f s", self.exchange.name, reason, wait_s)
            self.stopped.wait(wait_s)
        raise RestUnavailable(f"{self.exchange.name} REST: the feed is stopping")

    def server_time_ms(self) -> int:
        return self._call(
            self.exchange.server_time_url(self.rest_url), self.exchange.parse_server_time
        )

    def unknown_symbols(self, symbols: list[str], interval: str) -> dict[str, str]:
        """The symbols the exchange rejects (symbol -> its answer), asking for one candle each:
        not every exchange refuses a subscription to a pair it does not list (Binance accepts
        it and sends nothing)."""
        step = self.exchange.interval_ms(interval)
        now = self.server_time_ms()
        rejected = {}
        for symbol in symbols:
            url = self.exchange.klines_url(self.rest_url, symbol, interval, now - step, now)
            try:
                self._call(url, functools.partial(self.exchange.parse_klines, symbol))
            except RestRejected as error:
                rejected[symbol] = str(error)
        return rejected

    def closed_candles(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        now_ms: int | None = None,
    ) -> list[KlineUpdate]:
        """The closed candles opened in [start_ms, end_ms] (None: up to the last closed one by
        the exchange's clock, `now_ms` if given), oldest first, each marked closed."""
        step = self.exchange.interval_ms(interval)
        now = self.server_time_ms() if now_ms is None else now_ms
        last_closed = now // step * step - step
        end = last_closed if end_ms is None else min(end_ms, last_closed)
        start = -(-start_ms // step) * step
        candles: dict[int, KlineUpdate] = {}
        while start <= end:
            page_end = min(end, start + (self.exchange.rest_page_limit - 1) * step)
            url = self.exchange.klines_url(self.rest_url, symbol, interval, start, page_end)
            for candle in self._call(url, functools.partial(self.exchange.parse_klines, symbol)):
                if start <= candle.open_time_ms <= page_end:
                    candles[candle.open_time_ms] = candle._replace(closed=True)
            start = page_end + step
        return [candles[t] for t in sorted(candles)]
