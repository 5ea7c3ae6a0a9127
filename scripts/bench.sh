#!/usr/bin/env bash
# make bench (after the Go micro-benchmarks): ../shared/bench/workload.sh on
#   local      a directory on the local disk,
#   fuse-ceiling  go-fuse's passthrough example (example/loopback -allow-other)
#              over a directory on the same disk: the most any go-fuse file
#              system can deliver here,
#   brick-r3   a --replicas 3 brick volume on a temporary three-daemon cluster
#              on 127.0.9.1-3 (own data dir, socket and cluster key),
#   gluster-r3 (only with BENCH_GLUSTER=1) GlusterFS replica 3 set up by
#              ../shared/bench/gluster-setup.sh,
# all in one run, then prints summarize.py's ratio table and a check of every
# row against the targets of ../shared/bench/README.md. Everything it started
# is torn down on exit, also on failure or Ctrl-C. Run as root.
#
# Environment (defaults):
#   BENCH_RUNS=1         workload runs per target (interleaved: local, fuse, brick, ...)
#   BENCH_OUT=/var/tmp/brick-bench-results.<date>   result files, logs, table
#   BENCH_DIR=/var/tmp   where the scratch directories go (the disk under test)
#   BENCH_GLUSTER=0      1: also measure GlusterFS replica 3 (slow: ~+10 min per run)
#   BENCH_PERF=0         1: `perf record` the brick mount process and the three
#                        brickd for BENCH_PERF_SECS (30) seconds, starting
#                        BENCH_PERF_DELAY (0) seconds into the first brick run;
#                        top symbols go to $BENCH_OUT/perf-*.txt
#   BENCH_WL_TIMEOUT=1800  seconds one workload run may take before it is killed
#   WL_*                 passed through to workload.sh (e.g. WL_SKIP="seq rand")
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export LC_ALL=C

# A self-contained cluster: no BRICK_* from the caller's environment leaks in.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^BRICK_' || true)

shared=$(cd "$root/../shared/bench" && pwd)
runs=${BENCH_RUNS:-1}
out=${BENCH_OUT:-/var/tmp/brick-bench-results.$(date +%Y%m%d-%H%M%S)}
gluster=${BENCH_GLUSTER:-0}
perf_on=${BENCH_PERF:-0}
perf_secs=${BENCH_PERF_SECS:-30}
perf_delay=${BENCH_PERF_DELAY:-0}
wl_timeout=${BENCH_WL_TIMEOUT:-1800}
net=127.0.9

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts, drop_caches, apt-get)"
[ -e /dev/fuse ] || die "/dev/fuse missing"
case "$runs" in '' | *[!0-9]* | 0) die "BENCH_RUNS=$runs: want a positive number" ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/brick-bench.XXXXXX")

# ---- teardown ---------------------------------------------------------------------
loop_pid="" mount_dir="" mount_pid="" perf_pid="" gluster_up=0
daemon_pids=()

