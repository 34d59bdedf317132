"""The servers of the local stack: FerretDB and InfluxDB here, Kafka and the optional Spark
cluster in their own modules, and which of them a stack runs."""

from __future__ import annotations

import urllib.parse
import urllib.request

from crypto_pipeline.clients import mongo_client
from crypto_pipeline.settings import Settings
from local_stack.artifacts import (
    StackError,
    ferretdb_binary,
    influxd_binary,
)
from local_stack.kafka_nodes import Kafka
from local_stack.service_base import Service
from local_stack.spark_cluster import SparkMaster, SparkWorker


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
