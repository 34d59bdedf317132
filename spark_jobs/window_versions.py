"""Monotonic windows: no write replaces a stored window with one computed from less or older input.

Every window carries the version of its input (spark_jobs/open_windows.py): `rows`, its distinct
candles, which only grow as input grows, and `input_offsets`, per Kafka partition the highest
offset of its candles. A new version *covers* a stored one when it has at least as many rows and,
in every partition the stored one read, an offset at least as high. Then it is written; otherwise
it is refused:
- `stale`: the stored version covers the new one (a backfill's snapshot of a window the stream
  has completed since, a stream that lags behind a backfill, a recomputation from a topic whose
  retention deleted part of the window): nothing is lost, the write is only counted;
- `conflict`: each has input the other lacks (a stream restarted on a fresh checkpoint from
  `latest`, a backfill after retention deleted candles a stored window holds): neither is whole,
  so the window is reported (late ledger) for a backfill, which tells whether the topic still
  holds all of it.

Writers of one collection (the stream's micro-batches, every backfill) take turns under a lease
in MongoDB (`<collection>_writers`): holding it, a writer reads the stored versions of its
windows, drops what is refused and writes both sinks. MongoDB is the arbiter; InfluxDB, which
has no conditional write, receives only what MongoDB admitted in the same turn, so no other writer
can interleave between the check and the two writes.

Reading versions costs a lookup per window, so a writer skips two kinds: windows it wrote itself
since anyone else's turn (its own versions only grow), and windows that cannot be stored yet. The
latter come from a *frontier* per symbol and window length (a document beside the lease): the
latest window end any writer has written, raised in the same turn as the writes. A window ending
after it was never written by anyone, so it is inserted rather than upserted (2.85 times the
documents/s on FerretDB: bench/results.md); one found stored after all (a writer whose lease
lapsed mid-turn) is replaced only by a version that covers it, else the batch fails; run again, it
reads the versions. The frontiers of a collection written before they existed are taken once from
the collection itself (a marker document says that was done).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd

from crypto_pipeline.formats.window_values import (
    FRONTIER,
    INPUT_OFFSETS,
    epoch_ms,
    series_key,
    split_series,
    window_id,
)

WRITE, STALE, CONFLICT = "write", "stale", "conflict"
# A lease not renewed for this long is free: its holder died.
LEASE_TTL_S = 120.0
LEASE_ID = "aggregates"
# Named for the keys it indexed: frontiers of windows keyed by exchange and symbol.
FRONTIERS_INDEXED = "frontiers-indexed|exchange:symbol"
VERSION_READERS = 4

Offsets = Mapping[str, int]


def covers(rows: int, offsets: Offsets, other_rows: int, other_offsets: Offsets) -> bool:
    """Whether a version (rows, offsets) was computed from at least the input of the other."""
    return rows >= other_rows and all(
        offsets.get(partition, -1) >= offset for partition, offset in other_offsets.items()
    )


def verdict(rows: int, offsets: Offsets, stored: Mapping[str, Any] | None) -> str:
    """WRITE, STALE or CONFLICT for a new version against the stored document (None: absent).
    A document written before versions existed has no offsets: its rows decide."""
    if stored is None:
        return WRITE
    stored_rows, stored_offsets = int(stored.get("rows") or 0), stored.get(INPUT_OFFSETS) or {}
    if covers(rows, offsets, stored_rows, stored_offsets):
        return WRITE
    if covers(stored_rows, stored_offsets, rows, offsets):
        return STALE
    return CONFLICT


@dataclass(frozen=True)
class Admission:
    admitted: pd.DataFrame  # the windows to write
    stale: int
    conflicts: pd.DataFrame  # the refused windows whose stored version lacks part of their input
    # Ids of admitted windows past the frontiers: no writer has stored them, so they are inserted.
    unstored: frozenset[str] = frozenset()


def window_ids(aggregates: pd.DataFrame) -> list[str]:
    return [
        window_id(*split_series(symbol), window, int(start))
        for symbol, window, start in zip(
            aggregates["symbol"], aggregates["window"], aggregates["window_start_ms"], strict=True
        )
    ]


Frontiers = dict[str, dict[str, int]]  # symbol -> window label -> latest window end written


def read_frontiers(writers: Any, aggregates: Any, symbols: list[str]) -> Frontiers:
    """The frontiers of these symbols ({} for a symbol nobody has written), indexing the
    collection once if it was written before frontiers existed (call it holding the lease)."""
    if writers.find_one({"_id": FRONTIERS_INDEXED}) is None:
        ends: Frontiers = {}
        for doc in aggregates.find({}, {"exchange": 1, "symbol": 1, "window": 1, "window_end": 1}):
            end = epoch_ms(doc["window_end"])
            latest = ends.setdefault(series_key(doc["exchange"], doc["symbol"]), {})
            latest[doc["window"]] = max(latest.get(doc["window"], end), end)
        raise_frontiers(writers, ends)
        writers.update_one({"_id": FRONTIERS_INDEXED}, {"$set": {"at": time.time()}}, upsert=True)
    with ThreadPoolExecutor(VERSION_READERS, thread_name_prefix="frontiers") as readers:
        docs = readers.map(lambda symbol: writers.find_one({"_id": FRONTIER + symbol}), symbols)
        return {
            s: dict((doc or {}).get("ends") or {}) for s, doc in zip(symbols, docs, strict=True)
        }


def raise_frontiers(writers: Any, ends: Frontiers) -> None:
    """Each symbol's frontiers raised to these ends (never lowered)."""
    from pymongo import UpdateOne

    operations = [
        UpdateOne(
            {"_id": FRONTIER + symbol},
            {"$max": {f"ends.{label}": end for label, end in latest.items()}},
            upsert=True,
        )
        for symbol, latest in ends.items()
        if latest
    ]
    if operations:
        writers.bulk_write(operations, ordered=False)