# fuse_abort DIR: abort the FUSE connection mounted at DIR (never blocks on it)
# and detach the mount.
fuse_abort() {
  local conn
  conn=$(awk -v m="$1" '$5 == m { split($3, a, ":"); print a[2] }' /proc/self/mountinfo | tail -n 1)
  [ -n "$conn" ] || return 0
  log "aborting FUSE connection $conn at $1"
  [ -d "/sys/fs/fuse/connections/$conn" ] || mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null
  [ -w "/sys/fs/fuse/connections/$conn/abort" ] && echo 1 > "/sys/fs/fuse/connections/$conn/abort"
  umount -l "$1" 2>/dev/null || true
}
mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
stop_pid() {  # stop_pid PID: TERM, wait up to 5 s, KILL
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  log "tearing down (exit status $rc)"
  [ -n "$perf_pid" ] && { kill -TERM "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null; }
  if [ -n "$mount_dir" ] && mounted "$mount_dir"; then
    timeout 90 ./bin/brick --timeout 60s volume unmount "$mount_dir" >&2 || log "brick volume unmount failed"
    if mounted "$mount_dir"; then
      stop_pid "$mount_pid"
      fuse_abort "$mount_dir"
    fi
  fi
  [ -n "$mount_pid" ] && stop_pid "$mount_pid"   # the mount process outlives brickd
  for pid in "${daemon_pids[@]}"; do stop_pid "$pid"; done
  if [ -n "$loop_pid" ]; then
    stop_pid "$loop_pid"   # SIGTERM makes the example unmount and exit
    mounted "$work/fuse-mnt" && fuse_abort "$work/fuse-mnt"
  fi
  if [ "$gluster_up" = 1 ]; then
    bash "$shared/gluster-teardown.sh" >&2 || log "gluster-teardown.sh failed"
  fi
  mkdir -p "$out/logs"
  for n in n1 n2 n3; do
    [ -f "$work/brick/$n/brickd.log" ] && cp "$work/brick/$n/brickd.log" "$out/logs/brickd-$n.log"
  done
  for f in "$work"/brick/n1/data/mounts/*.log; do   # the mount process's log
    [ -f "$f" ] && cp "$f" "$out/logs/mount-$(basename "$f")"
  done
  [ -f "$work/loopback.log" ] && cp "$work/loopback.log" "$out/logs/"
  if grep -q " $work/" /proc/mounts; then
    log "WARNING: mounts left under $work; not removing it"
  else
    rm -rf "$work"
  fi
  log "results and logs in $out"
  exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# ---- 1. build and install -----------------------------------------------------------
log "make build"
${MAKE:-make} --no-print-directory build >&2

need=()
for t in fio:fio sqlite3:sqlite3 python3:python3 fusermount3:fuse3 timeout:coreutils; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
[ "$perf_on" = 1 ] && ! command -v perf >/dev/null 2>&1 && need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y "${need[@]}" >&2
fi

log "building go-fuse's example/loopback (the FUSE ceiling)"
go build -o "$work/loopback" github.com/hanwen/go-fuse/v2/example/loopback

# ---- 2. local directory and FUSE ceiling -------------------------------------------
mkdir -p "$work/local" "$work/fuse-src" "$work/fuse-mnt" "$work/brick-mnt"
"$work/loopback" -q -allow-other "$work/fuse-mnt" "$work/fuse-src" > "$work/loopback.log" 2>&1 &
loop_pid=$!
for _ in $(seq 1 100); do mounted "$work/fuse-mnt" && break; sleep 0.1; done
mounted "$work/fuse-mnt" || { cat "$work/loopback.log" >&2; die "loopback did not mount"; }
log "loopback mounted at $work/fuse-mnt (pid $loop_pid)"

# ---- 3. a three-daemon brick cluster on 127.0.9.1-3 --------------------------------
key=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
sock="$work/brick/n1/brick.sock"
for i in 1 2 3; do
  d="$work/brick/n$i"
  mkdir -p "$d"
  peers=""; [ $i != 1 ] && peers=$net.1
  BRICK_NAME=bench-n$i BRICK_BIND=$net.$i BRICK_DATA_DIR="$d/data" BRICK_SOCKET="$d/brick.sock" \
    BRICK_PEERS=$peers BRICK_CLUSTER_KEY="$key" BRICK_DOCKER_SOCKET=off \
    ./bin/brickd >> "$d/brickd.log" 2>&1 &
  daemon_pids+=($!)
done
export BRICK_SOCKET=$sock
log "brickd pids ${daemon_pids[*]} on $net.1-3; waiting for a healthy cluster"
healthy=0
for _ in $(seq 1 240); do
  for pid in "${daemon_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$work"/brick/n*/brickd.log >&2; die "brickd $pid exited"; }
  done
  if ./bin/brick --json peer ls 2>/dev/null | grep -o '"raft_role": *"\(leader\|voter\)"' | wc -l | grep -qx 3; then
    healthy=1; break
  fi
  sleep 0.5
done
[ $healthy = 1 ] || { tail -n 20 "$work"/brick/n*/brickd.log >&2; die "cluster not healthy after 120 s"; }
for try in $(seq 1 30); do
  ./bin/brick volume create bench --replicas 3 --size 20G >&2 && break
  ./bin/brick volume inspect bench > /dev/null 2>&1 && break
  [ "$try" = 30 ] && die "brick volume create failed"
  sleep 1
done
mount_dir="$work/brick-mnt"
mj=$(./bin/brick --json --timeout 60s volume mount bench "$mount_dir")
mount_pid=$(echo "$mj" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
mounted "$mount_dir" || die "brick volume mount returned but $mount_dir is not mounted"
log "brick volume bench (replicas 3) mounted at $mount_dir (mount process $mount_pid)"

# ---- 4. optional GlusterFS replica 3 -------------------------------------------------
if [ "$gluster" = 1 ]; then
  gluster_up=1
  log "setting up GlusterFS replica 3 (slow)"
  if ! bash "$shared/gluster-setup.sh" >&2; then
    log "WARNING: gluster-setup.sh failed; no GlusterFS column"
    gluster=0
  fi
fi

# ---- 5. the workload ----------------------------------------------------------------
targets=("local:$work/local" "fuse-ceiling:$work/fuse-mnt" "brick-r3:$mount_dir")
[ "$gluster" = 1 ] && targets+=("gluster-r3:${GL_MNT:-/mnt/gv}")

perf_start() {
  [ "$perf_on" = 1 ] && [ -z "$perf_pid" ] || return 0
  (
    sleep "$perf_delay"
    exec perf record -e cpu-clock -F 499 -g -o "$out/perf-brick.data" \
      -p "$mount_pid,$(IFS=,; echo "${daemon_pids[*]}")" -- sleep "$perf_secs"
  ) > "$out/perf-record.log" 2>&1 &
  perf_pid=$!
  log "perf: ${perf_secs}s of the mount process and the brickds, from ${perf_delay}s into the brick run"
}
perf_report() {
  [ "$perf_on" = 1 ] && [ -n "$perf_pid" ] || return 0
  wait "$perf_pid" 2>/dev/null || true
  perf_pid=""
  local data="$out/perf-brick.data" dpids p n
  dpids=$(IFS=,; echo "${daemon_pids[*]}")
  {
    echo "# samples per process (cpu-clock at 499 Hz for ${perf_secs}s: 499 x ${perf_secs} = one core)"
    perf script -i "$data" -F pid 2>/dev/null | sort | uniq -c | sort -rn | while read -r n p; do
      case ",$mount_pid,$dpids," in
        *",$p,"*) [ "$p" = "$mount_pid" ] && echo "$n mount-process ($p)" || echo "$n brickd ($p)" ;;
        *) echo "$n other ($p)" ;;
      esac
    done
  } > "$out/perf-by-process.txt"
  perf report -i "$data" --stdio --no-children --pid "$mount_pid" --percentage relative -g none \
    --sort sym --percent-limit 0.5 > "$out/perf-mount-self.txt" 2>/dev/null || true
  perf report -i "$data" --stdio --children --pid "$mount_pid" --percentage relative -g none \
    --sort sym --percent-limit 2 > "$out/perf-mount-cumulative.txt" 2>/dev/null || true
  perf report -i "$data" --stdio --no-children --pid "$dpids" --percentage relative -g none \
    --sort sym --percent-limit 0.5 > "$out/perf-brickd-self.txt" 2>/dev/null || true
  perf report -i "$data" --stdio --children --pid "$dpids" --percentage relative -g none \
    --sort sym --percent-limit 2 > "$out/perf-brickd-cumulative.txt" 2>/dev/null || true
  log "perf: $(tr '\n' ';' < "$out/perf-by-process.txt" | cut -c1-300)"
  log "perf: top symbols of the mount process (self, % of its samples); more in $out/perf-*.txt:"
  grep -v '^#' "$out/perf-mount-self.txt" | grep -v '^$' | head -n 15 >&2 || true
}

