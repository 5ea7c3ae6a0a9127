#!/usr/bin/env bash
# The test command (README): installs what the tests need, lints, runs the
# unit tests with the race detector, a short fuzz pass, and the chaos
# scenarios against real brickd processes. Runs as root in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/deps.sh
bash scripts/lint.sh
echo "== unit tests (race)"
go test -race -count=1 $(go list ./... | grep -v /chaos)
echo "== fuzz (short)"
FUZZTIME=${FUZZTIME:-5s} bash scripts/fuzz.sh
echo "== chaos scenarios"
status=0
go test -count=1 -timeout 40m -v ./chaos/... || status=$?
echo "test.sh: finished in $(( $(date +%s) - start ))s"
exit "$status"
