"""The `foreachBatch` of the OHLCV query. Spark reads and parses the micro-batch once; its rows come
to the driver through Arrow, where every symbol's windows advance from the state the previous
batch left (spark_jobs/open_windows.py, kept by spark_jobs/state_store.py). Then MongoDB, InfluxDB
and the dead-letter topic are written at the same time; a failure of any fails the batch (Spark
runs it again from the checkpoint: it starts from the same state, and every write is
idempotent), unless the failure is an outage of a server, which the batch waits out for a while.
The windows are written in a turn of the aggregates' write lease, only where they are not older
than what is stored (spark_jobs/window_versions.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame

from crypto_pipeline.formats.late_ledger import REFUSED, LateEntry
from crypto_pipeline.windows import interval_ms
from spark_jobs.interface.config import WINDOW_SINKS, JobConfig
from spark_jobs.open_windows import CANDLE_COLUMNS, BatchStep, advance_all, window_lengths
from spark_jobs.sinks import (
    aggregates_collection,
    is_transient_http,
    window_writes,
    write_batch_metrics,
    write_dead_letters,
    write_late_rows,
    writers_collection,
)
from spark_jobs.state_store import StateStore
from spark_jobs.window_versions import (
    Admission,
    Frontiers,
    WriterLease,
    admit,
    may_be_stored,
    raise_frontiers,
    read_frontiers,
    stored_versions,
    window_ends,
    window_ids,
    writing_turn,
)

log = logging.getLogger("spark_jobs")
# Window ids a writer remembers as its own writes, at most (then it reads them again once).
OWN_WINDOWS_KEPT = 500_000


@dataclass
class LateRange:
    """Candles that arrived after their symbol's watermark: how many, and their event times."""

    rows: int
    first_event_ms: int
    last_event_ms: int

    @classmethod
    def of(cls, candles: pd.DataFrame) -> LateRange:
        times = candles["event_time_ms"]
        return cls(len(candles), int(times.min()), int(times.max()))

    def add(self, other: LateRange) -> None:
        self.rows += other.rows
        self.first_event_ms = min(self.first_event_ms, other.first_event_ms)
        self.last_event_ms = max(self.last_event_ms, other.last_event_ms)


@dataclass
class BatchTotals:
    """What one micro-batch did."""

    windows: int = 0
    dead_letters: int = 0
    # Windows not written: the stored version covers them (stale) or has input they lack.
    stale_windows: int = 0
    refused_windows: int = 0
    late: dict[str, LateRange] = field(default_factory=dict)
    # What the state holds after the batch: symbols, candles, and the size of the file written.
    state_symbols: int = 0
    state_candles: int = 0
    state_bytes: int = 0
    # Seconds per stage: "compute" (Spark reads and parses, rows to the driver), "windows" (the
    # windowed step and its state file), then each sink's write (they overlap).
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def late_rows(self) -> int:
        return sum(late.rows for late in self.late.values())


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "-"


