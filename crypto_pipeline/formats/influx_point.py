"""The InfluxDB point of a window, both sides: written by the Spark job's sink and the backfill
as line protocol, read back by the checks, the tests and the dashboards' queries.

Measurement as configured; tags `exchange`, `symbol` and `window`; the aggregate values as
fields (integers as `i`); time = window start (ms). InfluxDB has no null and merges the fields of
a point written again, so a field that became null would keep its old value there: every point
carries NULL_FIELDS_FIELD, written each time, naming its null fields whatever values InfluxDB
still holds for them."""

from __future__ import annotations

from typing import Any

from crypto_pipeline.formats.window_values import INTEGER_FIELDS, AggregateKey, stored_fields

NULL_FIELDS_FIELD = "null_fields"
TAGS = ("exchange", "symbol", "window")
# Flux that turns a measurement's fields into one row per point (what `decode` reads).
_ROW_KEY = ", ".join(f'"{name}"' for name in ("_time", *TAGS))
PIVOT = f' |> pivot(rowKey: [{_ROW_KEY}], columnKey: ["_field"], valueColumn: "_value")'


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def encode(values: dict[str, Any], measurement: str) -> str:
    """One point of line protocol from a window's key fields and aggregate values."""
    fields, nulls = [], []
    for name in stored_fields(values):
        value = values[name]
        if value is None:
            nulls.append(name)
            continue
        fields.append(f"{name}={int(value)}i" if name in INTEGER_FIELDS else f"{name}={value!r}")
    fields.append(f'{NULL_FIELDS_FIELD}="{",".join(nulls)}"')
    tags = ",".join(f"{tag}={_escape_tag(values[tag])}" for tag in TAGS)
    return f"{measurement},{tags} {','.join(fields)} {values['window_start_ms']}"


def decode(row: dict[str, Any], time_ms: int) -> tuple[AggregateKey, dict[str, Any]]:
    """A pivoted row's key and aggregate values (those NULL_FIELDS_FIELD names are null)."""
    nulls = set((row.get(NULL_FIELDS_FIELD) or "").split(","))
    values = {name: None if name in nulls else row.get(name) for name in stored_fields(row)}
    return (row["exchange"], row["symbol"], row["window"], time_ms), values
