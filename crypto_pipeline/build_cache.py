"""Where builds of the repository's build files are cached: a folder per build, named by the hash
of the files that define it. A low-level rule, so that the Spark job can find the connector jars
without importing the stack builder that fetches them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from crypto_pipeline.settings import REPO_ROOT

STACK_FILES = REPO_ROOT / "local_stack"
SPARK_CONNECTORS_POM = STACK_FILES / "maven" / "spark" / "pom.xml"


def content_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def spark_connectors_dir(cache_dir: Path) -> Path:
    """The Kafka connector jars (and their dependencies) for `spark.jars`; filled by
    `crypto-pipeline stack up` (and by the image build in docker compose)."""
    return cache_dir / f"spark-connectors-{content_hash(SPARK_CONNECTORS_POM)}"
