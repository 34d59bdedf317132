"""Jobs launchable from the Dagster UI; each has a default config that works on the local stack."""

from __future__ import annotations

import dagster as dg

from crypto_assets.assets.market_data import SAMPLE_FILE, kafka_klines

REPLAY_DEFAULT_CONFIG = {"ops": {"kafka_klines": {"config": {"path": SAMPLE_FILE}}}}

replay_job = dg.define_asset_job(
    "replay_job",
    selection=[kafka_klines],
    config=REPLAY_DEFAULT_CONFIG,
    description="Replay a CSV file into the Kafka topic (default: the shipped sample, max speed).",
)
