#!/usr/bin/env bash
# make down: stops the daemons make up started (SIGTERM, then SIGKILL).
set -uo pipefail
dev=${BRICK_DEV_DIR:-$(pwd)/.brick-dev}
export BRICK_SOCKET=${BRICK_SOCKET:-/run/brick/brick.sock}
[ -S "$BRICK_SOCKET" ] || BRICK_SOCKET="$dev/n1/brick.sock"
for m in "$dev"/mnt/*; do
  [ -d "$m" ] || continue
  grep -q " $m fuse" /proc/mounts && ./bin/brick --timeout 60s volume unmount "$m"
done
for pidf in "$dev"/n*/pid; do
  [ -f "$pidf" ] || continue
  pid=$(cat "$pidf")
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$pidf"
done
echo "stopped; data kept in $dev (rm -rf it to start afresh)"
