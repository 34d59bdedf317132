"""SparkSession settings shared by the Spark job, the Dagster Spark resource and the tests."""

from __future__ import annotations

import glob
import os
import sys
from typing import TYPE_CHECKING

from crypto_pipeline.settings import Settings
from crypto_pipeline.stack.artifacts import spark_jars_glob

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_conf(settings: Settings) -> dict[str, str]:
    """Connector jars as `spark.jars` (Ivy's --packages would not use this machine's Maven),
    the driver bound to loopback, UTC session time, no web UI."""
    jars = sorted(glob.glob(spark_jars_glob(settings)))
    return {
        **({"spark.jars": ",".join(jars)} if jars else {}),
        "spark.master": settings.spark_master,
        # Python workers run this interpreter, so they import the same pinned packages.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.adaptive.enabled": "false",
    }


def build_spark_session(settings: Settings, app_name: str) -> SparkSession:
    from pyspark.sql import SparkSession

    # Local Python workers start from PYSPARK_PYTHON (default: `python3` on the PATH, which may
    # not be this environment).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
