package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/brickvol/brick/plugin/csi"
	"github.com/brickvol/brick/plugin/docker"
	"github.com/brickvol/brick/replica"
)

// Fixed, documented ports on the bind address, so daemons on 127.0.0.1, .2
// and .3 need no port flags (docs/operations.md).
const (
	DefaultGRPCPort   = 7400
	DefaultGossipPort = 7401
	DefaultRaftPort   = 7402
	DefaultHealthPort = 7403
)

// Config is everything brickd can be told. Only cmd/brickd binds it to
// flags and BRICK_* variables.
type Config struct {
	Name    string // unique daemon name; default: the host name
	Bind    string // IP every listener binds to and peers reach
	DataDir string
	// Peers are gossip addresses (host[:port]) of existing members.
	Peers []string
	// BootstrapExpect daemons bootstrap Raft together; later ones join.
	BootstrapExpect int
	// ClusterKey authenticates cluster traffic; empty means the public
	// development key, with a loud warning.
	ClusterKey string
	// Socket is the CLI's unix socket; empty disables it.
	Socket string

	GRPCPort, GossipPort, RaftPort, HealthPort int

	// NoDisk makes a tie-breaker: a Raft member that holds no replicas.
	NoDisk bool
	// MaxVoters caps Raft voters; later daemons join as non-voters.
	MaxVoters int
	// DeadVoterTimeout is how long a voter may stay dead (or gone) in gossip
	// before the leader removes it from Raft.
	DeadVoterTimeout time.Duration
	// GossipProfile is "lan" or "local" (fast failure detection for tests).
	GossipProfile string
	// RaftHeartbeat is Raft's heartbeat and election timeout.
	RaftHeartbeat time.Duration
	// ReconcileInterval is how often the daemon re-checks its replicas and,
	// on the leader, the Raft membership, besides reacting to events.
	ReconcileInterval time.Duration
	// CapacityInterval is how often free space is measured and gossiped.
	CapacityInterval time.Duration

	// ReplicaTimeout is how long a head waits for a brick's acknowledgement
	// before dropping it from the in-sync set (passed to mount processes).
	ReplicaTimeout time.Duration
	// FailoverTimeout is how long the holder of a single-access volume must
	// have been dead (or gone) in gossip before another host's attach takes
	// the volume over without --force.
	FailoverTimeout time.Duration
	// HealBandwidth throttles each heal (op-log catch-up and full resync),
	// in bytes per second per brick; 0 is unlimited.
	HealBandwidth int64
	// WritebackWindow is the unit in which a brick hands a long sequential
	// write to writeback and then drops it from the page cache
	// (replica.ReplicaOptions.WritebackWindow); 0 never drops.
	WritebackWindow int64
	// DirectWriteMin is the size from which a brick writes a page-aligned
	// write with O_DIRECT instead of through the page cache
	// (replica.ReplicaOptions.DirectWriteMin); 0, the default, never does.
	DirectWriteMin int64
	// SpareFiles is how many emptied inodes of deleted files each replica
	// keeps for new files (replica.ReplicaOptions.SpareFiles); 0 keeps
	// none.
	SpareFiles int
	// MountLogLevel is the log level of the mount processes.
	MountLogLevel string
	// MountProcs is GOMAXPROCS of each mount process (0: Go's default, one
	// per CPU). A mount process is a chain of goroutine hand-offs (FUSE
	// request, head, gRPC streams); with one P they need no thread
	// wake-ups, which measured faster on every workload
	// (docs/benchmarks.md).
	MountProcs int
	// ReplicationLinger is how long each mount process's head may hold
	// back ops nobody waits for yet to batch them (head.Config.Linger).
	ReplicationLinger time.Duration
	// ReplicationStream is how each mount process's head carries its
	// replication streams: "framed" (package replica/framed, on a
	// connection of its own) or "grpc" (a gRPC stream). Bricks serve both.
	ReplicationStream string
	// NameCache is how many names each mount process's head keeps to
	// answer lookups of names that cannot exist without asking a brick
	// (package namecache); 0 turns it off.
	NameCache int
	// LocalReads lets a mount process read files straight from this
	// host's replica of its volume, when that replica has applied every op
	// the read must see, instead of asking the brick (mounter's local
	// reads).
	LocalReads bool
	// MountCgroup, when set, is the cgroup (a name under the root of every
	// hierarchy) each mount process is moved into, so a supervisor that
	// kills brickd's cgroup (a container restart) leaves mounts alone
	// (daemon/cgroup.go).
	MountCgroup string

	// CSIEndpoint is the unix socket (unix:///path or /path) the CSI driver
	// is served on; empty disables it (daemon/csi.go).
	CSIEndpoint string
	// CSIKubeletDir is the kubelet's directory: CSI staging and target paths
	// must lie below it.
	CSIKubeletDir string

	// DockerSocket is where the Docker volume plugin is served
	// (daemon/dockerplugin.go); empty disables it.
	DockerSocket string
	// DockerMountRoot is where volumes are mounted for Docker; empty means
	// DataDir/docker. The managed plugin sets its propagated mount.
	DockerMountRoot string
	// DockerTimeout bounds each Docker plugin request.
	DockerTimeout time.Duration

	Logger *slog.Logger
}

