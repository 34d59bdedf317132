# syntax=docker/dockerfile:1
# The project image for docker compose: Python 3.11, a Java 17 runtime for Spark, the pinned
# Python packages, the chart page's library (npm), the Spark connector jars (fetched at build time by the same code the local
# stack uses), the Dagster code location and the sample data.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG NODE_IMAGE=node:22.12.0-bookworm-slim

# The chart page's library, from npm (crypto_api/page/package-lock.json).
FROM ${NODE_IMAGE} AS chart-page
WORKDIR /page
COPY crypto_api/page/package.json crypto_api/page/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    STACK_CACHE_DIR=/opt/crypto-pipeline/cache \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /opt/crypto-pipeline
COPY . .
RUN pip install --no-cache-dir -e . \
    && python -c "from crypto_pipeline.settings import Settings; \
from local_stack.artifacts import spark_connector_jars; \
print(spark_connector_jars(Settings.from_env()))" \
    && rm -rf /root/.m2

FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/crypto-pipeline /opt/crypto-pipeline
COPY --from=chart-page /page/node_modules /opt/crypto-pipeline/crypto_api/page/node_modules
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    STACK_CACHE_DIR=/opt/crypto-pipeline/cache \
    STACK_DIR=/var/lib/crypto-pipeline
RUN mkdir -p /opt/dagster/home /var/lib/crypto-pipeline /opt/crypto-pipeline/data/incoming \
    && cp /opt/crypto-pipeline/docker/dagster.yaml /opt/dagster/home/dagster.yaml \
    && chown -R app:app /opt/dagster/home /var/lib/crypto-pipeline /opt/crypto-pipeline/data
USER app
WORKDIR /opt/crypto-pipeline
ENTRYPOINT ["tini", "--", "/opt/crypto-pipeline/docker/entrypoint.sh"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "crypto_assets.definitions", "-a", "defs"]
