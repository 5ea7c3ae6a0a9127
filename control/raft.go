package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// StreamLayer is the byte stream Raft runs on. The daemon passes one whose
// connections are already authenticated with the cluster key; tests may pass
// anything that satisfies it.
type StreamLayer = raft.StreamLayer

// NodeConfig configures a Raft node.
type NodeConfig struct {
	// ID is the brick ID; it is the Raft server ID, so it must be persistent.
	ID BrickID
	// Dir holds raft.db (log and stable store, bbolt) and snapshots/.
	Dir string
	// Stream carries Raft traffic. Exactly one of Stream and Transport is set.
	Stream StreamLayer
	// Transport replaces Stream in tests (raft.InmemTransport).
	Transport raft.Transport
	Logger    *slog.Logger

	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	LeaderLease      time.Duration
	// SnapshotThreshold is how many log entries trigger a snapshot.
	SnapshotThreshold uint64
}

// DefaultNodeConfig has LAN timeouts.
func DefaultNodeConfig() NodeConfig {
	return NodeConfig{
		HeartbeatTimeout:  1000 * time.Millisecond,
		ElectionTimeout:   1000 * time.Millisecond,
		LeaderLease:       500 * time.Millisecond,
		SnapshotThreshold: 8192,
	}
}

// Validate names the first bad field.
func (c NodeConfig) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("raft node: ID is empty")
	case c.Dir == "":
		return errors.New("raft node: Dir is empty")
	case (c.Stream == nil) == (c.Transport == nil):
		return errors.New("raft node: set exactly one of Stream and Transport")
	case c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLease <= 0:
		return errors.New("raft node: timeouts must be positive")
	case c.LeaderLease > c.HeartbeatTimeout:
		return errors.New("raft node: LeaderLease must not exceed HeartbeatTimeout")
	}
	return nil
}

// Node is this daemon's member of the Raft group: the FSM plus the Raft
// machinery that feeds it.
type Node struct {
	cfg   NodeConfig
	raft  *raft.Raft
	fsm   *FSM
	store *raftboltdb.BoltStore
	trans raft.Transport
}

// OpenNode opens (or creates) the node's Raft state in cfg.Dir and starts
// Raft. It does not bootstrap: see Bootstrap.
func OpenNode(cfg NodeConfig) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating raft directory %s: %w", cfg.Dir, err)
	}
	// A lock held by another process (a second brickd on this data dir)
	// must fail the start loudly, not block it forever.
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: 10 * time.Second, NoFreelistSync: true}})
	if err != nil {
		return nil, fmt.Errorf("opening raft log %s: %w", filepath.Join(cfg.Dir, "raft.db"), err)
	}
	hl := newHCLog(cfg.Logger.With("component", "raft"))
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 3, hl)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("opening raft snapshots in %s: %w", cfg.Dir, err)
	}
	trans := cfg.Transport
	if trans == nil {
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  cfg.Stream,
			MaxPool: 3,
			Timeout: 10 * time.Second,
			Logger:  hl,
		})
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLease
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.Logger = hl
	fsm := NewFSM()
	r, err := raft.NewRaft(rc, fsm, store, store, snaps, trans)
	if err != nil {
		store.Close()
		closeTransport(trans)
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	return &Node{cfg: cfg, raft: r, fsm: fsm, store: store, trans: trans}, nil
}

// HasState reports whether this node has ever been part of a cluster (it
// has a Raft log, snapshot or term). A node with state must never
// bootstrap again.
func (n *Node) HasState() (bool, error) {
	last, err := n.store.LastIndex()
	if err != nil {
		return false, fmt.Errorf("reading raft log: %w", err)
	}
	if last > 0 {
		return true, nil
	}
	return n.raft.LastIndex() > 0, nil
}

// Bootstrap makes servers the initial configuration. Every daemon that
// bootstraps must pass the same set.
func (n *Node) Bootstrap(servers []raft.Server) error {
	f := n.raft.BootstrapCluster(raft.Configuration{Servers: servers})
	if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrapping raft with %d servers: %w", len(servers), err)
	}
	return nil
}

// FSM is the node's state machine; read it through State and friends.
func (n *Node) FSM() *FSM { return n.fsm }

