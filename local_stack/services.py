"""The three servers of the local stack: how each is prepared, started and health-checked."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from crypto_pipeline.clients import mongo_client
from crypto_pipeline.settings import Settings
from local_stack.artifacts import (
    STACK_FILES,
    StackError,
    ferretdb_binary,
    influxd_binary,
    kafka_jars,
    require_tool,
)

HEALTH_TOPIC = "__stack_health"


@dataclass(frozen=True)
class Service:
    name: str
    settings: Settings

    @property
    def data_dir(self) -> Path:
        return self.settings.stack_dir / "data" / self.name

    @property
    def conf_dir(self) -> Path:
        return self.settings.stack_dir / "conf"

    @property
    def log_file(self) -> Path:
        return self.settings.stack_dir / "logs" / f"{self.name}.log"

    @property
    def ports(self) -> dict[str, int]:
        """Every loopback port the service binds, named by the setting that controls it."""
        raise NotImplementedError

    @property
    def startup_timeout_s(self) -> float:
        return 60.0

    def prepare(self) -> list[str]:
        """Fetch or build what the service needs, write its config; return its command line."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Variables added to the service's environment (secrets that must not be flags)."""
        return {}

    def check_health(self) -> None:
        """Raise if the service does not answer a real request."""
        raise NotImplementedError

    @property
    def group(self) -> str:
        """Services of one group start together, then are awaited (a Kafka cluster's nodes need
        a quorum of each other to become healthy)."""
        return self.name

    def after_first_healthy(self) -> None:
        """One-time initialisation once the service answers (idempotent)."""

    def render(self, template: str, target: str, **values: object) -> Path:
        text = Template((STACK_FILES / "templates" / template).read_text()).substitute(values)
        path = self.conf_dir / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


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
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
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
            subprocess.run(
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
                check=True,
                capture_output=True,
                text=True,
            )
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
        admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
        try:
            if HEALTH_TOPIC not in admin.list_topics():
                try:
                    replication = min(self.settings.kafka_brokers, 3)
                    admin.create_topics([NewTopic(HEALTH_TOPIC, 1, replication)])
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()
        producer = KafkaProducer(bootstrap_servers=servers, request_timeout_ms=5000)
        marker = uuid.uuid4().bytes
        try:
            sent = producer.send(HEALTH_TOPIC, marker).get(timeout=10)
        finally:
            producer.close()
        consumer = KafkaConsumer(bootstrap_servers=servers, request_timeout_ms=5000)
        try:
            partition = TopicPartition(HEALTH_TOPIC, sent.partition)
            consumer.assign([partition])
            consumer.seek(partition, sent.offset)
            records = consumer.poll(timeout_ms=5000).get(partition, [])
        finally:
            consumer.close()
        if not records or records[0].value != marker:
            raise StackError("Kafka accepted a message but did not return it")


class FerretDB(Service):
    """Serves MONGO_URI's loopback port. A user and password in the URI turn on authentication:
    that user is created (in the URI's auth database) when the data directory is new."""

    @property
    def ports(self) -> dict[str, int]:
        return {"MONGO_URI": self.settings.mongo.port}

    def prepare(self) -> list[str]:
        binary = ferretdb_binary(self.settings)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        mongo = self.settings.mongo
        command = [
            str(binary),
            *["-listen", f"127.0.0.1:{mongo.port}", "-data-dir", str(self.data_dir)],
        ]
        if mongo.username:
            command += ["-username", mongo.username, "-auth-database", mongo.auth_source]
        return command

    def environment(self) -> dict[str, str]:
        password = self.settings.mongo.password
        return {"FERRETDB_PASSWORD": password} if password else {}

    def check_health(self) -> None:
        with mongo_client(self.settings.mongo.uri) as client:
            client.admin.command("ping")


class InfluxDB(Service):
    @property
    def ports(self) -> dict[str, int]:
        return {
            "INFLUXDB_URL": self.settings.influxdb_port,
            "STACK_INFLUXDB_RPC_PORT": self.settings.influxdb_rpc_port,
        }

    def prepare(self) -> list[str]:
        binary = influxd_binary(self.settings)
        config = self.render(
            "influxdb.conf",
            "influxdb.conf",
            rpc_port=self.settings.influxdb_rpc_port,
            http_port=self.settings.influxdb_port,
            data_dir=self.data_dir,
        )
        return [str(binary), "run", "-config", str(config)]

    def _request(self, path: str, data: bytes | None = None) -> int:
        request = urllib.request.Request(self.settings.influx.url + path, data=data)
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)

    def check_health(self) -> None:
        if self._request("/ping") != 204:
            raise StackError("InfluxDB /ping did not answer 204")

    def after_first_healthy(self) -> None:
        # The 2.x-compatible API writes to bucket "db/rp"; the database must exist (idempotent).
        query = urllib.parse.urlencode({"q": f'CREATE DATABASE "{self.settings.influx.database}"'})
        self._request("/query", data=query.encode())


