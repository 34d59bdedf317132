"""The Spark session of the job (and of tests that run its transformations), with the settings
every launcher uses (spark_jobs/interface/launch.py), and the job's Kafka source."""

from __future__ import annotations

import os
import sys
from typing import TypeVar

from pyspark.sql import DataFrame, DataFrameReader, SparkSession
from pyspark.sql.streaming import DataStreamReader, DataStreamWriter, StreamingQuery

from spark_jobs.interface.config import JobConfig
from spark_jobs.interface.launch import spark_conf

Reader = TypeVar("Reader", DataFrameReader, DataStreamReader)


def kafka_source(reader: Reader, job: JobConfig) -> Reader:
    """The job's topic as a Kafka source, for the stream and the backfill. Spark fetches only
    offsets the topic holds, so a fetch never needs to wait for more data: with the broker's
    default wait (500 ms), reading a micro-batch of 50 records from three partitions took
    1.08 s, and 0.10 s with 10 ms (`bench live --latency`, bench/results.md)."""
    return (
        reader.format("kafka")
        .option("kafka.bootstrap.servers", job.kafka.bootstrap_servers)
        .option("subscribe", job.kafka.topic)
        .option("kafka.fetch.max.wait.ms", "10")
        # Never skip data that is gone from Kafka: fail loudly instead.
        .option("failOnDataLoss", "true")
    )


def build_spark_session(job: JobConfig, app_name: str) -> SparkSession:
    # Local Python workers start from PYSPARK_PYTHON (default: `python3` on the PATH, which may
    # not be this environment).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in spark_conf(job).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def read_source(spark: SparkSession, config: JobConfig, tasks_per_core: int = 2) -> DataFrame:
    """The stream's records: from `--starting-offsets` on a new checkpoint, at most
    `--max-offsets-per-trigger` a micro-batch, in at least `tasks_per_core` tasks per core (Kafka
    partitions split if there are fewer). Measured per job (bench/results.md): the candle job ran
    faster with a topic's 3 partitions split into 4 tasks (uneven partitions), the trades job
    faster unsplit."""
    reader = (
        kafka_source(spark.readStream, config)
        .option("startingOffsets", config.starting_offsets)
        .option("minPartitions", str(spark.sparkContext.defaultParallelism * tasks_per_core))
    )
    if config.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(config.max_offsets_per_trigger))
    return reader.load()


def start_with_trigger(writer: DataStreamWriter, config: JobConfig) -> StreamingQuery:
    """The query with the job's trigger: continuous (processing time) or available-now."""
    if config.continuous:
        return writer.trigger(processingTime=config.trigger).start()
    return writer.trigger(availableNow=True).start()
