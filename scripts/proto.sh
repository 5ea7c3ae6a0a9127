#!/usr/bin/env bash
# Regenerates proto/brickpb from proto/brick.proto. Needs protoc (Debian's
# protobuf-compiler) and the Go plugins at the versions go.mod pins.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
GOBIN=$(pwd)/bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOBIN=$(pwd)/bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PATH=$(pwd)/bin:$PATH protoc -I proto --go_out=proto/brickpb --go_opt=paths=source_relative \
  --go-grpc_out=proto/brickpb --go-grpc_opt=paths=source_relative proto/brick.proto proto/replica.proto proto/share.proto
echo "regenerated proto/brickpb"