def _spark_home() -> Path:
    """The installed pyspark: its `bin/spark-class` launches the master and the workers with the
    same Spark jars the jobs use."""
    import pyspark

    return Path(pyspark.__file__).parent


def _spark_environment() -> dict[str, str]:
    # SPARK_LOCAL_IP: the RPC endpoints and the web UIs bind loopback (the UIs would bind
    # 0.0.0.0 otherwise). The master and worker daemons themselves need little heap.
    return {
        "SPARK_HOME": str(_spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_DAEMON_MEMORY": "512m",
    }


def spark_master_state(settings: Settings) -> dict[str, Any]:
    """The master's view of the cluster (its web UI's JSON): status, workers, applications."""
    url = f"http://127.0.0.1:{settings.spark_master_ui_port}/json/"
    with urllib.request.urlopen(url, timeout=5) as response:
        state: dict[str, Any] = json.loads(response.read())
    return state


class SparkMaster(Service):
    """The standalone cluster's master (`stack up --spark-workers N`)."""

    @property
    def ports(self) -> dict[str, int]:
        return {
            "STACK_SPARK_MASTER_PORT": self.settings.spark_master_port,
            "STACK_SPARK_MASTER_UI_PORT": self.settings.spark_master_ui_port,
        }

    def prepare(self) -> list[str]:
        require_tool("java")
        return [
            str(_spark_home() / "bin" / "spark-class"),
            "org.apache.spark.deploy.master.Master",
            *["--host", "127.0.0.1", "--port", str(self.settings.spark_master_port)],
            *["--webui-port", str(self.settings.spark_master_ui_port)],
        ]

    def environment(self) -> dict[str, str]:
        return _spark_environment()

    def check_health(self) -> None:
        if spark_master_state(self.settings).get("status") != "ALIVE":
            raise StackError("the Spark master is not ALIVE")


class SparkWorker(Service):
    """Worker `spark-worker-<i>` of the standalone cluster: one core, executors of up to
    WORKER_MEMORY, RPC on the master's port + i; its executors run this interpreter's Python
    (`spark.pyspark.python`)."""

    WORKER_MEMORY = "3g"

    @property
    def port(self) -> int:
        return self.settings.spark_master_port + int(self.name.rsplit("-", 1)[1])

    @property
    def ports(self) -> dict[str, int]:
        return {"STACK_SPARK_MASTER_PORT (+ worker number)": self.port}

    def prepare(self) -> list[str]:
        require_tool("java")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            str(_spark_home() / "bin" / "spark-class"),
            "org.apache.spark.deploy.worker.Worker",
            *["--host", "127.0.0.1", "--port", str(self.port), "--cores", "1"],
            *["--memory", self.WORKER_MEMORY, "--webui-port", "0"],
            *["--work-dir", str(self.data_dir)],
            self.settings.stack_spark_master,
        ]

    def environment(self) -> dict[str, str]:
        return _spark_environment()

    def check_health(self) -> None:
        """Registered with the master, and ALIVE there."""
        workers = spark_master_state(self.settings).get("workers", [])
        if not any(w.get("port") == self.port and w.get("state") == "ALIVE" for w in workers):
            raise StackError(f"{self.name} is not ALIVE at the Spark master")


def services(settings: Settings) -> list[Service]:
    """The services `stack up` manages, in start order; FerretDB only when MONGO_URI points at
    loopback (any other host is an external server); a Spark master and STACK_SPARK_WORKERS
    workers when that is above 0."""
    brokers = settings.kafka_brokers
    chosen: list[Service] = (
        [Kafka("kafka", settings)]
        if brokers == 1
        else [Kafka(f"kafka-{i}", settings) for i in range(1, brokers + 1)]
    )
    if settings.serves_mongo:
        chosen.append(FerretDB("ferretdb", settings))
    chosen.append(InfluxDB("influxdb", settings))
    if settings.spark_workers:
        chosen.append(SparkMaster("spark-master", settings))
        chosen += [
            SparkWorker(f"spark-worker-{i}", settings) for i in range(1, settings.spark_workers + 1)
        ]
    return chosen


def wait_healthy(service: Service, is_alive: Callable[[], bool], deadline_s: float) -> None:
    """Poll the health check until it passes, the process dies, or the deadline passes."""
    started = time.monotonic()
    last_error: Exception | None = None
    while time.monotonic() - started < deadline_s:
        if not is_alive():
            raise StackError(f"{service.name} exited during start-up")
        try:
            service.check_health()
            return
        except Exception as error:  # retried until the deadline, then reported
            last_error = error
        time.sleep(0.5)
    raise StackError(f"{service.name} not healthy after {deadline_s:.0f}s: {last_error}")
