"""Dagster resources: one typed class per external system, wired to the environment settings."""

from __future__ import annotations

import dataclasses

import dagster as dg

from crypto_pipeline.clients import end_offsets
from crypto_pipeline.settings import Settings


class KafkaResource(dg.ConfigurableResource):
    """Kafka brokers and the market-data topic. Used by everything in Dagster that talks to Kafka;
    clients are created per call, with the timeouts of `crypto_pipeline.clients`."""

    bootstrap_servers: str
    topic: str
    partitions: int = 3
    retention_hours: int | None = None

    def settings(self) -> Settings:
        return dataclasses.replace(
            Settings.from_env(),
            kafka_bootstrap_servers=self.bootstrap_servers,
            kafka_topic=self.topic,
        )

    @property
    def retention_ms(self) -> int | None:
        return None if self.retention_hours is None else self.retention_hours * 3_600_000

    def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        return end_offsets(self.settings(), topic or self.topic)
