"""The Spark session of the job (and of tests that run its transformations), with the settings
every launcher uses (spark_jobs/interface/launch.py)."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from spark_jobs.interface.config import JobConfig
from spark_jobs.interface.launch import spark_conf


def build_spark_session(job: JobConfig, app_name: str) -> SparkSession:
    # Local Python workers start from PYSPARK_PYTHON (default: `python3` on the PATH, which may
    # not be this environment).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in spark_conf(job).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