for r in $(seq 1 "$runs"); do
  for t in "${targets[@]}"; do
    label=${t%%:*} dir=${t#*:}
    f="$out/$label-$r.txt"
    log "run $r/$runs: $label ($dir)"
    [ "$label" = brick-r3 ] && [ "$r" = 1 ] && perf_start
    if ! timeout -k 30 "$wl_timeout" bash "$shared/workload.sh" "$dir" "$f" 2> "$out/$label-$r.log"; then
      log "WARNING: workload on $label exited non-zero; see $out/$label-$r.log"
    fi
    grep -h '^RESULT' "$f" 2>/dev/null | sed 's/^/  /' >&2 || true
    [ "$label" = brick-r3 ] && [ "$r" = 1 ] && perf_report
  done
done

# ---- 6. the table ---------------------------------------------------------------------
args=()
for t in "${targets[@]}"; do
  label=${t%%:*} files=""
  for r in $(seq 1 "$runs"); do [ -s "$out/$label-$r.txt" ] && files="$files${files:+,}$out/$label-$r.txt"; done
  args+=("$label=$files")
done
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r), BENCH_RUNS=$runs"
  echo
  python3 "$shared/summarize.py" "${args[@]}"
  echo
  # Each row against the last column of ../shared/bench/README.md, and against
  # GlusterFS: measured in this run with BENCH_GLUSTER=1, else the README's figure.
  python3 - "$shared" "${args[@]}" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from summarize import parse

