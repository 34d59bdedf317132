"""Fetching and building what the local stack runs, cached by the hash of the files that define it.

- Kafka broker + tools jars, and the Spark connector jars: `mvn dependency:copy-dependencies`.
- FerretDB (embedded in our Go program) and InfluxDB 1.8.10: `go build` from the Go module proxy.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from crypto_pipeline.console import say
from crypto_pipeline.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

STACK_FILES = REPO_ROOT / "local_stack"
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


def content_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cached(cache_dir: Path, key: str, build: Callable[[Path, Path], None]) -> Path:
    """Return `cache_dir/key`, first building it in a staging folder (log: `key.log`) if needed."""
    target = cache_dir / key
    if (target / ".complete").exists():
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


def _spark_connectors_folder(settings: Settings) -> Path:
    pom_dir = STACK_FILES / "maven" / "spark"
    return settings.cache_dir / f"spark-connectors-{content_hash(pom_dir / 'pom.xml')}"


def spark_connector_jars(settings: Settings) -> Path:
    """A folder holding exactly the Kafka and MongoDB connector jars and their dependencies,
    without the jars pyspark already ships (so `spark.jars` can name `<folder>/*.jar`)."""
    pom_dir = STACK_FILES / "maven" / "spark"
    copy = _maven_copy(pom_dir, "fetching Spark connector jars")

    def build(out: Path, log_file: Path) -> None:
        import pyspark

        copy(out, log_file)
        shipped = {_artifact(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
        for jar in out.glob("*.jar"):
            if _artifact(jar) in shipped:
                jar.unlink()

    folder = _spark_connectors_folder(settings)
    return cached(folder.parent, folder.name, build)


def spark_jars_glob(settings: Settings) -> str:
    """The `spark.jars` value; valid once `stack up` has fetched the connectors."""
    return str(_spark_connectors_folder(settings) / "*.jar")


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
    sources = sorted(p for p in module_dir.iterdir() if p.suffix in (".go", ".mod", ".sum"))
    return f"{name}-{content_hash(*sources)}"


def ferretdb_binary(settings: Settings) -> Path:
    module_dir = STACK_FILES / "ferretdb"
    build = _go_build(module_dir, ".", "ferretdb-local", "building FerretDB (go build)")
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
