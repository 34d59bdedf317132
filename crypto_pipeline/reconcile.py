"""What the asset checks compute, as plain functions: the reference aggregates of a replay
recomputed from its CSV with pandas (no code shared with the Spark job), key-by-key comparison of
two sets of aggregates, and the Kafka offsets a Spark checkpoint has committed."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from crypto_pipeline.formats.candle_message import FILE_EXCHANGE, Candle
from crypto_pipeline.formats.trade_message import Trade
from crypto_pipeline.formats.window_values import (
    AggregateKey,
    Aggregates,
    stored_fields,
    window_id,
)
from crypto_pipeline.replay.input_files import (
    read_rows,
)
from crypto_pipeline.windows import window_ms

Record = TypeVar("Record", Candle, Trade)
RELATIVE_TOLERANCE = 1e-9
SAMPLE_SIZE = 10


@dataclass(frozen=True)
class ReplayScope:
    """Which rows a replay sent: the file, its filters, and how event times were shifted.
    Recorded on every `kafka_klines` materialization; read back by `matches_source`."""

    path: str
    symbols: tuple[str, ...] = ()
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int | None = None
    event_shift_ms: int = 0
    # Set when the replay looped: later passes start this much later, so windows reaching past
    # the end of the first pass mix two passes and are not compared.
    pass_span_ms: int | None = None

    def to_metadata(self) -> dict[str, Any]:
        return {**asdict(self), "symbols": list(self.symbols)}

    @classmethod
    def from_metadata(cls, value: dict[str, Any]) -> ReplayScope:
        return cls(**{**value, "symbols": tuple(value.get("symbols") or ())})

    def records(self, kind: type[Record]) -> list[Record]:
        """The good rows (Candle or Trade) of the first pass, as the producer filtered them."""
        selected: list[Record] = []
        for parsed in read_rows(Path(self.path)):
            record = parsed.record
            if not isinstance(record, kind) or (self.symbols and record.symbol not in self.symbols):
                continue
            if self.start_ms is not None and record.event_ms < self.start_ms:
                continue
            if self.end_ms is not None and record.event_ms >= self.end_ms:
                continue
            if self.limit is not None and len(selected) >= self.limit:
                break
            selected.append(record)
        return selected

    def candles(self) -> list[Candle]:
        return self.records(Candle)

    def covers(self, window_start_ms: int, size_ms: int, first_event_ms: int) -> bool:
        """Whether the whole window lies inside what the replay sent (a closed window whose every
        row came from this replay), so that the sinks must equal the recomputation there."""
        shift = self.event_shift_ms
        if self.start_ms is not None and window_start_ms < self.start_ms + shift:
            return False
        if self.end_ms is not None and window_start_ms + size_ms > self.end_ms + shift:
            return False
        return self.pass_span_ms is None or (
            window_start_ms + size_ms <= first_event_ms + self.pass_span_ms
        )


def reference_aggregates(
    candles: list[Candle],
    windows: list[str],
    scope: ReplayScope | None = None,
    exchange: str = FILE_EXCHANGE,
) -> Aggregates:
    """OHLCV per (exchange, symbol, window, window start) from one exchange's candles (a file's
    by default), in pandas. One candle per (symbol,
    event time) counts, the last one sent; quote volume and trades are null when any candle lacks
    them; VWAP is quote volume / volume, with the typical price standing in for a missing quote
    volume, and null when the volume is zero. With a scope, only the windows it covers."""
    if not candles:
        return {}
    frame = pd.DataFrame(candles, columns=list(Candle._fields))
    frame["t"] = frame["open_time_ms"] + (scope.event_shift_ms if scope else 0)
    frame = frame.drop_duplicates(["symbol", "t"], keep="last").sort_values(["symbol", "t"])
    frame["typical_turnover"] = (
        (frame["high"] + frame["low"] + frame["close"]) / 3 * frame["volume"]
    )
    frame["quote_volume_missing"] = frame["quote_volume"].isna()
    frame["trades_missing"] = frame["trades"].isna()
    first_event_ms = int(frame["t"].min())
    result: Aggregates = {}
    for window in windows:
        size = window_ms(window)
        frame["window_start"] = frame["t"] - frame["t"] % size
        grouped = frame.groupby(["symbol", "window_start"], sort=False).agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
            quote_volume=("quote_volume", "sum"),
            quote_volume_missing=("quote_volume_missing", "any"),
            typical_turnover=("typical_turnover", "sum"),
            trades=("trades", "sum"),
            trades_missing=("trades_missing", "any"),
            rows=("t", "size"),
            first_event_ms=("t", "min"),
            last_event_ms=("t", "max"),
        )
        for (symbol, start), row in grouped.iterrows():
            if scope is not None and not scope.covers(int(start), size, first_event_ms):
                continue
            quote_volume = None if row.quote_volume_missing else float(row.quote_volume)
            turnover = float(row.typical_turnover) if quote_volume is None else quote_volume
            volume = float(row.volume)
            result[(exchange, str(symbol), window, int(start))] = {
                "open": float(row.open),
                "high": float(row.high),
                "low": float(row.low),
                "close": float(row.close),
                "volume": volume,
                "quote_volume": quote_volume,
                "vwap": turnover / volume if volume > 0 else None,
                "trades": None if row.trades_missing else int(row.trades),
                "rows": int(row.rows),
                "first_event_ms": int(row.first_event_ms),
                "last_event_ms": int(row.last_event_ms),
            }
    return result


def reference_trade_aggregates(
    trades: list[Trade], windows: list[str], scope: ReplayScope | None = None
) -> Aggregates:
    """Candles from trades per (exchange, symbol, window, window start), in pandas: each (exchange,
    symbol, trade id) once; open and close the first and last trade by (time, id), ids ordered by
    (length, text), which is numeric order for numbers; VWAP = quote volume / volume; taker-buy and
    taker-sell volume. With a scope, only the windows it covers."""
    if not trades:
        return {}
    frame = pd.DataFrame(trades, columns=list(Trade._fields))
    frame["t"] = frame["time_ms"] + (scope.event_shift_ms if scope else 0)
    frame = frame.drop_duplicates(["exchange", "symbol", "trade_id"])
    frame["id_length"] = frame["trade_id"].str.len()
    frame = frame.sort_values(["exchange", "symbol", "t", "id_length", "trade_id"])
    frame["turnover"] = frame["price"] * frame["quantity"]
    frame["bought"] = frame["quantity"].where(frame["taker_side"] == "buy", 0.0)
    frame["sold"] = frame["quantity"].where(frame["taker_side"] == "sell", 0.0)
    first_event_ms = int(frame["t"].min())
    result: Aggregates = {}
    for window in windows:
        size = window_ms(window)
        frame["window_start"] = frame["t"] - frame["t"] % size
        grouped = frame.groupby(["exchange", "symbol", "window_start"], sort=False).agg(
            open=("price", "first"),
            high=("price", "max"),
            low=("price", "min"),
            close=("price", "last"),
            volume=("quantity", "sum"),
            quote_volume=("turnover", "sum"),
            trades=("t", "size"),
            first_event_ms=("t", "min"),
            last_event_ms=("t", "max"),
            taker_buy_volume=("bought", "sum"),
            taker_sell_volume=("sold", "sum"),
        )
        for (exchange, symbol, start), row in grouped.iterrows():
            if scope is not None and not scope.covers(int(start), size, first_event_ms):
                continue
            values = {name: float(value) for name, value in row.items()}
            for name in ("trades", "first_event_ms", "last_event_ms"):
                values[name] = int(row[name])
            values["vwap"] = values["quote_volume"] / values["volume"]
            values["rows"] = values["trades"]
            result[(str(exchange), str(symbol), window, int(start))] = values
    return result


def _same(want: Any, got: Any) -> bool:
    if want is None or got is None:
        return want is got
    return math.isclose(float(got), float(want), rel_tol=RELATIVE_TOLERANCE, abs_tol=0.0)


def _label(key: AggregateKey) -> str:
    return window_id(*key)


@dataclass
class Comparison:
    """Keys only on one side and values that differ beyond the relative tolerance."""

    compared: int = 0
    only_left: list[AggregateKey] = field(default_factory=list)
    only_right: list[AggregateKey] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.only_left or self.only_right or self.different)

    def metadata(self, left: str, right: str) -> dict[str, Any]:
        return {
            "keys_compared": self.compared,
            f"only_in_{left}": len(self.only_left),
            f"only_in_{right}": len(self.only_right),
            "values_different": len(self.different),
            f"sample_only_in_{left}": [_label(k) for k in self.only_left[:SAMPLE_SIZE]],
            f"sample_only_in_{right}": [_label(k) for k in self.only_right[:SAMPLE_SIZE]],
            "sample_differences": self.different[:SAMPLE_SIZE],
        }

    def summary(self, left: str, right: str) -> str:
        if self.passed:
            return f"{self.compared:,} aggregates equal in {left} and {right}"
        parts = []
        if self.only_left:
            parts.append(f"{len(self.only_left)} only in {left} (e.g. {_label(self.only_left[0])})")
        if self.only_right:
            parts.append(
                f"{len(self.only_right)} only in {right} (e.g. {_label(self.only_right[0])})"
            )
        if self.different:
            parts.append(f"{len(self.different)} values differ (e.g. {self.different[0]})")
        return "; ".join(parts)


def compare(left: Aggregates, right: Aggregates, *, left_only_keys: bool = False) -> Comparison:
    """Every aggregate field of every key, at 1e-9 relative. With `left_only_keys`, keys that only
    `right` has are ignored (a sink holds more than one replay's windows)."""
    common = sorted(left.keys() & right.keys())
    result = Comparison(
        compared=len(common),
        only_left=sorted(left.keys() - right.keys()),
        only_right=[] if left_only_keys else sorted(right.keys() - left.keys()),
    )
    for key in common:
        for name in stored_fields(left[key]):
            want, got = left[key].get(name), right[key].get(name)
            if not _same(want, got):
                result.different.append(f"{_label(key)} {name}: {want!r} vs {got!r}")
    return result


def committed_offsets(query_checkpoint: Path) -> dict[str, dict[int, int]] | None:
    """The Kafka offsets up to which a streaming query's last committed micro-batch read (Spark's
    checkpoint: offsets/<batch> holds the batch's end offsets, commits/<batch> marks it done).
    None if no batch has been committed."""
    commits = query_checkpoint / "commits"
    batches = (
        [int(p.name) for p in commits.iterdir() if p.name.isdigit()] if commits.is_dir() else []
    )
    if not batches:
        return None
    lines = (query_checkpoint / "offsets" / str(max(batches))).read_text().splitlines()
    # Line 1 is the log version, line 2 the batch metadata, then one line per source.
    source = json.loads(lines[2])
    return {topic: {int(p): o for p, o in parts.items()} for topic, parts in source.items()}


Series = tuple[str, str]  # (exchange, symbol)


def settled(aggregates: Aggregates, newest_ms: dict[Series, int], watermark_ms: int) -> Aggregates:
    """The windows a running stream can no longer change: those ending at or before their
    series' watermark (its newest event, `newest_ms`, less `watermark_ms`)."""
    return {
        key: values
        for key, values in aggregates.items()
        if key[3] + window_ms(key[2]) <= newest_ms.get(key[:2], 0) - watermark_ms
    }


def newest_events(*sides: Aggregates) -> dict[Series, int]:
    """The newest event time of each series in any of the sides."""
    newest: dict[Series, int] = {}
    for aggregates in sides:
        for (exchange, symbol, _, _), values in aggregates.items():
            series = (exchange, symbol)
            newest[series] = max(newest.get(series, 0), int(values["last_event_ms"]))
    return newest
