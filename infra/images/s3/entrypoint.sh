#!/bin/sh
# MinIO's `server DIR [--console-address ...]` with MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, served
# by SeaweedFS on :9000 with that one identity (anonymous and wrongly signed requests: 403).
set -eu
[ "${1:-}" = "server" ] || exec "$@"
data="${2:-/data}"
: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is not set}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is not set}"
mkdir -p "$data"
umask 077
cat > /tmp/s3.json <<JSON
{"identities": [{"name": "root",
  "credentials": [{"accessKey": "${MINIO_ROOT_USER}", "secretKey": "${MINIO_ROOT_PASSWORD}"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec weed mini -dir="$data" -s3.port=9000 -s3.config=/tmp/s3.json -admin.ui=false
