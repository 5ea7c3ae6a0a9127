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
# When a Docker engine runs here, n1 serves the Docker volume plugin on
# /run/docker/plugins/brick.sock (the plain-socket install: Docker finds it
# as driver "brick"); the other daemons of this one machine serve none.
docker_sock=off
if [ -w /run ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  docker_sock=/run/docker/plugins/brick.sock
fi
for i in 1 2 3; do
  n=n$i; ip=127.0.0.$i
  mkdir -p "$dev/$n"
  if [ -f "$dev/$n/pid" ] && kill -0 "$(cat "$dev/$n/pid")" 2>/dev/null; then
    echo "$n already running (pid $(cat "$dev/$n/pid"))"; continue
  fi
  sock="$dev/$n/brick.sock"; [ $i = 1 ] && sock=$sock1
  peers=""; [ $i != 1 ] && peers=127.0.0.1
  dsock=off; [ $i = 1 ] && dsock=$docker_sock
  BRICK_NAME=$n BRICK_BIND=$ip BRICK_DATA_DIR="$dev/$n/data" BRICK_SOCKET="$sock" BRICK_PEERS=$peers \
    BRICK_DOCKER_SOCKET=$dsock BRICK_CLUSTER_KEY="$key" nohup ./bin/brickd >>"$dev/$n/brickd.log" 2>&1 &
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
    docker_msg="Docker: no Docker engine answers here, so no Docker plugin was registered (see docs/docker.md)."
    if [ "$docker_sock" != off ]; then
      if grep -q "serving the Docker volume plugin.*socket=$docker_sock" "$dev/n1/brickd.log" && [ -S "$docker_sock" ] &&
        docker volume create --driver brick --opt replicas=3 --opt size=1G web >/dev/null; then
        docker_msg="Docker: n1 serves the volume plugin on $docker_sock (driver \"brick\"); volume \"web\" (3 replicas) is ready:
  docker run --rm -v web:/data IMAGE sh -c 'echo hello > /data/hello; sync'
  docker volume inspect web
  docker volume create --driver brick --opt replicas=2 --opt size=5G db"
      else
        docker_msg="Docker: n1 does not serve the plugin on $docker_sock (another brickd may hold it); see $dev/n1/brickd.log."
      fi
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
$docker_msg
Stop it with: make down
MSG
    exit 0
  fi
  echo -n .; sleep 0.5
done
echo " not healthy after 60 s; logs:" >&2
tail -n 20 "$dev"/n*/brickd.log >&2
exit 1
