"""Which write errors are an outage a batch waits out, and how the batch retries its writes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from influxdb_client.rest import ApiException
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from pymongo.errors import AutoReconnect, DuplicateKeyError, ServerSelectionTimeoutError
from urllib3.exceptions import ProtocolError

from spark_jobs.batches import is_outage, write_riding_out_outages


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ServerSelectionTimeoutError("127.0.0.1:27017: connection refused"), True),
        (AutoReconnect("connection closed"), True),
        (KafkaTimeoutError("delivery timed out"), True),
        (KafkaConnectionError("refused"), True),
        (ProtocolError("connection aborted"), True),
        (ApiException(status=503), True),
        (ApiException(status=400), False),
        (DuplicateKeyError("E11000"), False),
        (ValueError("a bug"), False),
    ],
)
def test_outages_are_told_from_bad_writes(error: Exception, outage: bool) -> None:
    assert is_outage(error) is outage


def failing(times: int, error: Exception, calls: Counter[str], name: str) -> Callable[[], None]:
    def write() -> None:
        calls[name] += 1
        if calls[name] <= times:
            raise error

    return write


def test_only_the_writes_that_met_an_outage_are_retried_until_they_succeed() -> None:
    calls: Counter[str] = Counter()
    writes: dict[str, Callable[[], object]] = {
        "mongo": failing(2, AutoReconnect("down"), calls, "mongo"),
        "influx": failing(0, AutoReconnect("never"), calls, "influx"),
    }
    with ThreadPoolExecutor(2) as pool:
        seconds = write_riding_out_outages(pool, writes, patience_s=10)
    assert calls == {"mongo": 3, "influx": 1}
    assert set(seconds) == {"mongo", "influx"}


def test_a_bad_write_fails_at_once_and_a_long_outage_after_the_patience() -> None:
    calls: Counter[str] = Counter()
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(DuplicateKeyError):
            write_riding_out_outages(
                pool, {"mongo": failing(9, DuplicateKeyError("E11000"), calls, "a")}, 10
            )
        with pytest.raises(AutoReconnect):
            write_riding_out_outages(pool, {"mongo": failing(9, AutoReconnect(), calls, "b")}, 2)
    assert calls == {"a": 1, "b": 2}
