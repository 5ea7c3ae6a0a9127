#!/usr/bin/env bash
# make up: a three-daemon cluster on 127.0.0.1-3, data under $BRICK_DEV_DIR
# (default ./.brick-dev). Waits until it is healthy, then says what to type.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${BRICK_DEV_DIR:-$(pwd)/.brick-dev}
mkdir -p "$dev"
if [ ! -s "$dev/cluster-key" ]; then
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$dev/cluster-key"
  chmod 600 "$dev/cluster-key"
fi
key=$(cat "$dev/cluster-key")
sock1=/run/brick/brick.sock
[ -w /run ] || sock1="$dev/n1/brick.sock"
for i in 1 2 3; do
  n=n$i; ip=127.0.0.$i
  mkdir -p "$dev/$n"
  if [ -f "$dev/$n/pid" ] && kill -0 "$(cat "$dev/$n/pid")" 2>/dev/null; then
    echo "$n already running (pid $(cat "$dev/$n/pid"))"; continue
  fi
  sock="$dev/$n/brick.sock"; [ $i = 1 ] && sock=$sock1
  peers=""; [ $i != 1 ] && peers=127.0.0.1
  BRICK_NAME=$n BRICK_BIND=$ip BRICK_DATA_DIR="$dev/$n/data" BRICK_SOCKET="$sock" BRICK_PEERS=$peers \
    BRICK_CLUSTER_KEY="$key" nohup ./bin/brickd >>"$dev/$n/brickd.log" 2>&1 &
  echo $! > "$dev/$n/pid"
done
echo -n "waiting for the cluster to be healthy"
for _ in $(seq 1 120); do
  if BRICK_SOCKET=$sock1 ./bin/brick --json peer ls 2>/dev/null | grep -o '"raft_role": *"\(leader\|voter\)"' | wc -l | grep -qx 3; then
    echo " ok"
    export BRICK_SOCKET=$sock1
    ./bin/brick volume inspect demo >/dev/null 2>&1 || ./bin/brick volume create demo --replicas 3 --size 1G
    mnt="$dev/mnt/demo"
    mkdir -p "$mnt"
    if ! grep -q " $mnt fuse" /proc/mounts; then
      ./bin/brick --timeout 60s volume mount demo "$mnt"
    fi
    ./bin/brick status
    cat <<MSG

brick is up: three daemons on 127.0.0.1-3, data and logs under $dev.
Volume "demo" (3 replicas) is mounted at $mnt: every fsync'd byte is on three bricks.
Try:
  export BRICK_SOCKET=$sock1
  echo hello > $mnt/hello; sync; cat $mnt/hello
  ./bin/brick volume status demo
  ./bin/brick peer ls
  ./bin/brick volume create data --replicas 2 --size 1G
  BRICK_SERVER=127.0.0.2 BRICK_CLUSTER_KEY=\$(cat $dev/cluster-key) ./bin/brick volume ls
Stop it with: make down
MSG
    exit 0
  fi
  echo -n .; sleep 0.5
done
echo " not healthy after 60 s; logs:" >&2
tail -n 20 "$dev"/n*/brickd.log >&2
exit 1
