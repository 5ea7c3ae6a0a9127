#!/usr/bin/env bash
# make docker-plugin: builds brick's managed Docker plugin locally — the
# plugin directory (config.json and a rootfs holding only a static brickd) —
# and creates it in the local Docker engine with `docker plugin create`.
# No registry is needed. Safe to re-run: an existing plugin of that name is
# disabled (refused by Docker while volumes are in use) and replaced.
#
#   scripts/docker-plugin.sh [NAME]     NAME defaults to $PLUGIN or "brick"
#   PLUGIN_DIR=dir                      where the plugin directory is built (default bin/docker-plugin)
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-${PLUGIN:-brick}}
dir=${PLUGIN_DIR:-bin/docker-plugin}
if ! command -v docker >/dev/null; then
  echo "docker-plugin: docker is not installed; the plain install (brickd serving /run/docker/plugins/brick.sock) needs no plugin" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "docker-plugin: the Docker engine does not answer (is dockerd running, and may this user use it?)" >&2
  exit 1
fi

echo "docker-plugin: building a static brickd into $dir/rootfs"
rm -rf "$dir"
mkdir -p "$dir/rootfs"
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$dir/rootfs/brickd" ./cmd/brickd
# Mount points and the directories brickd expects; the rootfs holds nothing else.
for d in dev proc sys etc tmp run/docker/plugins mnt/volumes var/lib/brick; do
  mkdir -p "$dir/rootfs/$d"
done
cp plugin/docker/config.json "$dir/config.json"

if docker plugin inspect "$name" >/dev/null 2>&1; then
  if [ "$(docker plugin inspect -f '{{.Enabled}}' "$name")" = true ]; then
    echo "docker-plugin: disabling the existing plugin $name to replace it"
    docker plugin disable "$name"
  fi
  docker plugin rm "$name" >/dev/null
fi
docker plugin create "$name" "$dir" >/dev/null
cat <<MSG
docker-plugin: created the managed plugin "$name" (disabled). Next, on this host:
  mkdir -p /var/lib/brick
  docker plugin set $name BRICK_NAME=\$(hostname) BRICK_BIND=<this host's IP> BRICK_PEERS=<a member's IP> BRICK_CLUSTER_KEY=<key>
  docker plugin enable $name
  docker volume create --driver $name --opt replicas=3 --opt size=10G data
See docs/docker.md.
MSG
