"""Ingestion: market data into Kafka. The `kafka_klines` asset (a replay of a file), the job that
runs it from the UI, the sensor that replays files dropped into the incoming folder, and the live
exchange feeds (their job, health and restarts)."""

import dagster as dg

from crypto_assets.ingestion.incoming_files import incoming_files_sensor, replay_job
from crypto_assets.ingestion.live_feed import (
    live_feed_health_sensor,
    live_feed_job,
    live_feed_restart_sensor,
)
from crypto_assets.ingestion.market_data import kafka_klines

defs = dg.Definitions(
    assets=[kafka_klines],
    jobs=[replay_job, live_feed_job],
    sensors=[incoming_files_sensor, live_feed_health_sensor, live_feed_restart_sensor],
)
