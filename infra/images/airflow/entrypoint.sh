#!/usr/bin/env bash
# The stand-in's /entrypoint: the official image's documented entrypoint behaviour
# (https://airflow.apache.org/docs/docker-stack/entrypoint.html), written for these tests:
#   - runs with gid 0 (any uid; an unknown uid gets a passwd entry, HOME=/home/airflow)
#   - umask 0002, so folders on shared volumes stay group-writable
#   - waits for the metadata database (`airflow db check`, CONNECTION_CHECK_MAX_COUNT tries,
#     CONNECTION_CHECK_SLEEP_TIME apart; 0 skips) and, with _AIRFLOW_DB_MIGRATE, migrates it
#   - `bash ...` and `python ...` run as given; `airflow X` and `X` both run `airflow X`
set -euo pipefail
command="${1:-}"
if [[ "$(id -g)" != 0 ]]; then
  echo "ERROR: run the image with group id 0 (you used $(id -u):$(id -g))" >&2
  [[ "$(id -u)" == 50000 ]] || exit 1
fi
umask 0002
if ! whoami >/dev/null 2>&1; then
  [[ -w /etc/passwd ]] && echo "default:x:$(id -u):0:default:${AIRFLOW_USER_HOME_DIR}:/sbin/nologin" >>/etc/passwd
  export HOME="${AIRFLOW_USER_HOME_DIR}"
fi
unset PIP_USER
tries="${CONNECTION_CHECK_MAX_COUNT:-20}"
sleep_s="${CONNECTION_CHECK_SLEEP_TIME:-3}"
if (( tries > 0 )); then
  for ((i = 1; ; i++)); do
    if out="$(airflow db check 2>&1)"; then break; fi
    if (( i >= tries )); then
      printf 'ERROR: the metadata database did not answer after %s tries:\n%s\n' "$tries" "$out" >&2
      exit 1
    fi
    sleep "$sleep_s"
  done
fi
[[ -n "${_AIRFLOW_DB_MIGRATE:-}" ]] && airflow db migrate
for unsupported in _AIRFLOW_WWW_USER_CREATE _PIP_ADDITIONAL_REQUIREMENTS; do
  [[ -z "${!unsupported:-}" ]] || { echo "ERROR: $unsupported is not supported by this stand-in" >&2; exit 1; }
done
case "$command" in
  bash) shift; exec /bin/bash "$@" ;;
  python) shift; exec python "$@" ;;
  airflow) shift ;;
esac
exec airflow "$@"
