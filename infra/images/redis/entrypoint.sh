#!/bin/sh
# Like the official image: `redis-server ...` listens on every interface without protected mode
# (the containers' network is the boundary); any other command runs as is.
set -eu
if [ "${1:-}" = "redis-server" ]; then
  shift
  exec redis-server --bind 0.0.0.0 --protected-mode no "$@"
fi
exec "$@"
