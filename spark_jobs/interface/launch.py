"""How the Spark job is launched, for every launcher (Dagster, the CLI, the benchmarks, the tests):
its Spark settings, its command in each mode and its environment. Nothing here starts Spark."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from crypto_pipeline.settings import LOOPBACK_HOSTS, REPO_ROOT
from spark_jobs.interface.config import JobConfig

# Small-machine settings, chosen by measurement (docs/architecture.md): as many shuffle partitions
# as cores, and enough driver heap for a micro-batch of DEFAULT_MAX_OFFSETS_PER_TRIGGER candles
# (each batch's rows come to the driver).
SHUFFLE_PARTITIONS = 2
DRIVER_MEMORY = "2g"


class LaunchError(RuntimeError):
    """The job cannot be launched from here (its connector jars are missing)."""


def driver_bind_address(driver_host: str) -> str:
    """Where the driver listens: loopback when the executors reach it there, every interface
    of its host (a container's network) otherwise."""
    return driver_host if driver_host in LOOPBACK_HOSTS else "0.0.0.0"


def connector_jars(job: JobConfig) -> list[str]:
    return sorted(str(jar) for jar in Path(job.spark_jars_dir).glob("*.jar"))


def spark_conf(job: JobConfig) -> dict[str, str]:
    """The job's Spark settings, the same whichever way it is launched: connector jars as
    `spark.jars` (Ivy's --packages would not use this machine's Maven), the driver at
    SPARK_DRIVER_HOST, UTC session time, no web UI."""
    jars = connector_jars(job)
    return {
        **({"spark.jars": ",".join(jars)} if jars else {}),
        "spark.master": job.spark_master,
        # Python workers run this interpreter, so they import the same pinned packages.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.host": job.spark_driver_host,
        "spark.driver.bindAddress": driver_bind_address(job.spark_driver_host),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": DRIVER_MEMORY,
        "spark.sql.shuffle.partitions": str(SHUFFLE_PARTITIONS),
        "spark.sql.adaptive.enabled": "false",
        # The job keeps its own per-symbol watermark: a batch without data has nothing to do.
        "spark.sql.streaming.noDataMicroBatches.enabled": "false",
        # Rows per Arrow batch when a batch's windows come to the driver.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def driver_command(job: JobConfig) -> list[str]:
    """The job with its driver as the top process (Spark started through pyspark with
    `spark_conf`): what a supervised stream runs, since its SIGINT/SIGTERM stops the queries
    cleanly (under spark-submit the signal would reach the JVM first and kill the driver
    mid-batch). Run it with `environment(job)`."""
    return [sys.executable, "-m", "spark_jobs.main", *job.to_args()]


def component_bench_command(component: str, args: list[str]) -> list[str]:
    """A benchmark of one of the job's parts, "state" or "sinks" (spark_jobs/component_bench.py);
    the sinks' run with `process_environment(job)` and the job's arguments in `args`."""
    return [sys.executable, "-m", "spark_jobs.component_bench", component, *args]


def submit_command(job: JobConfig) -> list[str]:
    """The job through `spark-submit` (available-now runs and backfills from Dagster): what
    must be known before the JVM starts here, the rest from `spark_conf` in the job's session."""
    jars = connector_jars(job)
    if not jars:
        raise LaunchError(
            f"no Spark connector jars in {job.spark_jars_dir}: run `crypto-pipeline stack up`"
        )
    spark_submit = Path(sys.executable).parent / "spark-submit"
    return [
        str(spark_submit),
        *["--master", job.spark_master, "--jars", ",".join(jars)],
        *["--driver-memory", DRIVER_MEMORY],
        *["--conf", f"spark.driver.host={job.spark_driver_host}"],
        *["--conf", f"spark.driver.bindAddress={driver_bind_address(job.spark_driver_host)}"],
        # Spark's own INFO lines drown the job's progress in the run log.
        *["--conf", "spark.log.level=WARN"],
        str(REPO_ROOT / "spark_jobs" / "main.py"),
        *job.to_args(),
    ]


def environment(job: JobConfig) -> dict[str, str]:
    """What the job's process needs added to the launcher's environment: its secrets (never on
    the command line) and this environment's Python for Spark's Python workers."""
    return {
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        **job.to_env(),
    }


def process_environment(job: JobConfig) -> dict[str, str]:
    """This process's environment with `environment(job)` added: for launchers that start the
    job themselves (the CLI, the benchmarks, the tests)."""
    return {**os.environ, **environment(job)}