class BatchWriter:
    """Called by Spark for every micro-batch; `on_batch` receives its totals (the progress
    tracker keeps them for the heartbeat and the Dagster metadata)."""

    def __init__(
        self,
        config: JobConfig,
        state_dir: Path,
        on_batch: Callable[[int, BatchTotals], None],
        offsets_dir: Path | None = None,
        checkpoint_id: str = "",
    ) -> None:
        self.config = config
        self.checkpoint_id = checkpoint_id
        self.store = StateStore(state_dir)
        self.offsets_dir = offsets_dir
        self.windows = window_lengths(config.windows)
        self.delay_ms = interval_ms(config.watermark)
        self.on_batch = on_batch
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sink")
        self.guard: GuardedWindows | None = None

    def compute(
        self, batch: DataFrame, batch_id: int
    ) -> tuple[BatchStep, pd.DataFrame, BatchTotals]:
        """The batch's windows (its state file written) and dead letters; nothing sent yet."""
        totals = BatchTotals()
        started = time.monotonic()
        records: pd.DataFrame = batch.toPandas()  # the only Spark action of the batch
        totals.seconds["compute"] = time.monotonic() - started

        started = time.monotonic()
        valid = records["symbol"].notna()
        state = self.store.load(batch_id)
        step = advance_all(
            state, records.loc[valid, ["symbol", *CANDLE_COLUMNS]], self.windows, self.delay_ms
        )
        totals.state_bytes = self.store.save(batch_id, state, step.states)
        self.store.prune(batch_id)
        totals.state_symbols, totals.state_candles = len(state), state.candles
        totals.seconds["windows"] = time.monotonic() - started

        letters = records.loc[~valid, ["dead_letter_key", "dead_letter_value"]]
        totals.windows, totals.dead_letters = len(step.aggregates), len(letters)
        totals.late = {symbol: LateRange.of(candles) for symbol, candles in step.late.items()}
        return step, letters, totals

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        step, letters, totals = self.compute(batch, batch_id)
        late = [late_entry(symbol, step.late[symbol]) for symbol in sorted(step.late)]
        patience_s = self.config.sink_outage_patience_s

        def write(admission: Admission | None) -> None:
            windows = step.aggregates if admission is None else admission.admitted
            refused = [] if admission is None else refused_entries(admission.conflicts)
            new = frozenset() if admission is None else admission.unstored
            writes = sink_writes(
                self.config, windows, letters, late + refused, batch_id, self.checkpoint_id, new
            )
            if "influx" in self.config.sinks:
                counts = {
                    "windows": len(windows),
                    "dead_letters": totals.dead_letters,
                    "late_rows": totals.late_rows,
                    "stale_windows": totals.stale_windows,
                    "refused_windows": totals.refused_windows,
                }
                time_ms = batch_time_ms(self.offsets_dir, batch_id)
                writes["batch_metrics"] = lambda: write_batch_metrics(
                    "ohlcv", batch_id, counts, time_ms, self.config
                )
            totals.seconds.update(write_riding_out_outages(self.pool, writes, patience_s))

        if len(step.aggregates) and "mongo" in self.config.sinks:
            if self.guard is None:
                self.guard = GuardedWindows(self.config, f"stream {self.checkpoint_id}")
            with writing_turn(self.guard.lease, patience_s, is_outage):
                admission = self.guard.admit(step.aggregates)
                totals.windows = len(admission.admitted)
                totals.stale_windows = admission.stale
                totals.refused_windows = len(admission.conflicts)
                write(admission)
                self.guard.written(admission.admitted)
        else:
            write(None)
        self.on_batch(batch_id, totals)
        if totals.windows or totals.dead_letters or totals.late:
            seconds = totals.seconds
            log.info(
                "batch %d: read in %.2f s, windows in %.2f s; %d windows (MongoDB %s, "
                "InfluxDB %s), %d stale and %d refused, %d dead letters, %d late rows%s",
                batch_id,
                seconds["compute"],
                seconds["windows"],
                totals.windows,
                _rate(totals.windows, seconds.get("mongo", 0.0)),
                _rate(totals.windows, seconds.get("influx", 0.0)),
                totals.stale_windows,
                totals.refused_windows,
                totals.dead_letters,
                totals.late_rows,
                "".join(
                    f"; late {symbol}: {late.rows} rows {late.first_event_ms}..{late.last_event_ms}"
                    for symbol, late in sorted(totals.late.items())
                ),
            )


def late_entry(symbol: str, candles: pd.DataFrame) -> LateEntry:
    """The ledger entry of a symbol's late candles in one batch, with their offsets."""
    late = LateRange.of(candles)
    offsets = candles.groupby("partition")["offset"].agg(["min", "max"])
    return LateEntry(
        symbol,
        late.rows,
        late.first_event_ms,
        late.last_event_ms,
        {str(int(p)): [int(row["min"]), int(row["max"])] for p, row in offsets.iterrows()},
    )


def refused_entries(conflicts: pd.DataFrame) -> list[LateEntry]:
    """A ledger entry per refused window: a backfill recomputes it from the whole topic."""
    return [
        LateEntry(str(symbol), int(rows), int(start), int(end) - 1, kind=REFUSED)
        for symbol, rows, start, end in zip(
            conflicts["symbol"],
            conflicts["rows"],
            conflicts["window_start_ms"],
            conflicts["window_end_ms"],
            strict=True,
        )
    ]


class GuardedWindows:
    """What one writer (the stream, a backfill) may write in a turn of the write lease: the
    windows whose version covers the stored one. Versions are read only where they can matter:
    not for windows this writer wrote since anyone else's turn, nor beyond the frontiers."""

    def __init__(self, config: JobConfig, writer: str) -> None:
        self.config = config
        self.lease = WriterLease(writers_collection(config), writer)
        self.own: set[str] = set()
        self.frontiers: Frontiers = {}

    def admit(self, aggregates: pd.DataFrame) -> Admission:
        """Holding the lease: the windows split by verdict, and the frontiers raised to the
        admitted ones before anything is written (a write that fails half-way leaves no stored
        window past a frontier; a frontier too high only costs lookups)."""
        if self.lease.others_wrote or len(self.own) > OWN_WINDOWS_KEPT:
            self.own.clear()
            self.frontiers.clear()
        collection = aggregates_collection(self.config)
        writers = writers_collection(self.config)
        unknown = sorted(set(aggregates["symbol"]) - set(self.frontiers))
        if unknown:
            self.frontiers.update(read_frontiers(writers, collection, unknown))
        maybe = may_be_stored(aggregates, self.frontiers)
        ids = window_ids(aggregates)
        wanted = [key for key, stored in zip(ids, maybe, strict=True) if stored]
        admission = admit(
            aggregates, stored_versions(collection, [i for i in wanted if i not in self.own])
        )
        raised: Frontiers = {}
        for symbol, latest in window_ends(admission.admitted).items():
            known = self.frontiers.setdefault(symbol, {})
            higher = {label: end for label, end in latest.items() if end > known.get(label, -1)}
            if higher:
                raised[symbol] = higher
                known.update(higher)
        raise_frontiers(writers, raised)
        unstored = {key for key, stored in zip(ids, maybe, strict=True) if not stored}
        return dataclasses.replace(admission, unstored=frozenset(unstored))

    def written(self, admitted: pd.DataFrame) -> None:
        """After the writes: this writer's versions of these windows are the stored ones."""
        self.own.update(window_ids(admitted))