def means(files):
    runs = [parse(f) for f in files.split(",") if f]
    def m(test, key):
        v = []
        for r in runs:
            try:
                v.append(float(r[test][key]))
            except (KeyError, ValueError):
                pass
        return sum(v) / len(v) if v else None
    return m

g = {lab: means(files) for lab, files in (a.split("=", 1) for a in sys.argv[2:])}
loc, fuse, br = g["local"], g["fuse-ceiling"], g["brick-r3"]
readme_gluster = {("seqwrite", "mbps"): 110, ("seqread", "mbps"): 643, ("randwrite_fsync", "iops"): 754,
                  ("randread", "iops"): 3779, ("meta_create", "files_per_s"): 236,
                  ("meta_stat", "files_per_s"): 1203, ("meta_delete", "files_per_s"): 664,
                  ("ci_untar", "secs"): 30.4, ("ci_total", "secs"): 38.6, ("sqlite_insert", "tps"): 58}
measured = "gluster-r3" in g
def gl(test, key):
    return g["gluster-r3"](test, key) if measured else readme_gluster[(test, key)]

# test, key, higher is better, target text, target value
rows = [
    ("seqwrite", "mbps", True, "≥ 0.8 × local ⁄ 3", lambda: 0.8 * loc("seqwrite", "mbps") / 3),
    ("seqread", "mbps", True, "≥ 0.7 × FUSE ceiling", lambda: 0.7 * fuse("seqread", "mbps")),
    ("randwrite_fsync", "iops", True, "≥ 2 × GlusterFS", lambda: 2 * gl("randwrite_fsync", "iops")),
    ("randread", "iops", True, "≥ 0.5 × local", lambda: 0.5 * loc("randread", "iops")),
    ("meta_create", "files_per_s", True, "≥ 0.5 × FUSE ceiling", lambda: 0.5 * fuse("meta_create", "files_per_s")),
    ("meta_stat", "files_per_s", True, "≥ 0.5 × FUSE ceiling", lambda: 0.5 * fuse("meta_stat", "files_per_s")),
    ("meta_delete", "files_per_s", True, "≥ 0.5 × FUSE ceiling", lambda: 0.5 * fuse("meta_delete", "files_per_s")),
    ("ci_untar", "secs", False, "≤ 2 × FUSE ceiling", lambda: 2 * fuse("ci_untar", "secs")),
    ("ci_total", "secs", False, "≤ 2 × FUSE ceiling", lambda: 2 * fuse("ci_total", "secs")),
    ("sqlite_insert", "tps", True, "≥ 0.5 × FUSE ceiling", lambda: 0.5 * fuse("sqlite_insert", "tps")),
]
src = "measured in this run" if measured else "../shared/bench/README.md's figure"
print("| test | brick-r3 | target | target value | meets target | GlusterFS (%s) | ahead of GlusterFS |" % src)
print("|---|---|---|---|---|---|---|")
def f(v):
    return "-" if v is None else ("%.0f" % v if v >= 100 else "%.3g" % v)
for test, key, higher, text, tgt in rows:
    b = br(test, key)
    try:
        t = tgt()
    except TypeError:
        t = None
    gv = gl(test, key)
    ok = "-" if b is None or t is None else ("yes" if (b >= t if higher else b <= t) else "**no**")
    ahead = "-" if b is None or gv is None else ("yes" if (b > gv if higher else b < gv) else "**no**")
    print("| %s %s | %s | %s | %s | %s | %s | %s |" % (test, key, f(b), text, f(t), ok, f(gv), ahead))
EOF
} > "$out/table.md"
echo
cat "$out/table.md"
