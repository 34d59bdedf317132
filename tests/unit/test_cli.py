"""The CLI as a user meets it: help for every command, README coverage, one-line errors."""

from __future__ import annotations

import argparse
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from crypto_cli import build_parser, main
from crypto_cli.argument_types import parse_speed, parse_time_ms

REPO_ROOT = Path(__file__).resolve().parents[2]


def all_commands() -> dict[str, str | None]:
    """Every command and sub-command with its help text."""
    found: dict[str, str | None] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    found[f"{prefix} {name}"] = helps[name]
                    walk(sub, f"{prefix} {name}")

    walk(build_parser(), "crypto-pipeline")
    return found


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    commands = all_commands()
    assert len(commands) >= 10
    for command, help_text in commands.items():
        assert help_text, f"{command} has no help text"
        assert command in readme, f"{command} is not in the README"


@pytest.mark.parametrize(("text", "speed"), [("1", 1.0), ("60", 60.0), ("0.5", 0.5), ("max", None)])
def test_speed(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["0", "-1", "fast"])
def test_bad_speed(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_speed(text)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("2025-01-01", 1735689600000), ("2025-01-01T00:01:00Z", 1735689660000), ("60000", 60000)],
)
def test_time(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


def test_missing_file_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "/nonexistent/k.csv"]) == 1
    assert capsys.readouterr().err == "crypto-pipeline: error: /nonexistent/k.csv: no such file\n"


def test_kafka_out_of_reach_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as closed:  # bound, never listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        brokers = f"127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", brokers)
        assert main(["bench", "stream", "--compute-only"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"crypto-pipeline: error: cannot reach Kafka at {brokers}: ")
    assert err.count("\n") == 1


def zipped_klines() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "ETHUSDT-1m-2025-01.csv",
            "1735689600000,3300,3310,3290,3305,10,1735689659999,33050,42,5,16525,0\n",
        )
    return buffer.getvalue()


@pytest.fixture
def kline_server() -> Iterator[str]:
    """A local HTTP server laid out like data.binance.vision, serving one monthly zip."""
    payload = zipped_klines()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/data/spot/monthly/klines/ETHUSDT/1m/ETHUSDT-1m-2025-01.zip":
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_binance_downloads_and_unzips(kline_server: str, tmp_path: Path) -> None:
    argv = ["data", "fetch-binance", "--symbol", "ethusdt", "--month", "2025-01"]
    assert main([*argv, "--out-dir", str(tmp_path), "--base-url", kline_server]) == 0
    written = tmp_path / "ETHUSDT-1m-2025-01.csv"
    assert written.read_text().startswith("1735689600000,3300,")


def test_fetch_binance_missing_month_is_one_line(
    kline_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["data", "fetch-binance", "--symbol", "BTCUSDT", "--month", "2025-02"]
    assert main([*argv, "--out-dir", str(tmp_path), "--base-url", kline_server]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 404" in err