def sink_writes(
    config: JobConfig,
    aggregates: pd.DataFrame,
    letters: pd.DataFrame | None = None,
    late: list[LateEntry] | None = None,
    batch_id: int = 0,
    checkpoint_id: str = "",
    unstored: frozenset[str] = frozenset(),
    frontiers: bool = False,
) -> dict[str, Callable[[], object]]:
    """What a batch writes, by sink: the windows (sinks.window_writes), the dead letters to their
    topic, the late candles into the ledger (beside the aggregates in MongoDB)."""
    writes: dict[str, Callable[[], object]] = {}
    if len(aggregates) and set(config.sinks) & set(WINDOW_SINKS):
        writes.update(window_writes(aggregates, config, unstored, frontiers))
    if letters is not None and len(letters):
        dead = letters.rename(columns={"dead_letter_key": "key", "dead_letter_value": "value"})
        writes["dead_letters"] = lambda: write_dead_letters(dead, config)
    if late and "mongo" in config.sinks:
        writes["late_rows"] = lambda: write_late_rows(late, checkpoint_id, batch_id, config)
    return writes


def batch_time_ms(offsets_dir: Path | None, batch_id: int) -> int:
    """When Spark planned the batch (its offset log entry; now without one): the same time when
    the batch runs again after a failure, so what is keyed by it is overwritten, not doubled."""
    if offsets_dir is not None:
        try:
            lines = (offsets_dir / str(batch_id)).read_text().splitlines()
            return int(json.loads(lines[1])["batchTimestampMs"])
        except (OSError, IndexError, KeyError, ValueError):
            pass
    return int(time.time() * 1000)


def is_outage(error: Exception) -> bool:
    """A server that cannot be reached (or answers "unavailable"), as opposed to a bad write."""
    from kafka.errors import BrokerNotAvailableError, KafkaConnectionError, KafkaTimeoutError
    from pymongo.errors import ConnectionFailure

    outages = (ConnectionFailure, KafkaConnectionError, KafkaTimeoutError, BrokerNotAvailableError)
    return isinstance(error, outages) or is_transient_http(error)


def write_riding_out_outages(
    pool: ThreadPoolExecutor,
    writes: dict[str, Callable[[], object]],
    patience_s: float,
) -> dict[str, float]:
    """`write_concurrently`, the writes that failed because their server was unreachable tried
    again (every write is idempotent) until `patience_s` has passed; then, or for any other
    error, the batch fails."""
    deadline = time.monotonic() + patience_s
    pause_s, seconds = 1.0, {}
    while True:
        done, errors = _write_all(pool, writes)
        seconds.update(done)
        writes = {name: write for name, write in writes.items() if name in errors}
        if not errors:
            return seconds
        error = next(iter(errors.values()))
        if not all(map(is_outage, errors.values())) or time.monotonic() + pause_s > deadline:
            raise error
        log.warning(
            "%s unreachable (%s); retrying in %.0f s, %.0f s before the batch fails",
            ", ".join(errors),
            str(error).splitlines()[0][:200] if str(error) else type(error).__name__,
            pause_s,
            deadline - time.monotonic(),
        )
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 15.0)


def write_concurrently(
    pool: ThreadPoolExecutor, writes: dict[str, Callable[[], object]]
) -> dict[str, float]:
    """Every write at once; seconds per write. The first failure is raised once all ended."""
    seconds, errors = _write_all(pool, writes)
    if errors:
        raise next(iter(errors.values()))
    return seconds


def _write_all(
    pool: ThreadPoolExecutor, writes: dict[str, Callable[[], object]]
) -> tuple[dict[str, float], dict[str, Exception]]:
    """Every write at once, until all have ended: seconds of those that succeeded, errors of the
    others."""

    def timed(write: Callable[[], object]) -> float:
        started = time.monotonic()
        write()
        return time.monotonic() - started

    futures: dict[str, Future[float]] = {
        name: pool.submit(timed, write) for name, write in writes.items()
    }
    seconds, errors = {}, {}
    for name, future in futures.items():
        try:
            seconds[name] = future.result()
        except Exception as error:  # the caller raises it, once every write has ended
            errors[name] = error
    return seconds, errors
