"""The single entry point of the Dagster code location (`workspace.yaml` loads `defs`)."""

from __future__ import annotations

import dagster as dg

from crypto_assets.assets.aggregates import ohlcv_sinks
from crypto_assets.assets.market_data import kafka_klines
from crypto_assets.jobs import replay_job
from crypto_assets.resources import (
    InfluxResource,
    KafkaResource,
    MongoResource,
    SparkSubmitResource,
    pyspark_resource,
)
from crypto_assets.sensors import incoming_files_sensor, streaming_health_sensor
from crypto_assets.streaming import streaming_job
from crypto_pipeline.settings import Settings, export_defaults

export_defaults()

defs = dg.Definitions(
    assets=[kafka_klines, ohlcv_sinks],
    jobs=[replay_job, streaming_job],
    sensors=[incoming_files_sensor, streaming_health_sensor],
    resources={
        "kafka": KafkaResource(
            bootstrap_servers=dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS"),
            topic=dg.EnvVar("KAFKA_TOPIC"),
        ),
        # MONGO_URI is read at run time: unset means the local stack's FerretDB.
        "mongo": MongoResource(
            database=dg.EnvVar("MONGO_DATABASE"), collection=dg.EnvVar("MONGO_COLLECTION")
        ),
        "influx": InfluxResource(
            url=dg.EnvVar("INFLUXDB_URL"),
            token=dg.EnvVar("INFLUXDB_TOKEN"),
            org=dg.EnvVar("INFLUXDB_ORG"),
            bucket=dg.EnvVar("INFLUXDB_BUCKET"),
        ),
        "spark_submit": SparkSubmitResource(master=dg.EnvVar("SPARK_MASTER")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "pyspark": pyspark_resource(Settings.from_env()),
    },
)
