"""An optional standalone Spark cluster on the local stack (STACK_SPARK_WORKERS): a master and
its workers, from the pinned pyspark's own Spark."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from crypto_pipeline.settings import Settings
from local_stack.artifacts import (
    StackError,
    require_tool,
)
from local_stack.service_base import Service


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
