#!/bin/sh
# Run once by the `influxdb-tokens` service with the operator token (INFLUX_TOKEN): creates a
# read-write token on the pipeline's bucket for the application and a read-only one for Grafana,
# each in its own volume, readable only by the user of the container that mounts it
# (the project image runs as uid 10001, Grafana as 472). Later starts keep the tokens.
set -eu

if [ -s /tokens/app/app.token ] && [ -s /tokens/grafana/grafana.token ]; then
  echo "tokens already created"
  exit 0
fi

bucket_id=$(influx bucket list --name "$INFLUXDB_BUCKET" --hide-headers | cut -f1)
if [ -z "$bucket_id" ]; then
  echo "bucket $INFLUXDB_BUCKET not found in org $INFLUX_ORG" >&2
  exit 1
fi

# $1: description, $2: file, $3: owner uid, then the permissions. Prints nothing secret.
create_token() {
  description=$1 file=$2 owner=$3
  shift 3
  umask 077
  influx auth create --description "$description" "$@" --json \
    | sed -n 's/^ *"token": *"\([^"]*\)".*/\1/p' > "$file.new"
  [ -s "$file.new" ] || { echo "no token created for $description" >&2; exit 1; }
  chown "$owner" "$file.new"
  chmod 0400 "$file.new"
  mv "$file.new" "$file"
  echo "created the $description token"
}

create_token crypto-pipeline /tokens/app/app.token 10001 \
  --read-bucket "$bucket_id" --write-bucket "$bucket_id"
create_token grafana-read-only /tokens/grafana/grafana.token 472 --read-bucket "$bucket_id"