// DefaultConfig is a single host that just works.
func DefaultConfig() Config {
	name, _ := os.Hostname()
	return Config{
		Name:              name,
		Bind:              "127.0.0.1",
		DataDir:           "/var/lib/brick",
		BootstrapExpect:   1,
		Socket:            "/run/brick/brick.sock",
		GRPCPort:          DefaultGRPCPort,
		GossipPort:        DefaultGossipPort,
		RaftPort:          DefaultRaftPort,
		HealthPort:        DefaultHealthPort,
		MaxVoters:         5,
		DeadVoterTimeout:  5 * time.Minute,
		GossipProfile:     "lan",
		RaftHeartbeat:     time.Second,
		ReconcileInterval: 2 * time.Second,
		CapacityInterval:  30 * time.Second,
		ReplicaTimeout:    3 * time.Second,
		FailoverTimeout:   10 * time.Second,
		HealBandwidth:     64 << 20,
		WritebackWindow:   8 << 20,
		SpareFiles:        16384,
		MountLogLevel:     "info",
		MountProcs:        1,
		NameCache:         1 << 18,
		ReplicationLinger: 2 * time.Millisecond,
		ReplicationStream: "framed",
		LocalReads:        true,
		CSIKubeletDir:     "/var/lib/kubelet",
		DockerSocket:      "/run/docker/plugins/brick.sock",
		DockerTimeout:     docker.DefaultTimeout,
	}
}

