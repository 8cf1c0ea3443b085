#!/usr/bin/env bash
# `retrainer ...` commands run as given (the official Airflow entrypoint would run them as
# `airflow retrainer ...`); anything else goes through Airflow's own /entrypoint.
set -euo pipefail
umask 0002
if [[ "${1:-}" == retrainer ]]; then
  exec "$@"
fi
exec /entrypoint "$@"
