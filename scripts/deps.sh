#!/usr/bin/env bash
# Installs what building and testing brick needs on a fresh Debian machine
# of this kind (root). Idempotent and quiet when all is there.
set -euo pipefail
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v sqlite3 >/dev/null || need+=(sqlite3)
# The failover scenarios run H2 (GoCD's database) from a small Java program.
command -v javac >/dev/null || need+=(default-jdk-headless)
[ -f /usr/share/java/h2.jar ] || need+=(libh2-java)
# The Docker scenarios build their test image FROM scratch with a static busybox.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing ${need[*]}; run as root or install them" >&2; exit 1
  fi
  echo "deps: installing ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
go mod download