// Validate names the first bad field, in the flag's words.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("--name is empty")
	}
	if len(c.Name) > 64 || strings.ContainsAny(c.Name, " /\t\n\x00") {
		return fmt.Errorf("--name %q: at most 64 characters, no spaces or slashes", c.Name)
	}
	ip := net.ParseIP(c.Bind)
	if ip == nil {
		return fmt.Errorf("--bind %q is not an IP address", c.Bind)
	}
	if ip.IsUnspecified() {
		return fmt.Errorf("--bind %s: give the address peers reach this daemon on, not a wildcard", c.Bind)
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is empty")
	}
	for _, p := range c.Peers {
		if _, _, err := SplitPeer(p, c.GossipPort); err != nil {
			return err
		}
	}
	if c.BootstrapExpect < 1 || c.BootstrapExpect > 7 {
		return fmt.Errorf("--bootstrap-expect %d: want 1 to 7", c.BootstrapExpect)
	}
	if c.MaxVoters < 1 || c.MaxVoters > 9 {
		return fmt.Errorf("--max-voters %d: want 1 to 9", c.MaxVoters)
	}
	for name, p := range map[string]int{"--grpc-port": c.GRPCPort, "--gossip-port": c.GossipPort, "--raft-port": c.RaftPort, "--health-port": c.HealthPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%s %d: want 1 to 65535", name, p)
		}
	}
	if c.HealBandwidth < 0 {
		return fmt.Errorf("--heal-bandwidth %d: must be positive, or 0 for unlimited", c.HealBandwidth)
	}
	if c.SpareFiles < 0 || c.SpareFiles > 1<<20 {
		return fmt.Errorf("--spare-files %d: want 0 (none) to 1048576", c.SpareFiles)
	}
	if c.WritebackWindow != 0 && (c.WritebackWindow < 1<<20 || c.WritebackWindow > 1<<30) {
		return fmt.Errorf("--writeback-window %d: want 0 (off) or 1M to 1G", c.WritebackWindow)
	}
	if c.DirectWriteMin != 0 && (c.DirectWriteMin < 4<<10 || c.DirectWriteMin > 1<<30 || c.DirectWriteMin%(4<<10) != 0) {
		return fmt.Errorf("--direct-write-min %d: want 0 (off) or a multiple of 4K from 4K to 1G", c.DirectWriteMin)
	}
	if c.GossipProfile != "lan" && c.GossipProfile != "local" {
		return fmt.Errorf("--gossip-profile %q: want lan or local", c.GossipProfile)
	}
	for name, d := range map[string]time.Duration{"--dead-voter-timeout": c.DeadVoterTimeout, "--raft-heartbeat": c.RaftHeartbeat,
		"--reconcile-interval": c.ReconcileInterval, "--capacity-interval": c.CapacityInterval, "--replica-timeout": c.ReplicaTimeout,
		"--failover-timeout": c.FailoverTimeout} {
		if d <= 0 {
			return fmt.Errorf("%s %v: must be positive", name, d)
		}
	}
	if c.ReplicationLinger < 0 || c.ReplicationLinger > 100*time.Millisecond {
		return fmt.Errorf("--replication-linger %v: want 0 (off) to 100ms", c.ReplicationLinger)
	}
	if c.ReplicationStream != "framed" && c.ReplicationStream != "grpc" {
		return fmt.Errorf("--replication-stream %q: want framed or grpc", c.ReplicationStream)
	}
	if c.NameCache < 0 || c.NameCache > 1<<26 {
		return fmt.Errorf("--name-cache %d: want 0 (off) to %d names", c.NameCache, 1<<26)
	}
	if c.MountProcs < 0 || c.MountProcs > 1024 {
		return fmt.Errorf("--mount-procs %d: want 0 (one per CPU) to 1024", c.MountProcs)
	}
	if c.MountCgroup != "" && (filepath.IsAbs(c.MountCgroup) || strings.Contains(c.MountCgroup, "..") || strings.ContainsAny(c.MountCgroup, " \t\n\x00")) {
		return fmt.Errorf("--mount-cgroup %q: want a relative cgroup name such as brick-mounts", c.MountCgroup)
	}
	if err := c.validateDocker(); err != nil {
		return err
	}
	if c.CSIEndpoint != "" {
		if _, err := csi.ParseEndpoint(c.CSIEndpoint); err != nil {
			return fmt.Errorf("--csi-endpoint: %w", err)
		}
		if !filepath.IsAbs(c.CSIKubeletDir) || filepath.Clean(c.CSIKubeletDir) == "/" {
			return fmt.Errorf("--csi-kubelet-dir %q: want an absolute directory other than /", c.CSIKubeletDir)
		}
	}
	return nil
}

// SplitPeer parses host[:port], defaulting the port.
func SplitPeer(p string, defPort int) (string, int, error) {
	if strings.TrimSpace(p) == "" {
		return "", 0, errors.New("--peers has an empty entry")
	}
	host, port := p, defPort
	if h, ps, err := net.SplitHostPort(p); err == nil {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("--peers %q: port %q is not a number from 1 to 65535", p, ps)
		}
		host, port = h, n
	} else if strings.Contains(p, ":") && net.ParseIP(p) == nil {
		return "", 0, fmt.Errorf("--peers %q: want host or host:port", p)
	}
	if host == "" {
		return "", 0, fmt.Errorf("--peers %q: host is empty", p)
	}
	return host, port, nil
}

func (c Config) addr(port int) string { return net.JoinHostPort(c.Bind, strconv.Itoa(port)) }

// replicaOptions are the options every replica this daemon opens gets.
func (c Config) replicaOptions(log *slog.Logger) replica.ReplicaOptions {
	w := c.WritebackWindow
	if w == 0 {
		w = -1 // the replica's 0 is its default
	}
	spares := c.SpareFiles
	if spares == 0 {
		spares = -1 // likewise
	}
	return replica.ReplicaOptions{Logger: log, WritebackWindow: w, DirectWriteMin: c.DirectWriteMin, SpareFiles: spares}
}
