"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: open a page, wait
until given texts are rendered, save a screenshot. Only what the UI test needs."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


class Page:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ids = itertools.count(1)
        self.errors: list[str] = []  # console errors, uncaught exceptions, failed loads

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.connection.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:  # note errors among the events until our answer arrives
            reply = json.loads(self.connection.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self._note_error(reply.get("method"), reply.get("params", {}))

    def _note_error(self, event: str | None, params: dict[str, Any]) -> None:
        if event == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a)) for a in params.get("args", [])))
        elif event == "Runtime.exceptionThrown":
            self.errors.append(str(params["exceptionDetails"].get("exception", params)))
        elif event == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"{params['entry'].get('url')}: {params['entry'].get('text')}")

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression).get("result", {}).get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText") or "")

    def wait_for_texts(self, texts: list[str], timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        shown = ""
        while time.monotonic() < deadline:
            shown = self.text()
            if all(text in shown for text in texts):
                return shown
            time.sleep(1)
        raise AssertionError(f"{texts} not all rendered in {timeout_s:.0f} s; page shows {shown!r}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@contextmanager
def chromium_page(url: str, profile_dir: Path, port: int) -> Iterator[Page]:
    """A headless Chromium on 127.0.0.1:`port` showing `url`; stopped (by pid) afterwards."""
    binary = shutil.which("chromium")
    if binary is None:
        raise RuntimeError("chromium is not installed (make test installs Debian's package)")
    browser = subprocess.Popen(
        [
            binary,
            *CHROMIUM_FLAGS,
            "--remote-debugging-address=127.0.0.1",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile_dir}",
            "--window-size=1600,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        targets = _wait_for_targets(port)
        page_target = next(t for t in targets if t["type"] == "page")
        with connect(page_target["webSocketDebuggerUrl"], max_size=None) as connection:
            page = Page(connection)
            for domain in ("Page", "Runtime", "Log"):
                page.call(f"{domain}.enable")
            page.call("Page.navigate", url=url)
            yield page
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()


def _wait_for_targets(port: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                targets: list[dict[str, Any]] = json.loads(reply.read())
            if any(t["type"] == "page" for t in targets):
                return targets
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)
