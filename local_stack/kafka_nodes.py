"""Kafka on the local stack: one KRaft node, or a cluster of them."""

from __future__ import annotations

import base64
import subprocess
import uuid

from local_stack.artifacts import (
    StackError,
    kafka_jars,
    require_tool,
)
from local_stack.service_base import Service

HEALTH_TOPIC = "__stack_health"


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding.

    Like Kafka's own `Uuid.randomUuid`, never one starting with '-': the storage tool's
    command line would read it as an option (a 1-in-64 failure of `stack up`).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Service):
    """One Kafka node (broker + controller): `kafka` alone, or `kafka-<i>` of a cluster of
    STACK_KAFKA_BROKERS nodes on consecutive port pairs (broker 9092, 9094, ...; controller 9093,
    9095, ...) with a static controller quorum and topics replicated to every node (up to 3)."""

    @property
    def node_id(self) -> int:
        return int(self.name.rsplit("-", 1)[1]) if "-" in self.name else 1

    @property
    def broker_port(self) -> int:
        return self.settings.kafka_port + 2 * (self.node_id - 1)

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port + 2 * (self.node_id - 1)

    @property
    def ports(self) -> dict[str, int]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker_port,
            "STACK_KAFKA_CONTROLLER_PORT": self.controller_port,
        }

    @property
    def startup_timeout_s(self) -> float:
        return 120.0

    @property
    def group(self) -> str:
        return "kafka"

    def _quorum(self) -> str:
        brokers = self.settings.kafka_brokers
        if brokers == 1:
            return f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"
        base = self.settings.kafka_controller_port
        voters = ",".join(f"{i}@127.0.0.1:{base + 2 * (i - 1)}" for i in range(1, brokers + 1))
        return f"controller.quorum.voters={voters}"

    def _cluster_id(self) -> str:
        """One id for every node of the stack's Kafka (made once, kept in conf/)."""
        path = self.conf_dir / "kafka-cluster-id"
        if not path.exists() or path.read_text().startswith("-"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def prepare(self) -> list[str]:
        java = require_tool("java")
        jars = kafka_jars(self.settings)
        replication = min(self.settings.kafka_brokers, 3)
        server_properties = self.render(
            "kafka-server.properties",
            f"{self.name}-server.properties",
            node_id=self.node_id,
            quorum=self._quorum(),
            broker_port=self.broker_port,
            controller_port=self.controller_port,
            data_dir=self.data_dir,
            replication=replication,
            min_isr=2 if replication == 3 else 1,
        )
        log4j = self.render("kafka-log4j2.yaml", "kafka-log4j2.yaml")
        classpath = f"{jars}/*"
        if not (self.data_dir / "meta.properties").exists():
            standalone = ["--standalone"] if self.settings.kafka_brokers == 1 else []
            formatted = subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    f"-Dlog4j2.configurationFile={log4j}",
                    "kafka.tools.StorageTool",
                    "format",
                    *standalone,
                    "--cluster-id",
                    self._cluster_id(),
                    "--config",
                    str(server_properties),
                ],
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                output = (formatted.stderr or formatted.stdout).strip().splitlines()
                reason = output[-1] if output else f"exit {formatted.returncode}"
                raise StackError(f"{self.name}: formatting its storage failed: {reason}")
        return [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(server_properties),
        ]

    def check_health(self) -> None:
        """A real produce and consume round trip through the broker."""
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        servers = f"127.0.0.1:{self.broker_port}"
        # Retry a refused connection every 0.5 s: by default the backoff grows to 30 s while the
        # broker starts, and a restart was seen healthy 20 s after its port had opened.
        quick = {"request_timeout_ms": 5000, "reconnect_backoff_max_ms": 500}
        admin = KafkaAdminClient(bootstrap_servers=servers, **quick)
        try:
            if HEALTH_TOPIC not in admin.list_topics():
                try:
                    replication = min(self.settings.kafka_brokers, 3)
                    admin.create_topics([NewTopic(HEALTH_TOPIC, 1, replication)])
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()
        producer = KafkaProducer(bootstrap_servers=servers, **quick)
        marker = uuid.uuid4().bytes
        try:
            sent = producer.send(HEALTH_TOPIC, marker).get(timeout=10)
        finally:
            producer.close()
        consumer = KafkaConsumer(bootstrap_servers=servers, **quick)
        try:
            partition = TopicPartition(HEALTH_TOPIC, sent.partition)
            consumer.assign([partition])
            consumer.seek(partition, sent.offset)
            records = consumer.poll(timeout_ms=5000).get(partition, [])
        finally:
            consumer.close()
        if not records or records[0].value != marker:
            raise StackError("Kafka accepted a message but did not return it")
