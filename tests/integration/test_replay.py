"""The replay producer against the real broker. Expected messages come from reading the CSV with
the csv module here, not from the producer's parser."""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from crypto_assets.ingestion.market_data import kafka_klines
from crypto_assets.resources import KafkaResource
from crypto_pipeline.clients import KafkaUnavailable, end_offsets
from crypto_pipeline.replay.producer import ReplayError, ReplayOptions, replay
from crypto_pipeline.settings import REPO_ROOT, Settings
from tests.conftest import SHARED_DATA
from tests.integration.conftest import free_port
from tests.integration.kafka_helpers import consume_all, decoded
from tests.poison_cases import FUTURE, YEAR_2095_MS

SHARED_Q1 = SHARED_DATA / "binance_spot_15m_10sym_2025Q1.csv.gz"
SHARED_HISTORY = SHARED_DATA / "binance_spot_15m_10sym_2024-12-30_2026-04-30.csv.gz"
SAMPLE = REPO_ROOT / "data" / "sample_klines_1m.csv.gz"
HEADER = "open_time_ms,symbol,open,high,low,close,volume,quote_volume,trades"
T0 = 1_735_689_600_000  # 2025-01-01T00:00Z


def content_digest(path: Path) -> str:
    """The lineage's digest of a file: BLAKE2b, 8 bytes, of its (decompressed) content."""
    content = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return hashlib.blake2b(content, digest_size=8).hexdigest()


