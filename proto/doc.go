// Package proto holds brick.proto, the gRPC services between daemons and
// between the CLI and a daemon. The generated Go code lives in
// proto/brickpb and is committed; `make proto` regenerates it. This package
// must never hold logic: handlers live in package daemon.
package proto