def window_ends(aggregates: pd.DataFrame) -> Frontiers:
    """Per symbol and window label, the latest window end among these windows."""
    latest = aggregates.groupby(["symbol", "window"])["window_end_ms"].max()
    ends: Frontiers = {}
    for (symbol, label), end in latest.items():
        ends.setdefault(str(symbol), {})[str(label)] = int(end)
    return ends


def may_be_stored(aggregates: pd.DataFrame, frontiers: Frontiers) -> list[bool]:
    """Whether each window ends no later than its symbol's frontier: only then can another
    writer have stored it."""
    return [
        end <= frontiers.get(symbol, {}).get(label, -1)
        for symbol, label, end in zip(
            aggregates["symbol"], aggregates["window"], aggregates["window_end_ms"], strict=True
        )
    ]


def admit(aggregates: pd.DataFrame, stored: Mapping[str, Mapping[str, Any]]) -> Admission:
    """Split the windows by their verdict against the stored versions (keyed by window id)."""
    verdicts = pd.Series(
        [
            verdict(int(rows), offsets, stored.get(key))
            for key, rows, offsets in zip(
                window_ids(aggregates), aggregates["rows"], aggregates[INPUT_OFFSETS], strict=True
            )
        ],
        index=aggregates.index,
        dtype=object,
    )
    return Admission(
        aggregates[verdicts == WRITE],
        int((verdicts == STALE).sum()),
        aggregates[verdicts == CONFLICT],
    )


class LeaseLost(RuntimeError):
    """The lease expired while its holder wrote, and another writer may have taken it."""


