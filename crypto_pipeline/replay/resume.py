"""What `replay --resume` skips: the lines of a file (its path and its content) already in the
topic or in its dead-letter topic, read once before the replay sends anything."""

from __future__ import annotations

from pathlib import Path

from crypto_pipeline.clients import iter_records
from crypto_pipeline.formats import candle_message, dead_letter
from crypto_pipeline.formats.candle_message import file_lineage


class LinesSent:
    """Line numbers as a bitmap: one bit per line, 6.5 MB for 52 million lines."""

    def __init__(self, lines: int) -> None:
        self.bits = bytearray(lines // 8 + 1)

    def add(self, line: int) -> None:
        if 0 <= line < len(self.bits) * 8:
            self.bits[line >> 3] |= 1 << (line & 7)

    def __contains__(self, line: int) -> bool:
        return 0 <= line < len(self.bits) * 8 and bool(self.bits[line >> 3] & (1 << (line & 7)))

    @classmethod
    def read(
        cls,
        bootstrap_servers: str,
        topic: str,
        dlq_topic: str,
        path: Path,
        lines: int,
        digest: str,
    ) -> LinesSent:
        """Lines of this file with this content: a line of an earlier version of the file (the
        same path, another digest) does not count as sent."""
        sent = cls(lines + 1)
        marker = file_lineage(path, digest).encode()
        for record in iter_records(bootstrap_servers, topic, timeout_s=3600):
            if marker in record.value:
                sent.add(int(candle_message.decode(record.value)[candle_message.SOURCE_LINE]))
        prefix = dead_letter.line_key_prefix(str(path))
        same_content = candle_message.digest_member(digest).encode()
        for record in iter_records(bootstrap_servers, dlq_topic, timeout_s=3600):
            key = record.key or b""
            line = key[len(prefix) :]
            if key.startswith(prefix) and line.isdigit() and same_content in record.value:
                sent.add(int(line))
        return sent
