"""The single entry point of the Dagster code location (`workspace.yaml` loads `defs`)."""

from __future__ import annotations

import dagster as dg

from crypto_assets.assets.market_data import kafka_klines
from crypto_assets.jobs import replay_job
from crypto_assets.resources import KafkaResource
from crypto_assets.sensors import incoming_files_sensor
from crypto_pipeline.settings import export_defaults

export_defaults()

defs = dg.Definitions(
    assets=[kafka_klines],
    jobs=[replay_job],
    sensors=[incoming_files_sensor],
    resources={
        "kafka": KafkaResource(
            bootstrap_servers=dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS"),
            topic=dg.EnvVar("KAFKA_TOPIC"),
        ),
    },
)
