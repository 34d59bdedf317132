"""SparkSession settings shared by the Spark job and the tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from crypto_pipeline.settings import LOOPBACK_HOSTS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Small-machine settings, chosen by measurement (docs/architecture.md): as many state partitions
# (and Python workers) as cores, and enough heap for a 500,000-row micro-batch.
SHUFFLE_PARTITIONS = 2
DRIVER_MEMORY = "2g"


def driver_bind_address(driver_host: str) -> str:
    """Where the driver listens: loopback when the executors reach it there, every interface
    of its host (a container's network) otherwise."""
    return driver_host if driver_host in LOOPBACK_HOSTS else "0.0.0.0"


def spark_conf(master: str, jars_dir: Path, driver_host: str) -> dict[str, str]:
    """Connector jars as `spark.jars` (Ivy's --packages would not use this machine's Maven),
    the driver at SPARK_DRIVER_HOST, UTC session time, no web UI."""
    jars = sorted(str(jar) for jar in jars_dir.glob("*.jar"))
    return {
        **({"spark.jars": ",".join(jars)} if jars else {}),
        "spark.master": master,
        # Python workers run this interpreter, so they import the same pinned packages.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.host": driver_host,
        "spark.driver.bindAddress": driver_bind_address(driver_host),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": DRIVER_MEMORY,
        "spark.sql.shuffle.partitions": str(SHUFFLE_PARTITIONS),
        "spark.sql.adaptive.enabled": "false",
        # The job keeps its own per-symbol watermark: a batch without data has nothing to do.
        "spark.sql.streaming.noDataMicroBatches.enabled": "false",
        # Rows per Arrow batch into the Python state function; the batch's output to the driver
        # through Arrow too.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def build_spark_session(
    master: str, jars_dir: Path, app_name: str, driver_host: str
) -> SparkSession:
    from pyspark.sql import SparkSession

    # Local Python workers start from PYSPARK_PYTHON (default: `python3` on the PATH, which may
    # not be this environment).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in spark_conf(master, jars_dir, driver_host).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