class WriterLease:
    """One writer at a time on a collection of aggregates (a MongoDB document, `expires_at` in
    epoch seconds), held for a turn of writes and renewed while it lasts (`writing_turn`)."""

    def __init__(self, collection: Any, writer: str, ttl_s: float = LEASE_TTL_S) -> None:
        self.collection = collection
        self.writer = f"{writer} (pid {os.getpid()} on {socket.gethostname()})"
        self.ttl_s = ttl_s
        self.token: str | None = None
        # Whether another writer had a turn between this writer's last turn and this one.
        self.others_wrote = True

    def acquire(self, timeout_s: float, is_outage: Callable[[Exception], bool]) -> None:
        """Wait for the lease (a server outage counts as waiting), at most `timeout_s`."""
        from pymongo.errors import DuplicateKeyError

        deadline = time.monotonic() + timeout_s
        pause_s, token = 0.02, uuid.uuid4().hex
        while True:
            try:
                now = time.time()
                taken = self.collection.find_one_and_update(
                    {"_id": LEASE_ID, "$or": [{"holder": None}, {"expires_at": {"$lt": now}}]},
                    {
                        "$set": {
                            "holder": token,
                            "writer": self.writer,
                            "expires_at": now + self.ttl_s,
                        }
                    },
                )
                if taken is not None:
                    self.token = token
                    # The previous turn's writer (a crashed one's too: it is set on acquiring).
                    self.others_wrote = taken.get("writer") != self.writer
                    return
                lease = self.collection.find_one({"_id": LEASE_ID})
                if lease is None:  # the collection's first writer ever: create the lease, retry
                    try:
                        self.collection.insert_one({"_id": LEASE_ID, "holder": None})
                    except DuplicateKeyError:
                        pass
                    continue
                waiting_for = f"held by {lease.get('writer')}"
            except Exception as error:
                if not is_outage(error):
                    raise
                waiting_for = f"MongoDB unreachable ({type(error).__name__})"
            if time.monotonic() + pause_s > deadline:
                raise TimeoutError(f"the aggregates' write lease: {waiting_for} for {timeout_s} s")
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 1.0)

    def _update_held(self, change: dict[str, Any]) -> None:
        result = self.collection.update_one({"_id": LEASE_ID, "holder": self.token}, change)
        if result.matched_count != 1:
            raise LeaseLost(
                f"the aggregates' write lease of {self.writer} expired while it wrote "
                f"(ttl {self.ttl_s:.0f} s): the writes are done again under a new lease"
            )

    def renew(self) -> None:
        self._update_held({"$set": {"expires_at": time.time() + self.ttl_s}})

    def release(self) -> None:
        self._update_held({"$set": {"holder": None}})
        self.token = None


def stored_versions(collection: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The rows and input offsets of the stored windows among `ids`: one lookup by `_id` each,
    VERSION_READERS at a time (FerretDB answers `$in` with a scan of the collection: 3.6 s for
    1,000 ids among 20,000 documents, where 1,000 lookups take 0.8 s)."""
    with ThreadPoolExecutor(VERSION_READERS, thread_name_prefix="versions") as readers:
        docs = readers.map(
            lambda key: collection.find_one({"_id": key}, {"rows": 1, INPUT_OFFSETS: 1}), ids
        )
        return {str(doc["_id"]): doc for doc in docs if doc is not None}


@contextmanager
def writing_turn(
    lease: WriterLease, timeout_s: float, is_outage: Callable[[Exception], bool]
) -> Iterator[WriterLease]:
    """The lease held for one turn of writes, renewed every quarter of its time to live while
    the writes run (however long a batch's writes take, or an outage lasts: while MongoDB is
    down nobody can take it), and released after them, a failed turn's too."""
    lease.acquire(timeout_s, is_outage)
    done = threading.Event()

    def keep_renewing() -> None:
        while not done.wait(lease.ttl_s / 4):
            try:
                lease.renew()
            except Exception as error:
                if not is_outage(error):
                    return  # lost: the release says so, and the turn is done again

    renewer = threading.Thread(target=keep_renewing, name="lease-renewal", daemon=True)
    renewer.start()
    try:
        yield lease
    except BaseException:
        done.set()
        renewer.join()
        try:
            lease.release()
        except Exception:  # the turn's own error is the one to report
            pass
        raise
    done.set()
    renewer.join()
    lease.release()
