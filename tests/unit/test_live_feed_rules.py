"""The feed's pure rules: backoff with full jitter, Retry-After, where a restart refills from."""

from __future__ import annotations

import random

from crypto_pipeline.live.feed import INITIAL_BACKOFF_S, MAX_BACKOFF_S, backoff_s
from crypto_pipeline.live.feed_sink import ClosedProgress
from crypto_pipeline.live.refill import DEFAULT_RETRY_AFTER_S, retry_after_s

MINUTE = 60_000


def test_backoff_is_jittered_below_a_doubling_cap() -> None:
    random.seed(3)
    for attempt in range(12):
        cap = min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2**attempt)
        waits = [backoff_s(attempt) for _ in range(200)]
        assert all(0 <= wait <= cap for wait in waits)
        assert max(waits) > cap * 0.8 and min(waits) < cap * 0.2  # spread over the range


def test_retry_after_in_seconds_else_a_second() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s("0.5") == 0.5
    assert retry_after_s(None) == DEFAULT_RETRY_AFTER_S
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == DEFAULT_RETRY_AFTER_S


def test_a_restart_refills_from_the_oldest_closed_candle_kafka_has_not_acknowledged() -> None:
    progress = ClosedProgress()
    assert progress.resume_from(MINUTE) is None  # nothing sent: --since decides
    progress.unacknowledged |= {5 * MINUTE, 3 * MINUTE}
    assert progress.resume_from(MINUTE) == 3 * MINUTE
    progress.unacknowledged.clear()
    progress.acknowledged_newest_ms = 5 * MINUTE
    assert progress.resume_from(MINUTE) == 6 * MINUTE
