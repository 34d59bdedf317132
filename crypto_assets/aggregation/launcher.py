"""The Spark job launched from Dagster through Pipes: one resource built from the connection
resources, which turns a run's config into the job's (spark_jobs/interface) and runs it in each
mode: available-now for the `ohlcv_sinks` asset, continuous for `streaming_job`, backfills for
late rows and ranges."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from crypto_assets.resources import InfluxResource, KafkaResource, MongoResource, SparkResource
from crypto_pipeline.formats import late_ledger
from spark_jobs.interface import launch, repair
from spark_jobs.interface.config import (
    AVAILABLE_NOW,
    CANDLES,
    DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    DEFAULT_TRADE_WINDOWS,
    DEFAULT_WATERMARK,
    DEFAULT_WINDOWS,
    TRADES,
    JobConfig,
    split_names,
    trade_targets,
)
from spark_jobs.interface.heartbeat import running_stream_pid

Context = dg.OpExecutionContext | dg.AssetExecutionContext


class SparkJobConfig(dg.Config):
    """Streaming settings of the OHLCV job (run config); connections come from the resources."""

    windows: str = Field(
        default=",".join(DEFAULT_WINDOWS), description="window lengths, comma-separated"
    )
    watermark: str = Field(default=DEFAULT_WATERMARK, description="how late an event may arrive")
    max_offsets_per_trigger: int = Field(
        default=DEFAULT_MAX_OFFSETS_PER_TRIGGER, description="rows per micro-batch at most"
    )
    checkpoint_dir: str | None = Field(
        default=None, description="default: <state dir of the spark resource>/checkpoints/<topic>"
    )


class TradeJobConfig(SparkJobConfig):
    """The trades job's run config: candles from trades, from a second on."""

    windows: str = Field(
        default=",".join(DEFAULT_TRADE_WINDOWS), description="window lengths, comma-separated"
    )


def refuse_if_streaming(spark: SparkResource, topic: str) -> None:
    """Two jobs on the same checkpoints would corrupt them: one Spark job per topic at a time."""
    stream_pid = running_stream_pid(spark.status_file(topic))
    if stream_pid is not None:
        raise dg.Failure(
            f"the continuous job (pid {stream_pid}) is processing {topic} with the same "
            "checkpoints; stop streaming_job first"
        )


class SparkJobLauncher(dg.ConfigurableResource):
    """The OHLCV Spark job on this deployment's servers: Kafka in, MongoDB and InfluxDB out,
    run where the spark resource says."""

    kafka: KafkaResource
    mongo: MongoResource
    influx: InfluxResource
    spark: SparkResource

    @property
    def topic(self) -> str:
        return self.kafka.topic

    def job_config(
        self, config: SparkJobConfig, trigger: str = AVAILABLE_NOW, source: str = CANDLES
    ) -> JobConfig:
        """The job's configuration from the resources and the run config only (a continuous
        job writes the heartbeat the sensors read); `source` trades: the trades job."""
        kafka, mongo, influx = self.kafka.target, self.mongo.target, self.influx.target
        if source == TRADES:
            kafka, mongo, influx = trade_targets(kafka, mongo, influx)
        continuous = trigger != AVAILABLE_NOW
        status_file = str(self.spark.status_file(kafka.topic)) if continuous else None
        return JobConfig(
            kafka=kafka,
            mongo=mongo,
            influx=influx,
            source=source,
            checkpoint_dir=config.checkpoint_dir or str(self.spark.checkpoint_dir(kafka.topic)),
            spark_master=self.spark.master,
            spark_jars_dir=self.spark.connectors_dir,
            spark_driver_host=self.spark.driver_host,
            windows=split_names(config.windows)
            or (DEFAULT_TRADE_WINDOWS if source == TRADES else DEFAULT_WINDOWS),
            watermark=config.watermark,
            trigger=trigger,
            max_offsets_per_trigger=config.max_offsets_per_trigger,
            status_file=status_file,
            future_tolerance_s=self.kafka.future_tolerance_s,
        )

    def run(
        self, context: Context, pipes: dg.PipesSubprocessClient, job: JobConfig
    ) -> dg.PipesClientCompletedInvocation:
        """The job through Pipes, until it exits: a continuous one with its driver on top (its
        run terminated from the UI stops it cleanly), the others through spark-submit."""
        try:
            command = launch.driver_command(job) if job.continuous else launch.submit_command(job)
        except launch.LaunchError as error:
            raise dg.Failure(str(error)) from None
        context.log.info(" ".join(command))  # no secret: those travel in the environment
        return pipes.run(command=command, context=context, env=launch.environment(job))

    def stream(
        self,
        context: Context,
        pipes: dg.PipesSubprocessClient,
        config: SparkJobConfig,
        trigger: str,
        source: str = CANDLES,
    ) -> None:
        """The continuous job, until its run is terminated: Dagster interrupts the op, the Pipes
        client stops the job, which stops its queries on SIGTERM/SIGINT."""
        job = self.job_config(config, trigger, source)
        refuse_if_streaming(self.spark, job.kafka.topic)
        self.run(context, pipes, job)

    def materialize(
        self, context: Context, pipes: dg.PipesSubprocessClient, job: JobConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """An available-now run's results, after the late rows it (or earlier runs) left are
        repaired, so that the checks see them: the repair's summary on the materializations."""
        results = self.run(context, pipes, job).get_results()
        repair = self.repair_late_rows(context, pipes, job)
        for result in results:
            if isinstance(result, dg.MaterializeResult) and repair:
                metadata = {**(result.metadata or {}), "late_repair": dg.MetadataValue.json(repair)}
                result = dg.MaterializeResult(asset_key=result.asset_key, metadata=metadata)
            yield result

    def backfill(
        self, context: Context, pipes: dg.PipesSubprocessClient, job: JobConfig
    ) -> dict[str, Any]:
        """Run a backfill and return its summary (sent as a Pipes custom message)."""
        context.log.info(repair.describe_backfill(job))
        messages = self.run(context, pipes, job).get_custom_messages()
        if not messages:
            raise dg.Failure("the backfill ended without its summary")
        return dict(messages[-1])

    def repair_late_rows(
        self,
        context: Context,
        pipes: dg.PipesSubprocessClient,
        job: JobConfig,
        retry_unrepairable: bool = False,
    ) -> dict[str, Any]:
        """Backfill the late ledger's open entries of the topic, per symbol and range (those a
        backfill found unrepairable wait for a person unless `retry_unrepairable`); {} if there
        is nothing to repair."""
        entries = late_ledger.open_entries_in(job.mongo, job.kafka.topic, retry_unrepairable)
        backfill = repair.late_rows_backfill(job, entries, retry_unrepairable)
        if backfill is None:
            return {}
        context.log.warning(
            f"{repair.describe_late(entries)} are not in the sinks yet: backfilling them"
        )
        return self.backfill(context, pipes, backfill)


def with_spark_job(resources: Mapping[str, Any]) -> dict[str, Any]:
    """`resources` and the launcher built from their connection resources, as `spark_job`."""
    names = ("kafka", "mongo", "influx", "spark")
    return {**resources, "spark_job": SparkJobLauncher(**{name: resources[name] for name in names})}
