"""The Dagster webserver and daemon of the local stack, as processes we start and stop by pid,
and the few GraphQL calls the demo and the tests make against them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crypto_pipeline.console import say
from crypto_pipeline.settings import REPO_ROOT, Settings
from local_stack.artifacts import StackError

INSTANCE_CONFIG = REPO_ROOT / "local_stack" / "dagster.yaml"
LOCATION_NAME = "crypto_pipeline"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
# The UI page with the asset graph of the pipeline (the sink assets and their upstream topic).
ASSET_GRAPH_PATH = "/locations/crypto_pipeline/asset-groups/aggregates"


def prepare_dagster_home(settings: Settings) -> Path:
    """$DAGSTER_HOME (default <STACK_DIR>/dagster) with the local stack's dagster.yaml, exported
    so that every Dagster process we start, and this one, uses that instance."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.stack_dir / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


class DagsterServices:
    """The code location as a gRPC code server (runs execute as its children, so restarting the
    daemon or the webserver leaves them running, as in docker compose), dagster-webserver (UI and
    GraphQL on 127.0.0.1:`port`) and dagster-daemon (sensors, schedules, run queue), each in its
    own process group."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.code_port = 0

    def log_path(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def start(self, timeout_s: float = 180) -> None:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise StackError(
                    f"127.0.0.1:{self.port} is in use (another Dagster UI?); stop it or set "
                    "DAGSTER_PORT"
                ) from None
        self._create_storage()
        self._start_process("dagster-code-server", self._code_server_command())
        started = time.monotonic()
        self._wait(self._code_server_serving, started, timeout_s, "the code server")
        workspace = self.home / "workspace.yaml"
        workspace.write_text(
            "# Written by crypto-pipeline: the code location served over gRPC, as in docker "
            f"compose.\nload_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {self.code_port}\n      location_name: {LOCATION_NAME}\n"
        )
        bin_dir = Path(sys.executable).parent
        self._start_process(
            "dagster-webserver",
            [
                str(bin_dir / "dagster-webserver"),
                *["--host", "127.0.0.1", "--port", str(self.port), "-w", str(workspace)],
            ],
        )
        self.start_daemon()
        self._wait(self._serving, started, timeout_s, "the webserver")

    def start_daemon(self) -> None:
        """dagster-daemon (sensors, schedules, run queue, run monitoring); also after
        `stop_daemon`, as an operator restarting it would."""
        daemon = Path(sys.executable).parent / "dagster-daemon"
        self._start_process(
            "dagster-daemon", [str(daemon), "run", "-w", str(self.home / "workspace.yaml")]
        )

    def stop_daemon(self, timeout_s: float = 30) -> None:
        self._stop_group(self.processes.pop("dagster-daemon"), timeout_s)

    def _code_server_command(self) -> list[str]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.code_port = int(probe.getsockname()[1])
        return [
            str(Path(sys.executable).parent / "dagster"),
            *["code-server", "start", "-h", "127.0.0.1", "-p", str(self.code_port)],
            *["-m", "crypto_assets.definitions", "-a", "defs", "--location-name", LOCATION_NAME],
        ]

    def _code_server_serving(self) -> bool:
        check = [str(Path(sys.executable).parent / "dagster"), "api", "grpc-health-check"]
        result = subprocess.run(
            [*check, "-p", str(self.code_port), "-h", "127.0.0.1"],
            capture_output=True,
            timeout=60,
        )
        return result.returncode == 0

    def _start_process(self, name: str, command: list[str]) -> None:
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait(self, ready: Callable[[], bool], started: float, timeout_s: float, what: str) -> None:
        next_note = time.monotonic() + 10
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.stop()
                    raise StackError(
                        f"{name} exited with {process.returncode}; see {self.log_path(name)}"
                    )
            if time.monotonic() - started > timeout_s:
                self.stop()
                raise StackError(f"{what} did not answer in {timeout_s} s")
            if time.monotonic() > next_note:
                say(f"[dagster] waiting for {what} ({time.monotonic() - started:.0f} s)")
                next_note += 10
            time.sleep(1)

    def _create_storage(self) -> None:
        """Create the instance's SQLite storage here, once: the webserver and the daemon
        creating it at the same time can stamp its migration table twice and break it."""
        from dagster import DagsterInstance

        with DagsterInstance.from_config(str(self.home)):
            pass

    def _serving(self) -> bool:
        """The UI answers and the code location has loaded (or failed to: StackError)."""
        try:
            return DagsterApi(self.url).location_loaded()
        except OSError:
            return False

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM to each process group, SIGKILL to what is still there after the timeout. The
        code server last: the runs it launched are its children."""
        for name in ("dagster-webserver", "dagster-daemon", "dagster-code-server"):
            if name in self.processes:
                self._stop_group(self.processes.pop(name), timeout_s)

    @staticmethod
    def _stop_group(process: subprocess.Popen[bytes], timeout_s: float) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        try:  # children of the group that outlived their parent
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class DagsterApi:
    """Dagster's GraphQL API: launch and terminate runs, read run and check statuses."""

    def __init__(self, url: str) -> None:
        self.url = url  # the UI; GraphQL is served under /graphql

    def query(self, text: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": text, "variables": variables}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            answer = json.loads(reply.read())
        if answer.get("errors"):
            raise StackError(f"Dagster GraphQL error: {answer['errors'][0]['message']}")
        return dict(answer["data"])

    def launch(
        self, job: str, run_config: dict[str, Any] | None = None, tags: dict[str, str] | None = None
    ) -> str:
        data = self.query(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                 __typename ... on LaunchRunSuccess { run { runId } }
                 ... on PythonError { message } ... on InvalidSubsetError { message }
                 ... on RunConfigValidationInvalid { errors { message } } } }""",
            params={
                "selector": {
                    "repositoryLocationName": self._location(),
                    "repositoryName": "__repository__",
                    "jobName": job,
                },
                "runConfigData": run_config or {},
                "executionMetadata": {
                    "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]
                },
            },
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise StackError(f"launching {job} failed: {data}")
        return str(data["run"]["runId"])

    def _location(self) -> str:
        data = self.query("{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
        return str(data["workspaceOrError"]["locationEntries"][0]["name"])

    def location_loaded(self) -> bool:
        data = self.query(
            """{ workspaceOrError { ... on Workspace { locationEntries {
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        )
        entries = data["workspaceOrError"]["locationEntries"]
        loaded = entries[0]["locationOrLoadError"] if entries else None
        if loaded and loaded["__typename"] == "PythonError":
            raise StackError(f"the code location failed to load: {loaded['message'].strip()}")
        return bool(loaded and loaded["__typename"] == "RepositoryLocation")

    def run_status(self, run_id: str) -> str:
        data = self.query(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", id=run_id
        )
        return str(data["runOrError"]["status"])

    def wait_for_run(
        self, run_id: str, timeout_s: float, until: Callable[[str], bool] = FINISHED.__contains__
    ) -> str:
        started = time.monotonic()
        next_note = started + 15
        while True:
            status = self.run_status(run_id)
            if until(status):
                return status
            if time.monotonic() - started > timeout_s:
                raise StackError(f"run {run_id} still {status} after {timeout_s:.0f} s")
            if time.monotonic() > next_note:
                waited = time.monotonic() - started
                say(f"[dagster] run {run_id[:8]} {status.lower()} ({waited:.0f} s)")
                next_note += 15
            time.sleep(2)

    def runs_tagged(self, key: str, value: str) -> list[dict[str, str]]:
        data = self.query(
            """query($filter: RunsFilter) { runsOrError(filter: $filter) {
                 ... on Runs { results { runId jobName status } } } }""",
            filter={"tags": [{"key": key, "value": value}]},
        )
        return list(data["runsOrError"]["results"])

    def terminate(self, run_id: str) -> None:
        self.query(
            """mutation($id: String!) { terminateRun(runId: $id) { __typename } }""", id=run_id
        )

    def check_statuses(self) -> dict[tuple[str, str], str]:
        """(asset, check) -> status of the check's execution for the latest materialization."""
        data = self.query(
            """{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks {
                 checks { name executionForLatestMaterialization { status } } } } } }"""
        )
        statuses = {}
        for node in data["assetNodes"]:
            asset = "/".join(node["assetKey"]["path"])
            for check in node["assetChecksOrError"].get("checks", []):
                execution = check["executionForLatestMaterialization"]
                statuses[(asset, check["name"])] = execution["status"] if execution else "NONE"
        return statuses
