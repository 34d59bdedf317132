#!/bin/sh
# The project image's entrypoint (under tini): secrets mounted as files become the settings'
# variables, then the command runs. Nothing is printed.
set -eu
if [ -n "${INFLUXDB_TOKEN_FILE:-}" ]; then
  INFLUXDB_TOKEN=$(cat "$INFLUXDB_TOKEN_FILE")
  export INFLUXDB_TOKEN
fi
exec "$@"
