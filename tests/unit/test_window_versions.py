"""Which write of a window lands (spark_jobs/window_versions.py), on versions written out by hand
and on the scenario the review reproduced: a backfill's snapshot racing the stream."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from spark_jobs.open_windows import SymbolState, WindowLength, advance
from spark_jobs.window_versions import (
    CONFLICT,
    STALE,
    WRITE,
    admit,
    may_be_stored,
    verdict,
    window_ends,
)

MIN = 60_000
HOUR = WindowLength("1h", 60 * MIN)


def stored(rows: int, offsets: dict[str, int] | None) -> dict[str, Any]:
    return {"rows": rows, **({"input_offsets": offsets} if offsets is not None else {})}


@pytest.mark.parametrize(
    ("rows", "offsets", "stored_doc", "expected"),
    [
        (60, {"0": 100}, None, WRITE),  # nothing stored
        (60, {"0": 100}, stored(60, {"0": 100}), WRITE),  # the same version again (a retry)
        (60, {"0": 120}, stored(60, {"0": 100}), WRITE),  # a copy delivered again, later
        (61, {"0": 120}, stored(60, {"0": 100}), WRITE),  # more candles
        (41, {"0": 80}, stored(60, {"0": 100}), STALE),  # an older snapshot of the window
        (30, {"0": 100}, stored(60, {"0": 100}), STALE),  # part of the input deleted
        (30, {"0": 150}, stored(60, {"0": 100}), CONFLICT),  # newer candles, older ones gone
        (60, {"1": 5}, stored(60, {"0": 100}), CONFLICT),  # another partition only
        (60, {"0": 100, "1": 5}, stored(60, {"0": 100}), WRITE),  # and a second partition
        (60, {"0": 100}, stored(60, None), WRITE),  # a document from before versions
        (59, {"0": 100}, stored(60, None), CONFLICT),  # fewer rows, input unknown: a backfill
    ],
)
def test_a_version_lands_only_where_it_covers_the_stored_one(
    rows: int, offsets: dict[str, int], stored_doc: dict[str, Any] | None, expected: str
) -> None:
    assert verdict(rows, offsets, stored_doc) == expected


def minutes(first: int, last: int, offset_of_first: int) -> pd.DataFrame:
    """One candle a minute (volume 1) at consecutive offsets of partition 0."""
    count = last - first + 1
    return pd.DataFrame(
        {
            "event_time_ms": [m * MIN for m in range(first, last + 1)],
            "partition": [0] * count,
            "offset": list(range(offset_of_first, offset_of_first + count)),
            "open": [1.0] * count,
            "high": [2.0] * count,
            "low": [1.0] * count,
            "close": [1.5] * count,
            "volume": [1.0] * count,
            "quote_volume": [1.5] * count,
            "trades": [1.0] * count,
        }
    )


def test_a_backfill_snapshot_older_than_the_streams_window_is_refused() -> None:
    """The review's race: the backfill reads the topic when an hour holds 41 candles; the stream
    then gets the other 19 and writes the whole hour; the backfill's write comes last. It is
    refused (stale), so the stored hour keeps 60 rows and volume 60, not 41."""
    early, late = minutes(0, 40, 0), minutes(41, 59, 41)
    series = "file:BTCUSDT"
    backfill = advance(SymbolState.empty(), early, [HOUR], 0).aggregates.assign(symbol=series)
    stream = advance(SymbolState.empty(), pd.concat([early, late]), [HOUR], 30 * MIN)
    written = stream.aggregates.assign(symbol=series)
    stored_now = {"file|BTCUSDT|1h|0": written.iloc[0].to_dict()}
    assert (written.iloc[0]["rows"], written.iloc[0]["volume"]) == (60, 60.0)

    admission = admit(backfill, stored_now)
    assert admission.admitted.empty and admission.stale == 1 and admission.conflicts.empty
    # In the other order the backfill's hour lands and the stream's complete one replaces it.
    assert len(admit(written, {"file|BTCUSDT|1h|0": backfill.iloc[0].to_dict()}).admitted) == 1


def test_only_windows_up_to_the_frontier_can_be_stored_already() -> None:
    """A window ending after the latest end any writer wrote for its symbol and length was
    never written: its version need not be read (the live stream's new windows)."""
    windows = pd.DataFrame(
        {
            "symbol": ["A", "A", "A", "B"],
            "window": ["5m", "5m", "1h", "5m"],
            "window_end_ms": [5 * MIN, 10 * MIN, 60 * MIN, 5 * MIN],
        }
    )
    assert window_ends(windows) == {"A": {"5m": 10 * MIN, "1h": 60 * MIN}, "B": {"5m": 5 * MIN}}
    frontiers = {"A": {"5m": 5 * MIN}, "B": {}}
    assert may_be_stored(windows, frontiers) == [True, False, False, False]