def expected_messages(path: Path) -> list[tuple[str, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as stream:
        rows = list(csv.DictReader(stream))
    digest = content_digest(path)
    return [
        (
            row["symbol"],
            {
                "symbol": row["symbol"],
                "event_time_ms": int(row["open_time_ms"]),
                "open": float(row["open"]),
                "high": float(row["high"]),
                "low": float(row["low"]),
                "close": float(row["close"]),
                "volume": float(row["volume"]),
                "quote_volume": float(row["quote_volume"]),
                "trades": int(row["trades"]),
                "source_file": str(path),
                "source_digest": digest,
                "source_line": line,
            },
        )
        for line, row in enumerate(rows, start=2)
    ]


@pytest.mark.parametrize(
    ("path", "engine"),
    [
        pytest.param(SHARED_HISTORY, "bulk", id="binance-15m-history-bulk"),
        pytest.param(SHARED_Q1, "paced", id="binance-15m-2025Q1-paced"),
        pytest.param(SAMPLE, "bulk", id="generated-sample-bulk"),
        pytest.param(SAMPLE, "paced", id="generated-sample-paced"),
    ],
)
def test_replay_delivers_every_row_once_in_per_symbol_order(
    local_stack: Settings, unique_name: str, path: Path, engine: str
) -> None:
    if not path.exists():
        pytest.skip(f"{path} is not present")
    expected = expected_messages(path)

    summary = replay(
        ReplayOptions(path=path, topic=unique_name, engine=engine),
        local_stack.kafka.bootstrap_servers,
        show_progress=False,
    )

    assert (summary.sent, summary.rejected) == (len(expected), 0)
    records = consume_all(local_stack, unique_name, expected=len(expected), timeout_s=300)
    assert len(records) == len(expected)
    assert sorted(decoded(records), key=lambda kv: kv[1]["source_line"]) == expected
    assert sum(summary.end_offsets.values()) == len(expected)
    partitions: dict[str, set[int]] = {}
    lines_in_offset_order: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        symbol = record.key.decode()
        partitions.setdefault(symbol, set()).add(record.partition)
        lines_in_offset_order.setdefault(symbol, []).append(json.loads(record.value)["source_line"])
    assert all(len(used) == 1 for used in partitions.values())
    file_order = {
        symbol: [v["source_line"] for k, v in expected if k == symbol] for symbol in partitions
    }
    assert lines_in_offset_order == file_order


def test_bulk_and_paced_replays_send_the_same_messages(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """A real file with bad lines of every kind mixed in: the two engines send the same messages
    to the same partitions in the same order, and the same dead letters."""
    source = SHARED_Q1 if SHARED_Q1.exists() else SAMPLE
    lines = gzip.decompress(source.read_bytes()).split(b"\n")
    bad = [
        b"%d,BTCUSDT,10,8,9,8.5,5,55,3" % T0,  # high < low
        b"x,BTCUSDT,1,1,1,1,1,1,1",  # no time
        b"%d,BTC USDT,1,1,1,1,1,1,1" % T0,  # bad symbol
        b"%d,ETHUSDT,1,1,1,1,NaN,1,1" % T0,  # NaN volume
        b"%d,ETHUSDT,1,1,1\xff,1,1,1,1" % T0,  # not UTF-8
        b"%d,ETHUSDT,1,1,1" % T0,  # fields missing
        b'"%d","ETHUSDT","1","2","0.5","1","1","1","1.5"' % T0,  # quoted, trades not whole
        b"%d,BTCUSDT,1,2,0.5,1,1,1,1" % YEAR_2095_MS,  # dated after the clock
    ]
    step = len(lines) // (len(bad) + 1)
    mixed = list(lines)
    for index, line in reversed(list(enumerate(bad, start=1))):
        mixed.insert(index * step, line)
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"\n".join(mixed))
    sent = {}
    for engine in ("paced", "bulk"):
        topic = f"{unique_name}_{engine}"
        summary = replay(
            ReplayOptions(path=path, topic=topic, engine=engine),
            local_stack.kafka.bootstrap_servers,
            show_progress=False,
        )
        assert summary.rejected == len(bad), engine
        messages = consume_all(local_stack, topic, expected=summary.sent, timeout_s=300)
        dead = consume_all(local_stack, f"{topic}.dlq", expected=len(bad))
        sent[engine] = (
            sorted((r.partition, r.offset, r.key, r.value) for r in messages),
            # A dead letter names its topic, which differs between the two.
            [(r.key, {**json.loads(r.value), "topic": "-"}) for r in dead],
            summary.rejection_reasons,
        )
    assert sent["bulk"] == sent["paced"]
    assert sent["bulk"][2][FUTURE] == 1
    assert sorted(letter["source_line"] for _, letter in sent["bulk"][1]) == [
        number for number, line in enumerate(mixed, start=1) if line in bad
    ]


@pytest.mark.parametrize("engine", ["paced", "bulk"])
def test_bad_rows_go_to_the_dead_letter_topic_with_reasons(
    local_stack: Settings, unique_name: str, tmp_path: Path, engine: str
) -> None:
    good = [f"{T0 + 60_000 * i},BTCUSDT,10,12,9,11,5,55,3" for i in range(1, 11)]
    bad = {
        f"{T0},BTCUSDT,10,12,9,11,,55,3": "missing volume",
        f"{T0},BTCUSDT,ten,12,9,11,5,55,3": "open is not a number: 'ten'",
        "sometime,BTCUSDT,10,12,9,11,5,55,3": "open_time is not a number: 'sometime'",
        f"{T0},BTCUSDT,10,8,9,8.5,5,55,3": "high < low",
        f"{T0},BTCUSDT,10,12,9,13,5,55,3": "close outside [low, high]",
        f"{T0},BTCUSDT,10,12,9,11,-5,55,3": "negative volume",
    }
    lines = [HEADER, *good[:5], *bad, *good[5:]]
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n")

    summary = replay(
        ReplayOptions(path=path, topic=unique_name, engine=engine),
        local_stack.kafka.bootstrap_servers,
        show_progress=False,
    )

    assert (summary.sent, summary.rejected) == (10, 6)
    assert summary.sent + summary.rejected == len(lines) - 1
    assert len(consume_all(local_stack, unique_name, expected=10)) == 10
    dead = decoded(consume_all(local_stack, f"{unique_name}.dlq", expected=6))
    assert sorted((v["source_line"], v["raw"], v["reason"]) for _, v in dead) == [
        (line_number, raw, reason) for line_number, (raw, reason) in enumerate(bad.items(), start=7)
    ]
    assert {v["source_file"] for _, v in dead} == {str(path)}


def test_speed_scales_event_time_spacing(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    rows = [f"{T0 + 1_000 * i},ETHUSDT,10,12,9,11,5,55,3" for i in range(20)]  # 1 s apart
    path = tmp_path / "paced.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")

    started = time.monotonic()
    summary = replay(
        ReplayOptions(path=path, topic=unique_name, speed=10),
        local_stack.kafka.bootstrap_servers,
        show_progress=False,
    )
    elapsed = time.monotonic() - started

    assert summary.sent == 20
    assert 1.7 <= elapsed <= 5.0  # 19 s of event time at 10x is 1.9 s


def test_loop_shifts_event_times_by_the_span_sends_dead_letters_once_and_rebase_starts_at_now(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    rows = [f"{T0 + 60_000 * i},SOLUSDT,10,12,9,11,5,55,3" for i in range(5)]  # span 5 min
    path = tmp_path / "loop.csv"
    path.write_text("\n".join([HEADER, *rows, f"{T0},SOLUSDT,10,8,9,8.5,5,55,3"]) + "\n")
    now = 1_800_000_000_000
    clock = itertools.count(now, 60_000)  # a minute passes at every look at the clock

    summary = replay(
        ReplayOptions(path=path, topic=unique_name, loop=True, limit=12, rebase_now=True),
        local_stack.kafka.bootstrap_servers,
        show_progress=False,
        now_ms=lambda: next(clock),
    )

    assert (summary.sent, summary.loops, summary.rejected) == (12, 3, 1)
    times = [v["event_time_ms"] for _, v in decoded(consume_all(local_stack, unique_name, 12))]
    # The first pass ends at the clock's first reading; the next ones follow, never ahead of it.
    assert sorted(times) == [now + 60_000 * (i - 4) for i in range(12)]
    # The bad line's dead letter is sent on the first pass only, keyed by file and line.
    dead = consume_all(local_stack, f"{unique_name}.dlq", expected=1)
    assert [r.key.decode() for r in dead] == [f"{path}:7"]


def test_symbol_and_time_filters(local_stack: Settings, unique_name: str) -> None:
    options = ReplayOptions(
        path=SAMPLE,
        topic=unique_name,
        symbols=frozenset({"ETHUSDT"}),
        start_ms=1735689600000 + 60_000 * 10,  # 2025-01-01T00:10Z
        end_ms=1735689600000 + 60_000 * 70,  # 2025-01-01T01:10Z
    )
    summary = replay(options, local_stack.kafka.bootstrap_servers, show_progress=False)
    values = [v for _, v in decoded(consume_all(local_stack, unique_name, expected=60))]
    assert summary.sent == len(values) == 60
    assert {v["symbol"] for v in values} == {"ETHUSDT"}
    assert min(v["event_time_ms"] for v in values) == options.start_ms
    assert max(v["event_time_ms"] for v in values) == (options.end_ms or 0) - 60_000


def test_unreachable_broker_is_a_quick_clear_error(local_stack: Settings) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:"):
        replay(ReplayOptions(path=SAMPLE, topic="never"), nowhere, show_progress=False)
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("path", "speed", "rows"),
    [
        pytest.param(SAMPLE, "600", 8640, id="paced"),
        pytest.param(SHARED_HISTORY, "max", 466_730, id="bulk"),
    ],
)
def test_ctrl_c_flushes_and_prints_the_summary(
    local_stack: Settings, unique_name: str, path: Path, speed: str, rows: int
) -> None:
    if not path.exists():
        pytest.skip(f"{path} is not present")
    command = [sys.executable, "-m", "crypto_cli", "replay", str(path)]
    process = subprocess.Popen(
        [*command, "--topic", unique_name, "--speed", speed],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    # Interrupt once rows flow: a fixed sleep raced the interpreter's start on a busy machine.
    deadline = time.monotonic() + 60
    while sum(end_offsets(local_stack.kafka.bootstrap_servers, unique_name).values()) < 100:
        assert process.poll() is None and time.monotonic() < deadline, "the replay sent nothing"
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert "replay interrupted" in out
    sent = int(
        next(line for line in out.splitlines() if "sent" in line).split()[1].replace(",", "")
    )
    assert 0 < sent < rows
    assert len(consume_all(local_stack, unique_name, expected=sent, timeout_s=30)) == sent


def test_a_bulk_worker_killed_is_a_clear_error_and_resume_sends_the_rest(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """One of the bulk replay's parsing processes SIGKILLed mid-file: the replay flushes what came
    before, exits 1 with one line that says so, and --resume completes the topic exactly."""
    path = SHARED_HISTORY if SHARED_HISTORY.exists() else SAMPLE
    rows = len(gzip.decompress(path.read_bytes()).splitlines()) - 1  # all but the header
    command = [sys.executable, "-m", "crypto_cli", "replay", str(path), "--quiet"]
    process = subprocess.Popen(
        [*command, "--topic", unique_name, "--engine", "bulk"],
        stderr=subprocess.PIPE,
        text=True,
    )
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 60
    while sum(end_offsets(local_stack.kafka.bootstrap_servers, unique_name).values()) < 100:
        assert process.poll() is None and time.monotonic() < deadline, "the replay sent nothing"
        time.sleep(0.05)
    worker = int(children.read_text().split()[0])
    os.kill(worker, signal.SIGKILL)
    _, err = process.communicate(timeout=120)

    assert process.returncode == 1
    (line,) = err.strip().splitlines()
    assert line.startswith("crypto-pipeline: error: a parsing worker died") and "--resume" in line
    resumed = subprocess.run(
        [*command, "--topic", unique_name, "--resume"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    lines = Counter(
        value["source_line"]
        for _, value in decoded(consume_all(local_stack, unique_name, expected=rows, timeout_s=300))
    )
    assert len(lines) == rows and max(lines.values()) == 1


def test_replay_materializes_the_topic_asset_with_metadata(
    local_stack: Settings, unique_name: str
) -> None:
    kafka = KafkaResource(bootstrap_servers=local_stack.kafka.bootstrap_servers, topic=unique_name)
    config = {"path": str(SAMPLE), "symbols": ["BTCUSDT"], "limit": 500}

    result = dg.materialize(
        [kafka_klines],
        run_config={"ops": {"kafka_klines": {"config": config}}},
        resources={"kafka": kafka},
    )

    assert result.success
    [materialization] = result.asset_materializations_for_node("kafka_klines")
    metadata: dict[str, Any] = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["rows_sent"] == 500
    assert metadata["rows_rejected"] == 0
    assert sum(metadata["end_offsets"].values()) == 500
    assert metadata["first_event_time"] == "2025-01-01T00:00:00+00:00"
    assert metadata["last_event_time"] == "2025-01-01T08:19:00+00:00"
    keys = Counter(r.key for r in consume_all(local_stack, unique_name, expected=500))
    assert keys == {b"BTCUSDT": 500}


def test_a_truncated_file_is_refused_before_anything_is_sent(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    rows = [f"{T0 + 60_000 * i},BTCUSDT,10,12,9,11,5,55,3" for i in range(20_000)]
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([HEADER, *rows]) + "\n").encode())[:-4000])

    with pytest.raises(ReplayError, match="cannot read to its end"):
        replay(
            ReplayOptions(path=path, topic=unique_name),
            local_stack.kafka.bootstrap_servers,
            show_progress=False,
        )
    assert end_offsets(local_stack.kafka.bootstrap_servers, unique_name) == {}


def test_a_resumed_replay_sends_only_what_is_missing(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """A replay that stopped part-way (here after 3,000 rows), run again with --resume: every
    line of the file is then in the topic or its dead letters exactly once."""
    rows = gzip.open(SAMPLE, "rt").read().splitlines()
    bad = [f"{T0},BTCUSDT,10,8,9,8.5,5,55,3", "x,BTCUSDT,1,1,1,1,1,1,1"]
    lines = [rows[0], *rows[1:2000], bad[0], *rows[2000:5000], bad[1], *rows[5000:]]
    path = tmp_path / "resumable.csv"
    path.write_text("\n".join(lines) + "\n")
    bootstrap = local_stack.kafka.bootstrap_servers

    first = replay(
        ReplayOptions(path=path, topic=unique_name, limit=3000), bootstrap, show_progress=False
    )
    resumed = replay(
        ReplayOptions(path=path, topic=unique_name, resume=True), bootstrap, show_progress=False
    )
    again = replay(
        ReplayOptions(path=path, topic=unique_name, resume=True), bootstrap, show_progress=False
    )

    assert (first.sent, first.rejected) == (3000, 1)
    assert (resumed.sent, resumed.rejected, resumed.already_sent) == (len(rows) - 3001, 1, 3001)
    assert (again.sent, again.rejected, again.already_sent) == (0, 0, len(lines) - 1)
    topic = decoded(consume_all(local_stack, unique_name, expected=len(rows) - 1))
    dead = decoded(consume_all(local_stack, f"{unique_name}.dlq", expected=2))
    sent_lines = Counter(v["source_line"] for _, v in topic)
    dead_lines = Counter(v["source_line"] for _, v in dead)
    assert max(sent_lines.values()) == max(dead_lines.values()) == 1
    assert set(sent_lines) | set(dead_lines) == set(range(2, len(lines) + 1))
    with pytest.raises(ReplayError, match="--resume cannot be combined with --loop"):
        replay(ReplayOptions(path=path, topic=unique_name, resume=True, loop=True), bootstrap)


def test_a_file_changed_at_the_same_path_is_resumed_as_a_new_file(
    local_stack: Settings, unique_name: str, tmp_path: Path
) -> None:
    """A replay stops after 100 of 200 lines; the file is then corrected in place (line 50's
    close). `--resume` sends the corrected file whole: its lines are another content's, so none
    counts as sent (before, lines were matched by number alone and the correction was lost)."""
    header, *rows = gzip.open(SAMPLE, "rt").read().splitlines()[:201]
    path = tmp_path / "corrected.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    bootstrap = local_stack.kafka.bootstrap_servers
    first = replay(
        ReplayOptions(path=path, topic=unique_name, limit=100), bootstrap, show_progress=False
    )
    before = content_digest(path)
    fields = rows[48].split(",")
    original_close, fields[5] = float(fields[5]), fields[4]  # close = low: still valid
    corrected = ",".join(fields)
    path.write_text("\n".join([header, *rows[:48], corrected, *rows[49:]]) + "\n")

    resumed = replay(
        ReplayOptions(path=path, topic=unique_name, resume=True), bootstrap, show_progress=False
    )

    assert (first.sent, resumed.sent, resumed.already_sent) == (100, 200, 0)
    messages = decoded(consume_all(local_stack, unique_name, expected=300))
    line_50 = {(v["source_digest"], v["close"]) for _, v in messages if v["source_line"] == 50}
    assert line_50 == {(before, original_close), (content_digest(path), float(fields[4]))}


TRADE_BAD_LINES = {
    f"{T0},BTCUSDT,77,0,0.5,buy": "price is not positive",
    f"{T0},BTC USDT,78,1,0.5,buy": "symbol is empty",
    f"{T0},BTCUSDT,79,1,0.5,long": "side is neither buy nor sell",
}


def expected_trades(path: Path) -> list[tuple[int, bytes, dict[str, Any]]]:
    """(line, key, message) of each good line of a canonical trade file, read with the csv
    module."""
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    digest = content_digest(path)
    expected = []
    for line, row in enumerate(rows, start=2):
        if ",".join(row.values()) in TRADE_BAD_LINES:
            continue
        message = {
            "time_ms": int(row["time_ms"]),
            "symbol": row["symbol"],
            "trade_id": row["trade_id"],
            "price": float(row["price"]),
            "qty": float(row["qty"]),
            "side": row["side"],
            "exchange": "file",
            "source_file": str(path),
            "source_digest": digest,
            "source_line": line,
        }
        expected.append((line, f"file:{row['symbol']}:{row['trade_id']}".encode(), message))
    return expected


@pytest.mark.parametrize("engine", ["paced", "bulk"])
def test_a_trade_file_goes_to_the_trades_topic_once_per_line_and_resume_completes_it(
    local_stack: Settings, unique_name: str, tmp_path: Path, engine: str
) -> None:
    """Generated trades with bad lines and a repeated line: every good line is one message of
    `<topic>.trades` keyed by exchange, symbol and trade id (the repeated trade: two messages,
    one key), bad lines are dead letters of `<topic>.trades.dlq` with their reasons, and a replay
    stopped part-way completes with --resume."""
    from crypto_pipeline.replay.trade_generator import generate_trades, write_canonical_trades

    path = tmp_path / "trades.csv"
    write_canonical_trades(generate_trades(["BTCUSDT", "ETHUSDT"], T0, 300, seed=9), path)
    lines = path.read_text().splitlines()
    lines[100:100] = list(TRADE_BAD_LINES)
    lines.append(lines[500])
    path.write_text("\n".join(lines) + "\n")
    expected = expected_trades(path)
    bootstrap = local_stack.kafka.bootstrap_servers

    first = replay(
        ReplayOptions(path=path, topic=unique_name, engine=engine, limit=1000),
        bootstrap,
        show_progress=False,
    )
    rest = replay(
        ReplayOptions(path=path, topic=unique_name, engine=engine, resume=True),
        bootstrap,
        show_progress=False,
    )

    assert first.topic == rest.topic == f"{unique_name}.trades"
    assert (first.sent, rest.sent) == (1000, len(expected) - 1000)
    assert (first.rejected, rest.rejected) == (len(TRADE_BAD_LINES), 0)
    records = consume_all(local_stack, f"{unique_name}.trades", expected=len(expected))
    received = sorted(
        (json.loads(r.value)["source_line"], r.key, json.loads(r.value)) for r in records
    )
    assert received == expected
    assert Counter(r.key for r in records).most_common(2)[1][1] == 1  # only one key twice
    assert Counter(r.key for r in records).most_common(1)[0][1] == 2
    dead = decoded(consume_all(local_stack, f"{unique_name}.trades.dlq", expected=3))
    assert sorted((v["source_line"], v["raw"]) for _, v in dead) == [
        (101 + i, raw) for i, raw in enumerate(TRADE_BAD_LINES)
    ]
    for _, letter in dead:
        assert letter["reason"].startswith(TRADE_BAD_LINES[letter["raw"]]), letter
