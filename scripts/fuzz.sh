#!/usr/bin/env bash
# Runs every Fuzz* target for FUZZTIME (default 10s) each.
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime runs out under CPU contention (golang/go#75804,
# fixed in Go 1.27): no input failed and nothing is written to testdata/fuzz.
# Such a run is said loudly and tried once more; a failure that wrote an input,
# or any other failure, fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //'); do
    for try in 1 2; do
      echo "fuzz $pkg $f ($t)"
      if go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg" >"$log" 2>&1; then
        break
      fi
      if [ "$try" = 1 ] && grep -q '^    context deadline exceeded$' "$log" &&
        ! grep -q 'Failing input written to' "$log"; then
        echo "fuzz: $f hit Go's fuzztime shutdown race (golang/go#75804; no failing input); running it again" >&2
        continue
      fi
      cat "$log"
      exit 1
    done
  done
done
