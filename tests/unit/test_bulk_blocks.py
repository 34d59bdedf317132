"""The bulk replay's pure parts: the blocks the main process cuts the file into number every line
as reading it line by line does, and the workers encode each line into the paced replay's
message or dead letter."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from crypto_pipeline.formats.candle_message import file_lineage
from crypto_pipeline.replay import bulk
from crypto_pipeline.replay.input_files import file_format, read_rows
from crypto_pipeline.replay.producer import ReplayOptions, dead_letter, record_topic

HEADER = b"open_time_ms,symbol,open,high,low,close,volume,quote_volume,trades"
T0 = 1_735_689_600_000
GOOD = [b"%d,BTCUSDT,10,12,9,11,5,55,3" % (T0 + 60_000 * i) for i in range(6)]
BINANCE = (
    b"1735689600000,93576.00,93610.93,93537.50,93610.93,8.21827,1735689659999,769000.1,1360,"
    b"3.0,280000.0,0"
)
FILES = {
    "lf": b"\n".join([HEADER, *GOOD]) + b"\n",
    "no final line end": b"\n".join([HEADER, *GOOD]),
    "crlf": b"\r\n".join([HEADER, *GOOD]) + b"\r\n",
    "blank and bad lines": b"\n".join(
        [HEADER, GOOD[0], b"", GOOD[1], b"x,BTCUSDT,1,1,1,1,1,1,1", b"\xff\xfe,1", GOOD[2]]
    ),
    "quoted fields": b"\n".join([HEADER, b'"%d","BTCUSDT",10,12,9,11,5,55,3' % T0, GOOD[1]]),
    "binance, no header": b"\n".join(
        [BINANCE, BINANCE.replace(b"1735689600000", b"1735689660000")]
    ),
    "trades": b"\n".join(
        [
            b"time_ms,symbol,trade_id,price,qty,side,exchange",
            b"%d,BTCUSDT,41,93576.5,0.002,buy," % T0,
            b"%d,BTCUSDT,42,93576.4,0.5,sell,okx" % T0,
            b"%d,BTCUSDT,43,-1,0.5,sell,okx" % T0,
        ]
    ),
    "binance trades, no header": b"\n".join(
        [
            b"4420000001,93576.00,0.00100000,93.57600000,1735689600123456,True,True",
            b"4420000002,93576.01,0.25000000,23394.00250000,1735689600200000,False,True",
        ]
    ),
}
TRADE_FILES = {"trades": "trades.csv", "binance trades, no header": "BTCUSDT-trades-2025-01-01.csv"}


def file_of(tmp_path: Path, name: str, content: bytes) -> Path:
    suffix = "BTCUSDT-1m-2025-01.csv" if name.startswith("binance") else "klines.csv.gz"
    path = tmp_path / TRADE_FILES.get(name, suffix)
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


@pytest.mark.parametrize("block_bytes", [5, 64, 1 << 20])
@pytest.mark.parametrize("name", sorted(FILES))
def test_blocks_number_every_line_as_the_file_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, block_bytes: int
) -> None:
    monkeypatch.setattr(bulk, "BLOCK_BYTES", block_bytes)
    path = file_of(tmp_path, name, FILES[name])
    lines = FILES[name].split(b"\n")
    first = 1 if name.startswith("binance") else 2
    expected = [
        (number, line) for number, line in enumerate(lines, start=1) if number >= first and line
    ]

    cut = [
        (number, line)
        for first_line, block in bulk._blocks(ReplayOptions(path=path, topic="t"))
        for number, line in enumerate(block.split(b"\n"), start=first_line)
    ]

    assert [(n, line) for n, line in cut if line] == expected


@pytest.mark.parametrize("name", sorted(FILES))
def test_workers_encode_what_the_paced_replay_sends(tmp_path: Path, name: str) -> None:
    path = file_of(tmp_path, name, FILES[name])
    options = ReplayOptions(path=path, topic="t")
    digest = "0123456789abcdef"
    topic = record_topic(options.topic, file_format(path).kind)
    bulk._Worker.load(options, topic, digest)
    paced = []
    for parsed in read_rows(path):
        if parsed.record is None:
            key, value = dead_letter(options, parsed, digest, topic)
            paced.append((parsed.line, key, value, parsed.reason))
        else:
            key = parsed.record.key()
            value = parsed.record.to_json(file_lineage(path, digest), parsed.line)
            paced.append((parsed.line, key, value, None))

    encoded = [
        (line, key, value, reason)
        for first_line, block in bulk._blocks(options)
        for line, key, value, _, reason in bulk._encode_block(first_line, block).messages
    ]

    assert encoded == paced
    assert any(reason is None for *_, reason in encoded)