// Addr is this node's Raft address as peers see it.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// IsLeader reports whether this node leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Role is "leader", "voter", "nonvoter" or "none" for server id.
func (n *Node) Role(id BrickID) string {
	_, lid := n.raft.LeaderWithID()
	if lid == raft.ServerID(id) {
		return "leader"
	}
	cfg, err := n.Configuration()
	if err != nil {
		return "none"
	}
	for _, s := range cfg.Servers {
		if s.ID == raft.ServerID(id) {
			if s.Suffrage == raft.Voter {
				return "voter"
			}
			return "nonvoter"
		}
	}
	return "none"
}

// Leader returns the leader's ID, empty when there is none known.
func (n *Node) Leader() BrickID {
	_, id := n.raft.LeaderWithID()
	return BrickID(id)
}

// LeaderCh delivers leadership changes of this node (raft.LeaderCh).
func (n *Node) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// Configuration is the latest Raft membership.
func (n *Node) Configuration() (raft.Configuration, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, fmt.Errorf("reading raft configuration: %w", err)
	}
	return f.Configuration(), nil
}

// AddVoter adds or promotes a voter; leader only.
func (n *Node) AddVoter(id BrickID, addr string) error {
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error(); err != nil {
		return fmt.Errorf("adding raft voter %s at %s: %w", id, addr, mapRaftErr(err))
	}
	return nil
}

// AddNonvoter adds a non-voting member; leader only.
func (n *Node) AddNonvoter(id BrickID, addr string) error {
	if err := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error(); err != nil {
		return fmt.Errorf("adding raft non-voter %s at %s: %w", id, addr, mapRaftErr(err))
	}
	return nil
}

// RemoveServer removes a member; leader only.
func (n *Node) RemoveServer(id BrickID) error {
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		return fmt.Errorf("removing raft server %s: %w", id, mapRaftErr(err))
	}
	return nil
}

// Propose commits cmd through Raft and returns the FSM's result. It fails
// with ErrNotLeader on a follower (the caller forwards to the leader). A
// command the FSM refused is returned as an error wrapping the FSM's
// sentinel (ErrExists, ErrNotFound, ...).
func (n *Node) Propose(ctx context.Context, cmd Command) (*ApplyResult, error) {
	if cmd.At.IsZero() {
		cmd.At = time.Now().UTC()
	}
	data, err := EncodeCommand(cmd)
	if err != nil {
		return nil, fmt.Errorf("encoding %s command: %w", cmd.Type, err)
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("committing %s command: %w", cmd.Type, mapRaftErr(err))
	}
	res, ok := f.Response().(*ApplyResult)
	if !ok {
		return nil, fmt.Errorf("committing %s command: unexpected FSM response %T", cmd.Type, f.Response())
	}
	if res.Err != nil {
		return res, res.Err
	}
	return res, nil
}

// Barrier waits until every committed entry is applied to the local FSM, so
// a leader answers reads with everything it has acknowledged.
func (n *Node) Barrier(ctx context.Context) error {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		return fmt.Errorf("waiting for raft to apply: %w", mapRaftErr(err))
	}
	return nil
}

// Stats exposes raft's counters for the health endpoint.
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Shutdown stops Raft and closes the stores. A leader does not step down
// first: its followers elect a new leader after ElectionTimeout.
func (n *Node) Shutdown() error {
	err := n.raft.Shutdown().Error()
	closeTransport(n.trans)
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// mapRaftErr maps raft's leadership errors to ErrNotLeader so callers can
// branch with errors.Is.
func mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w (%v)", ErrNotLeader, err)
	}
	return err
}

// TCPStream adapts an authenticated listener plus a dialer to Raft's
// StreamLayer.
type TCPStream struct {
	net.Listener
	// DialFunc opens an authenticated connection.
	DialFunc func(ctx context.Context, addr string) (net.Conn, error)
	// Advertise is the address peers dial; defaults to the listener's.
	Advertise net.Addr
}

// Dial implements raft.StreamLayer.
func (s *TCPStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.DialFunc(ctx, string(addr))
}

// Addr implements net.Listener with the advertised address.
func (s *TCPStream) Addr() net.Addr {
	if s.Advertise != nil {
		return s.Advertise
	}
	return s.Listener.Addr()
}

func closeTransport(t raft.Transport) {
	if c, ok := t.(raft.WithClose); ok {
		c.Close()
	}
}
