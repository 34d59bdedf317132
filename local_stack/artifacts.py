"""Fetching and building what the local stack runs, cached by the hash of the files that define it.

- Kafka broker + tools jars, and the Spark connector jars: `mvn dependency:copy-dependencies`.
- FerretDB (embedded in our Go program, with the patches in local_stack/ferretdb/patches applied
  to its source) and InfluxDB 1.8.10: `go build` from the Go module proxy.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from crypto_pipeline.build_cache import (
    SPARK_CONNECTORS_POM,
    STACK_FILES,
    content_hash,
    spark_connectors_dir,
)
from crypto_pipeline.console import say
from crypto_pipeline.settings import Settings

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0

TOOL_HINTS = {
    "java": "a JDK 17 or newer (Debian: apt-get install openjdk-17-jdk-headless)",
    "mvn": "Apache Maven (Debian: apt-get install maven)",
    "go": "Go 1.24 or newer (https://go.dev/doc/install)",
}


class StackError(RuntimeError):
    """A problem the user can act on; the CLI prints it as one line."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"'{name}' not found on PATH: install {TOOL_HINTS[name]}")
    return path


def run_with_progress(
    cmd: list[str], *, cwd: Path, log_file: Path, what: str, env: dict[str, str] | None = None
) -> None:
    """Run a long build or download, logging its output, printing a progress line every 10 s."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    last_lines: deque[str] = deque(maxlen=20)
    started = time.monotonic()
    say(f"[stack] {what} (log: {log_file})")
    with log_file.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                last_lines.append(line.rstrip())

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while reader.is_alive():
            reader.join(PROGRESS_EVERY_S)
            if reader.is_alive():
                latest = last_lines[-1][:100] if last_lines else ""
                elapsed = time.monotonic() - started
                say(f"[stack]   ... {what}: {elapsed:.0f}s  {latest}")
        rc = proc.wait()
    if rc != 0:
        tail = "\n".join(last_lines)
        raise StackError(f"{what} failed (exit {rc}); last output:\n{tail}")
    say(f"[stack] {what}: done in {time.monotonic() - started:.0f}s")


def cached(cache_dir: Path, key: str, build: Callable[[Path, Path], None]) -> Path:
    """Return `cache_dir/key`, first building it in a staging folder (log: `key.log`) if needed.
    One build at a time per cache: two stacks starting at once (test workers, two terminals)
    share it, and Maven's local repository is not safe for concurrent writers."""
    target = cache_dir / key
    if (target / ".complete").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():  # built while this one waited
            return target
        staging = cache_dir / f".{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        build(staging, cache_dir / f"{key}.log")
        (staging / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def _maven_copy(pom_dir: Path, what: str) -> Callable[[Path, Path], None]:
    def build(out: Path, log_file: Path) -> None:
        mvn = require_tool("mvn")
        run_with_progress(
            [
                mvn,
                "-B",
                "--no-transfer-progress",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={out}",
            ],
            cwd=pom_dir,
            log_file=log_file,
            what=what,
        )

    return build


def kafka_jars(settings: Settings) -> Path:
    pom_dir = STACK_FILES / "maven" / "kafka"
    key = f"kafka-jars-{content_hash(pom_dir / 'pom.xml')}"
    return cached(settings.cache_dir, key, _maven_copy(pom_dir, "fetching Apache Kafka jars"))


_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-\d[\w.\-]*\.jar$")


def _artifact(jar: Path) -> str:
    match = _JAR_NAME.match(jar.name)
    return match.group("artifact") if match else jar.stem


def spark_connector_jars(settings: Settings) -> Path:
    """A folder holding exactly the Kafka connector jars and their dependencies,
    without the jars pyspark already ships (so `spark.jars` can name `<folder>/*.jar`)."""
    copy = _maven_copy(SPARK_CONNECTORS_POM.parent, "fetching Spark connector jars")

    def build(out: Path, log_file: Path) -> None:
        import pyspark

        copy(out, log_file)
        shipped = {_artifact(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
        for jar in out.glob("*.jar"):
            if _artifact(jar) in shipped:
                jar.unlink()

    folder = spark_connectors_dir(settings.cache_dir)
    return cached(folder.parent, folder.name, build)


def _go_build(
    module_dir: Path, package: str, binary: str, what: str
) -> Callable[[Path, Path], None]:
    def build(out: Path, log_file: Path) -> None:
        go = require_tool("go")
        run_with_progress(
            [go, "build", "-v", "-o", str(out / binary), package],
            cwd=module_dir,
            log_file=log_file,
            what=what,
        )

    return build


def _go_module_key(name: str, module_dir: Path) -> str:
    suffixes = (".go", ".mod", ".sum", ".patch")
    sources = sorted(p for p in module_dir.rglob("*") if p.suffix in suffixes)
    return f"{name}-{content_hash(*sources)}"


FERRETDB_MODULE = "github.com/FerretDB/FerretDB"


def _patched_go_build(
    module_dir: Path, dependency: str, binary: str, what: str
) -> Callable[[Path, Path], None]:
    """`go build` of our module with `dependency` replaced by its source from the module proxy
    with `module_dir/patches/*.patch` applied (git apply: fails loudly if a patch does not fit)."""

    def build(out: Path, log_file: Path) -> None:
        go = require_tool("go")
        git = require_tool("git")
        work = out / "build"
        program = work / "program"
        shutil.copytree(module_dir, program, ignore=shutil.ignore_patterns("patches"))
        version = _required_version(go, program, dependency)
        downloaded = subprocess.run(
            [go, "mod", "download", "-json", f"{dependency}@{version}"],
            cwd=program,
            capture_output=True,
            text=True,
            check=True,
        )
        source = work / "dependency"
        shutil.copytree(json.loads(downloaded.stdout)["Dir"], source)
        for path in [source, *source.rglob("*")]:  # the module cache is read-only
            path.chmod(path.stat().st_mode | 0o200)
        # No repository above `source` may take part (git apply would patch relative to it).
        no_repository = {**os.environ, "GIT_CEILING_DIRECTORIES": str(work)}
        for patch in sorted((module_dir / "patches").glob("*.patch")):
            subprocess.run(
                [git, "apply", "--verbose", str(patch)],
                cwd=source,
                env=no_repository,
                check=True,
                capture_output=True,
            )
        subprocess.run(
            [go, "mod", "edit", f"-replace={dependency}={source}"], cwd=program, check=True
        )
        _go_build(program, ".", binary, what)(out, log_file)
        shutil.rmtree(work)

    return build


def _required_version(go: str, module_dir: Path, dependency: str) -> str:
    listed = subprocess.run(
        [go, "list", "-m", "-f", "{{.Version}}", dependency],
        cwd=module_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.strip()


def ferretdb_binary(settings: Settings) -> Path:
    module_dir = STACK_FILES / "ferretdb"
    build = _patched_go_build(
        module_dir, FERRETDB_MODULE, "ferretdb-local", "building FerretDB (patched, go build)"
    )
    folder = cached(settings.cache_dir, _go_module_key("ferretdb", module_dir), build)
    return folder / "ferretdb-local"


def influxd_binary(settings: Settings) -> Path:
    module_dir = STACK_FILES / "influxdb"
    build = _go_build(
        module_dir,
        "github.com/influxdata/influxdb/cmd/influxd",
        "influxd",
        "building InfluxDB 1.8.10 (go build)",
    )
    folder = cached(settings.cache_dir, _go_module_key("influxd", module_dir), build)
    return folder / "influxd"
