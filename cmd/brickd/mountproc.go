package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/brickvol/brick/mounter"
)

// runMountProcess is "brickd mount-process": the process of one mount,
// started by brickd (never by hand) with its settings in BRICK_MOUNT_*
// variables and a pipe on fd 3 for its readiness.
func runMountProcess(stderr io.Writer, getenv func(string) string) int {
	epoch, err := strconv.ParseUint(getenv("BRICK_MOUNT_EPOCH"), 10, 64)
	if err != nil {
		fmt.Fprintf(stderr, "brickd mount-process: BRICK_MOUNT_EPOCH %q is not an epoch (this command is started by brickd, not by hand)\n", getenv("BRICK_MOUNT_EPOCH"))
		return 2
	}
	var timeout time.Duration
	if v := getenv("BRICK_REPLICA_TIMEOUT"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil {
			fmt.Fprintf(stderr, "brickd mount-process: BRICK_REPLICA_TIMEOUT %q: %v\n", v, err)
			return 2
		}
	}
	var failover time.Duration
	if v := getenv("BRICK_MOUNT_FAILOVER_TIMEOUT"); v != "" {
		if failover, err = time.ParseDuration(v); err != nil || failover <= 0 {
			fmt.Fprintf(stderr, "brickd mount-process: BRICK_MOUNT_FAILOVER_TIMEOUT %q: want a positive duration\n", v)
			return 2
		}
	}
	nameCache := 0
	if v := getenv("BRICK_MOUNT_NAME_CACHE"); v != "" {
		if nameCache, err = strconv.Atoi(v); err != nil || nameCache < 0 {
			fmt.Fprintf(stderr, "brickd mount-process: BRICK_MOUNT_NAME_CACHE %q: want a number of names\n", v)
			return 2
		}
	}
	var linger time.Duration
	if v := getenv("BRICK_MOUNT_REPLICATION_LINGER"); v != "" {
		if linger, err = time.ParseDuration(v); err != nil || linger < 0 {
			fmt.Fprintf(stderr, "brickd mount-process: BRICK_MOUNT_REPLICATION_LINGER %q: want a duration, 0 or more\n", v)
			return 2
		}
	}
	grpcStreams := false
	switch v := getenv("BRICK_MOUNT_REPLICATION_STREAM"); v {
	case "", "framed":
	case "grpc":
		grpcStreams = true
	default:
		fmt.Fprintf(stderr, "brickd mount-process: BRICK_MOUNT_REPLICATION_STREAM %q: want framed or grpc\n", v)
		return 2
	}
	var healBW int64 = -1 // the head's default
	if v := getenv("BRICK_HEAL_BANDWIDTH"); v != "" {
		if healBW, err = strconv.ParseInt(v, 10, 64); err != nil || healBW < 0 {
			fmt.Fprintf(stderr, "brickd mount-process: BRICK_HEAL_BANDWIDTH %q: want bytes per second\n", v)
			return 2
		}
	}
	level := getenv("BRICK_LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	log, err := newLogger(stderr, level, "text")
	if err != nil {
		fmt.Fprintf(stderr, "brickd mount-process: %v\n", err)
		return 2
	}
	cfg := mounter.Config{
		Volume:          getenv("BRICK_MOUNT_VOLUME"),
		Dir:             getenv("BRICK_MOUNT_DIR"),
		Epoch:           epoch,
		FailoverTimeout: failover,
		NameCache:       nameCache,
		Linger:          linger,
		GRPCStreams:     grpcStreams,
		Daemon:          getenv("BRICK_MOUNT_DAEMON"),
		BrickID:         getenv("BRICK_MOUNT_BRICK_ID"),
		Key:             getenv("BRICK_CLUSTER_KEY"),
		ReplicaTimeout:  timeout,
		StatusFile:      getenv("BRICK_MOUNT_STATUS_FILE"),
		HealBandwidth:   healBW,
		ReplicaDir:      getenv("BRICK_MOUNT_REPLICA_DIR"),
		Logger:          log.With("mount", getenv("BRICK_MOUNT_VOLUME")),
	}
	if ready := os.NewFile(3, "ready"); ready != nil {
		cfg.Ready = ready
	}
	if err := mounter.Run(context.Background(), cfg); err != nil {
		log.Error("mount process failed", "err", err)
		return 1
	}
	return 0
}
