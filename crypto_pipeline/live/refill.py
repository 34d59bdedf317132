"""The closed candles of a range, over the exchange's REST API: paged, by the exchange's clock,
honouring rate limits (429 and 418 with Retry-After, and the exchanges' own rate-limit codes)."""

from __future__ import annotations

import dataclasses
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from crypto_pipeline.live.exchanges.base import Exchange, RestRejected
from crypto_pipeline.live.market import FrameError, KlineUpdate

log = logging.getLogger(__name__)

RATE_LIMIT_STATUSES = (418, 429)
DEFAULT_RETRY_AFTER_S = 1.0


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
    # How long to keep retrying an unreachable API or a rate limit before giving up.
    patience_s: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    requests: int = 0
    rate_limited: int = 0

    def get(self, url: str) -> bytes:
        deadline = time.monotonic() + self.patience_s
        failures = 0
        while True:
            self.requests += 1
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                    body: bytes = response.read()
                    return body
            except urllib.error.HTTPError as error:
                if error.code not in RATE_LIMIT_STATUSES:
                    detail = error.read()[:300].decode(errors="replace")
                    message = f"{self.exchange.name} HTTP {error.code}: {detail}"
                    raise RestRejected(message) from None
                self.rate_limited += 1
                wait_s = retry_after_s(error.headers.get("Retry-After"))
                reason = f"HTTP {error.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                failures += 1
                wait_s = min(2.0**failures, 30.0)
                reason = str(getattr(error, "reason", error))
            if time.monotonic() + wait_s > deadline:
                raise RestUnavailable(f"{self.exchange.name} REST: {reason} ({url})")
            log.warning("%s REST: %s; again in %.1f s", self.exchange.name, reason, wait_s)
            self.sleep(wait_s)

    def server_time_ms(self) -> int:
        answer = self.get(self.exchange.server_time_url(self.rest_url))
        return self.exchange.parse_server_time(answer)

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
            for candle in self._page(symbol, url):
                if start <= candle.open_time_ms <= page_end:
                    candles[candle.open_time_ms] = candle._replace(closed=True)
            start = page_end + step
        return [candles[t] for t in sorted(candles)]

    def _page(self, symbol: str, url: str) -> list[KlineUpdate]:
        deadline = time.monotonic() + self.patience_s
        while True:
            try:
                return self.exchange.parse_klines(symbol, self.get(url))
            except RestRejected as rejected:
                if rejected.retry_after_s is None or time.monotonic() > deadline:
                    raise
                self.rate_limited += 1
                self.sleep(rejected.retry_after_s)
            except FrameError as error:
                message = f"{self.exchange.name} REST answer unreadable: {error}"
                raise RestRejected(message) from None
