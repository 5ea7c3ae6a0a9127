// Command brickd is brick's daemon: one per host. It joins the cluster by
// gossip, takes part in the Raft control plane, keeps this host's bricks,
// and answers the brick CLI on a unix socket and peers over TCP.
//
// Every flag has a BRICK_* environment twin (flag --data-dir ↔
// BRICK_DATA_DIR); a flag given on the command line wins over the
// environment.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/brickvol/brick/daemon"
	"github.com/brickvol/brick/internal/sysmon"
	"github.com/brickvol/brick/volspec"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr, os.Getenv))
}

func run(args []string, stderr io.Writer, getenv func(string) string) int {
	if len(args) > 0 && args[0] == "mount-process" {
		return runMountProcess(stderr, getenv)
	}
	cfg := daemon.DefaultConfig()
	fs := flag.NewFlagSet("brickd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	b := &binder{fs: fs, getenv: getenv}
	var peers, logLevel, logFormat string
	steadySysmon := true
	b.str(&cfg.Name, "name", "unique name of this daemon in the cluster (default: host name)")
	b.str(&cfg.Bind, "bind", "IP address every listener binds to and peers reach this daemon on")
	b.str(&cfg.DataDir, "data-dir", "directory for the brick's replicas, Raft state and identity")
	b.str(&peers, "peers", "comma-separated gossip addresses host[:port] of existing members to join (retried until one answers)")
	b.int(&cfg.BootstrapExpect, "bootstrap-expect", "number of daemons that bootstrap a new cluster together")
	b.str(&cfg.ClusterKey, "cluster-key", "shared secret (≥16 characters) that authenticates all cluster traffic; never logged")
	b.str(&cfg.Socket, "socket", "unix socket for the local brick CLI; empty disables it")
	b.int(&cfg.GRPCPort, "grpc-port", "TCP port for peers and remote CLIs (gRPC over TLS)")
	b.int(&cfg.GossipPort, "gossip-port", "TCP and UDP port for gossip")
	b.int(&cfg.RaftPort, "raft-port", "TCP port for Raft")
	b.int(&cfg.HealthPort, "health-port", "TCP port for the HTTP health endpoint GET /healthz")
	b.bool(&cfg.NoDisk, "no-disk", "run as a tie-breaker: a Raft member that stores no replicas")
	b.int(&cfg.MaxVoters, "max-voters", "Raft voters at most; later daemons join as non-voters")
	b.dur(&cfg.DeadVoterTimeout, "dead-voter-timeout", "how long a voter may stay dead before the leader removes it from Raft")
	b.str(&cfg.GossipProfile, "gossip-profile", "failure-detection timing: lan, or local for fast tests on one machine")
	b.dur(&cfg.RaftHeartbeat, "raft-heartbeat", "Raft heartbeat and election timeout")
	b.dur(&cfg.ReconcileInterval, "reconcile-interval", "how often replicas and Raft membership are re-checked besides reacting to events")
	b.dur(&cfg.CapacityInterval, "capacity-interval", "how often free space is measured and gossiped")
	b.dur(&cfg.ReplicaTimeout, "replica-timeout", "how long a volume's head waits for a brick before dropping it from the in-sync set")
	healBW := volspec.FormatSize(uint64(cfg.HealBandwidth))
	b.str(&healBW, "heal-bandwidth", "bytes per second each heal may send or fetch per brick (op-log catch-up and full resync), e.g. 64M; 0 for unlimited")
	wbWindow := volspec.FormatSize(uint64(cfg.WritebackWindow))
	b.str(&wbWindow, "writeback-window", "a brick hands each such piece of a long sequential write to the disk at once and drops it from the page cache once written (its copy is rarely read back; the cache stays for readers), e.g. 8M; 0 keeps everything cached")
	directMin := "0" // off; FormatSize says "0 B", which sizes refuse
	if cfg.DirectWriteMin > 0 {
		directMin = volspec.FormatSize(uint64(cfg.DirectWriteMin))
	}
	b.str(&directMin, "direct-write-min", "a brick writes each write of whole pages this big or bigger straight to its disk (O_DIRECT) instead of copying it into the page cache: a third less brick CPU per byte of a big write, but on a VM whose host caches the disk the data then reads back from the brick at disk speed, not the host cache's (docs/datapath.md); durability is the same (fsync still flushes the disk), e.g. 256K; 0 writes everything through the page cache")
	b.int(&cfg.SpareFiles, "spare-files", "emptied inodes of deleted files each replica keeps for new files to take instead of allocating (spare/ beside data/; on ext4 without a journal every new inode otherwise skips those freed in the last minutes, one by one); 0 keeps none")
	b.dur(&cfg.FailoverTimeout, "failover-timeout", "how long the host holding a volume must be dead in gossip before another host's attach takes it over without --force")
	b.int(&cfg.MountProcs, "mount-procs", "GOMAXPROCS of each mount process; 1 measured fastest, 0 means one per CPU")
	b.dur(&cfg.ReplicationLinger, "replication-linger", "how long a volume's head may hold back writes and creates nobody waits for yet, to send them to the bricks in one message with those that follow (fewer, bigger batches); an fsync, a read or an op whose caller waits sends at once; 0 sends every op at once")
	b.str(&cfg.ReplicationStream, "replication-stream", "how a volume's head streams ops to its bricks: framed (length-prefixed messages on a TLS connection of their own, read and written by the goroutines that use them) or grpc (a gRPC stream, which hands each message between goroutines on both ends); bricks serve both")
	b.bool(&cfg.LocalReads, "local-reads", "let a mount process read files straight from this host's replica of its volume once that replica has applied every write the read must see, instead of through the brick (no round trip); false reads through the brick always")
	b.int(&cfg.NameCache, "name-cache", "names each volume's head remembers to answer lookups of names that cannot exist without a round trip to a brick (about 100 bytes each); 0 turns it off")
	b.str(&cfg.MountCgroup, "mount-cgroup", "move each mount process into this cgroup (created under the root of every cgroup hierarchy) so mounts outlive a restart that kills brickd's cgroup, such as a container restart; in a container also use the host's PID namespace (docs/kubernetes.md)")
	b.str(&cfg.CSIEndpoint, "csi-endpoint", "unix socket (unix:///path or /path) to serve the Kubernetes CSI driver on; empty disables it")
	b.str(&cfg.CSIKubeletDir, "csi-kubelet-dir", "the kubelet's directory: CSI staging and target paths must lie below it")
	b.str(&cfg.DockerSocket, "docker-socket", "unix socket to serve the Docker volume plugin on (Docker's driver name is the file name); empty or \"off\" disables it")
	b.str(&cfg.DockerMountRoot, "docker-mount-root", "directory under which volumes are mounted for Docker (default DATA_DIR/docker)")
	b.dur(&cfg.DockerTimeout, "docker-timeout", "how long a Docker plugin request may take (Docker gives up after 1 minute)")
	b.bool(&steadySysmon, "steady-sysmon", "start over with GODEBUG=schedtrace=2147483647, which keeps the Go runtime's monitor thread from sleeping deeply between ops only to be woken by the next one and poll every 20µs for a millisecond (measured: 40 % of a brickd's context switches under an fsync loop); false runs with Go's default")
	logLevel, logFormat = "info", "text"
	b.str(&logLevel, "log-level", "debug, info, warn or error")
	b.str(&logFormat, "log-format", "text or json")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: brickd [flags]\n\nbrickd is brick's daemon, one per host. Every flag has a BRICK_* environment twin.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nExample, three hosts on one machine:\n"+
			"  brickd --name n1 --bind 127.0.0.1 --data-dir /tmp/n1 --socket /tmp/n1.sock\n"+
			"  BRICK_PEERS=127.0.0.1 brickd --name n2 --bind 127.0.0.2 --data-dir /tmp/n2 --socket /tmp/n2.sock\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if b.err != nil {
		fmt.Fprintf(stderr, "brickd: %v\n", b.err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "brickd: unexpected argument %q (brickd takes only flags; see --help)\n", fs.Arg(0))
		return 2
	}
	for _, f := range []struct {
		name, val string
		dst       *int64
	}{{"heal-bandwidth", healBW, &cfg.HealBandwidth}, {"writeback-window", wbWindow, &cfg.WritebackWindow}, {"direct-write-min", directMin, &cfg.DirectWriteMin}} {
		n, err := sizeFlag(f.val)
		if err != nil {
			fmt.Fprintf(stderr, "brickd: --%s: %v\n", f.name, err)
			return 2
		}
		*f.dst = n
	}
	if peers != "" {
		for _, p := range strings.Split(peers, ",") {
			cfg.Peers = append(cfg.Peers, strings.TrimSpace(p))
		}
	}
	if cfg.DockerSocket == "off" { // an empty BRICK_* variable means "not set"
		cfg.DockerSocket = ""
	}
	log, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "brickd: %v\n", err)
		return 2
	}
	cfg.Logger = log
	cfg.MountLogLevel = logLevel
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "brickd: %v\n", err)
		return 2
	}
	if steadySysmon {
		// Before anything starts: the new program starts from scratch.
		if err := sysmon.Reexec(os.Args, os.Environ()); err != nil {
			log.Warn("running with Go's default monitor thread", "err", err)
		}
	}
	log.Info("starting", "name", cfg.Name, "bind", cfg.Bind, "data_dir", cfg.DataDir, "pid", os.Getpid())
	d, err := daemon.Start(cfg)
	if err != nil {
		log.Error("brickd could not start", "err", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	log.Info("shutting down", "signal", s.String())
	d.Leave()
	d.Stop()
	log.Info("stopped")
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// binder defines flags whose defaults come from their BRICK_* twins.
type binder struct {
	fs     *flag.FlagSet
	getenv func(string) string
	err    error
}

func envName(flagName string) string {
	return "BRICK_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (b *binder) env(name string) (string, bool) {
	v := b.getenv(envName(name))
	return v, v != ""
}

func (b *binder) fail(name, v string, err error) {
	if b.err == nil {
		b.err = fmt.Errorf("%s=%q: %v", envName(name), v, err)
	}
}

func (b *binder) str(p *string, name, usage string) {
	if v, ok := b.env(name); ok {
		*p = v
	}
	b.fs.StringVar(p, name, *p, usage+" ["+envName(name)+"]")
}

func (b *binder) int(p *int, name, usage string) {
	if v, ok := b.env(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.fail(name, v, errors.New("not a whole number"))
		}
		*p = n
	}
	b.fs.IntVar(p, name, *p, usage+" ["+envName(name)+"]")
}

func (b *binder) bool(p *bool, name, usage string) {
	if v, ok := b.env(name); ok {
		t, err := strconv.ParseBool(v)
		if err != nil {
			b.fail(name, v, errors.New("want true or false"))
		}
		*p = t
	}
	b.fs.BoolVar(p, name, *p, usage+" ["+envName(name)+"]")
}

func (b *binder) dur(p *time.Duration, name, usage string) {
	if v, ok := b.env(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.fail(name, v, errors.New("not a duration like 10s or 5m"))
		}
		*p = d
	}
	b.fs.DurationVar(p, name, *p, usage+" ["+envName(name)+"]")
}

// sizeFlag parses a size flag's value: "0" (off, unlimited), or a size
// volspec.ParseSize takes (64M, 8 MiB, ...).
func sizeFlag(v string) (int64, error) {
	if v == "0" {
		return 0, nil
	}
	n, err := volspec.ParseSize(v) // at most MaxInt64
	return int64(n), err
}
