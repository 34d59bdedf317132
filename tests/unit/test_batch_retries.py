"""A batch run again must do no harm: which write errors are an outage it waits out, how it
retries its writes, and the time its metrics point is keyed by."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from influxdb_client.rest import ApiException
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from pymongo.errors import AutoReconnect, DuplicateKeyError, ServerSelectionTimeoutError
from urllib3.exceptions import ProtocolError

from spark_jobs.batches import batch_time_ms, is_outage, write_riding_out_outages


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


def test_a_batch_keeps_the_time_spark_planned_it_at(tmp_path: Path) -> None:
    """Spark's offset log entry of the batch (written before the batch runs, read again when it
    runs again): its batchTimestampMs keys the batch's metrics point."""
    offsets = tmp_path / "offsets"
    offsets.mkdir()
    entry = '{"batchWatermarkMs":0,"batchTimestampMs":1795897125372,"conf":{}}'
    (offsets / "7").write_text(f'v1\n{entry}\n{{"t":{{"0":12}}}}')
    assert batch_time_ms(offsets, 7) == batch_time_ms(offsets, 7) == 1795897125372
    assert abs(batch_time_ms(offsets, 8) / 1000 - time.time()) < 5  # no entry: now
