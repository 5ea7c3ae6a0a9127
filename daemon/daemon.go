// Package daemon wires one brickd together: identity, the authenticated
// listeners, gossip membership, the Raft node, the gRPC services for the CLI
// and for peers, the leader's membership duties and the reconciler that
// keeps this brick's replicas in line with the catalog.
//
// daemon owns no policy of its own that belongs elsewhere: the catalog's
// rules are package control's, the option vocabulary package volspec's, the
// replica layout package replica's. It must never change the catalog except
// through Raft.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/brickvol/brick/auth"
	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/internal/atomicfile"
	"github.com/brickvol/brick/membership"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica"
	"github.com/brickvol/brick/replica/framed"
)

// Daemon is one running brickd.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	id      control.BrickID
	key     *auth.Key
	node    *control.Node
	members *membership.Membership
	store   *replica.Store
	// replicas are the open replicas this brick serves.
	replicas *replicas
	peers    *peerClients

	grpcSrv   *grpc.Server
	streamSrv *framed.Server // replication streams in their own framing (ALPN auth.ProtoReplicate)
	healthSrv *http.Server
	listeners []net.Listener

	// leaderSince is when this daemon last became leader (zero when not).
	mu          sync.Mutex
	leaderSince time.Time
	// mountMu serialises mount and unmount requests on this host.
	mountMu sync.Mutex
	// resyncing admits one full resync at a time on this brick.
	resyncing sync.Mutex
	// started is when this daemon started (attach's failover judgement of a
	// holder gossip has never shown it).
	started time.Time
	// secret is the cluster key, handed to mount processes (never logged).
	secret string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start brings the daemon up and returns once it is serving; joining and
// bootstrapping continue in the background.
func Start(cfg Config) (d *Daemon, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("daemon", cfg.Name)
	ctx, cancel := context.WithCancel(context.Background())
	d = &Daemon{cfg: cfg, log: log, ctx: ctx, cancel: cancel, started: time.Now()}
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory %s: %w", cfg.DataDir, err)
	}
	if d.id, err = loadOrCreateID(filepath.Join(cfg.DataDir, "brick-id")); err != nil {
		return nil, err
	}
	secret := cfg.ClusterKey
	if secret == "" {
		secret = auth.DevKey
		log.Warn("no cluster key set: cluster traffic is authenticated with the public development key; set BRICK_CLUSTER_KEY on every daemon")
	}
	d.secret = secret
	if d.key, err = auth.NewKey(secret); err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	if d.store, err = replica.Open(filepath.Join(cfg.DataDir, "bricks")); err != nil {
		return nil, err
	}
	d.peers = newPeerClients(d.key, d.id, d.clusterID)

	// Raft.
	rl, err := net.Listen("tcp", cfg.addr(cfg.RaftPort))
	if err != nil {
		return nil, fmt.Errorf("listening for raft on %s: %w", cfg.addr(cfg.RaftPort), err)
	}
	authRL := d.key.Listen(rl, "raft", log)
	d.listeners = append(d.listeners, authRL)
	nc := control.DefaultNodeConfig()
	nc.ID = d.id
	nc.Dir = filepath.Join(cfg.DataDir, "raft")
	nc.Stream = &control.TCPStream{Listener: authRL, DialFunc: d.key.Dial}
	nc.Logger = log
	nc.HeartbeatTimeout, nc.ElectionTimeout = cfg.RaftHeartbeat, cfg.RaftHeartbeat
	nc.LeaderLease = cfg.RaftHeartbeat / 2
	if d.node, err = control.OpenNode(nc); err != nil {
		return nil, err
	}

	// gRPC: TCP for peers and remote CLIs (authenticated), unix socket for
	// the local CLI (protected by file permissions).
	d.grpcSrv = grpc.NewServer(grpc.ChainUnaryInterceptor(d.unaryInterceptor),
		grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20),
		grpc.InitialWindowSize(auth.StreamWindow), grpc.InitialConnWindowSize(auth.ConnWindow))
	brickpb.RegisterControlServer(d.grpcSrv, &controlService{d: d})
	brickpb.RegisterPeerServer(d.grpcSrv, &peerService{d: d})
	d.replicas = &replicas{d: d, m: map[string]*replica.Replica{}}
	replicaSrv := replica.NewServer(d.replicas.lookup, log.With("component", "replica"))
	brickpb.RegisterReplicaServer(d.grpcSrv, &replicaService{Server: replicaSrv, d: d})
	d.streamSrv = framed.NewServer(func(st *framed.ServerStream) error { return replicaSrv.ServeReplicate(st) })
	gl, err := net.Listen("tcp", cfg.addr(cfg.GRPCPort))
	if err != nil {
		return nil, fmt.Errorf("listening for gRPC on %s: %w", cfg.addr(cfg.GRPCPort), err)
	}
	authGL := d.key.Listen(gl, "grpc", log)
	d.listeners = append(d.listeners, authGL)
	d.serve(func() error { return d.grpcSrv.Serve(authGL) })
	// Replication streams that asked for their own framing by ALPN.
	streamL, err := authGL.Route(auth.ProtoReplicate)
	if err != nil {
		return nil, err
	}
	d.serve(func() error { return d.streamSrv.Serve(streamL) })
	if cfg.Socket != "" {
		ul, err := listenUnix(cfg.Socket)
		if err != nil {
			return nil, err
		}
		d.listeners = append(d.listeners, ul)
		d.serve(func() error { return d.grpcSrv.Serve(ul) })
	}

	// Health.
	hl, err := net.Listen("tcp", cfg.addr(cfg.HealthPort))
	if err != nil {
		return nil, fmt.Errorf("listening for health checks on %s: %w", cfg.addr(cfg.HealthPort), err)
	}
	d.healthSrv = &http.Server{Handler: d.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
	d.serve(func() error { return d.healthSrv.Serve(hl) })

	// Gossip.
	mc := membership.DefaultConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.Bind
	mc.BindPort = cfg.GossipPort
	mc.Peers = append(append([]string(nil), cfg.Peers...), d.raftPeers()...)
	mc.SecretKey = d.key.GossipKey()
	mc.Logger = log.With("component", "gossip")
	mc.Profile = cfg.GossipProfile
	mc.Meta = d.meta()
	if d.members, err = membership.New(mc); err != nil {
		return nil, fmt.Errorf("starting gossip on %s: %w", cfg.addr(cfg.GossipPort), err)
	}

	d.cleanupStaleMounts()
	d.goLoop(d.reapMountsLoop)
	d.goLoop(d.bootstrapLoop)
	d.goLoop(d.leaderLoop)
	d.goLoop(d.reconcileLoop)
	d.goLoop(d.capacityLoop)
	if err := d.startCSI(); err != nil {
		return nil, err
	}
	d.startDockerPlugin()
	if ownPIDNamespace("/proc") {
		log.Warn("brickd runs in a PID namespace of its own (a container without the host's PID namespace): its mount processes die when it exits, so restarting this container breaks every mount it serves; run it with --pid=host (Kubernetes: hostPID: true) and --mount-cgroup")
	}
	log.Info("brickd started", "brick_id", d.id, "bind", cfg.Bind, "grpc", cfg.addr(cfg.GRPCPort),
		"gossip", cfg.addr(cfg.GossipPort), "raft", cfg.addr(cfg.RaftPort), "health", cfg.addr(cfg.HealthPort),
		"socket", cfg.Socket, "data_dir", cfg.DataDir, "peers", strings.Join(cfg.Peers, ","))
	return d, nil
}

// raftPeers are gossip addresses of the other members of this daemon's Raft
// configuration (their Raft host on our gossip port), so a restarted daemon
// finds its cluster again even if it was started without --peers.
func (d *Daemon) raftPeers() []string {
	cfg, err := d.node.Configuration()
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range cfg.Servers {
		host, _, err := net.SplitHostPort(string(s.Address))
		if err != nil || s.ID == raft.ServerID(d.id) {
			continue
		}
		out = append(out, net.JoinHostPort(host, strconv.Itoa(d.cfg.GossipPort)))
	}
	return out
}

// ID is this daemon's brick ID.
func (d *Daemon) ID() control.BrickID { return d.id }

func (d *Daemon) serve(f func() error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := f(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) &&
			!errors.Is(err, grpc.ErrServerStopped) {
			d.log.Error("listener stopped", "err", err)
		}
	}()
}

func (d *Daemon) goLoop(f func(context.Context)) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f(d.ctx)
	}()
}

// Leave announces a graceful departure to gossip (others see "left", not
// "dead"); call before Stop on SIGTERM.
func (d *Daemon) Leave() {
	if d.members != nil {
		if err := d.members.Leave(3 * time.Second); err != nil {
			d.log.Warn("gossip leave", "err", err)
		}
	}
}

// Stop shuts everything down. Safe to call on a half-started daemon.
func (d *Daemon) Stop() {
	d.cancel()
	if d.streamSrv != nil {
		d.streamSrv.Close()
	}
	if d.grpcSrv != nil {
		stopped := make(chan struct{})
		go func() { d.grpcSrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			d.grpcSrv.Stop()
		}
	}
	if d.healthSrv != nil {
		d.healthSrv.Close()
	}
	for _, l := range d.listeners {
		l.Close()
	}
	if d.members != nil {
		d.members.Shutdown()
	}
	if d.node != nil {
		if err := d.node.Shutdown(); err != nil {
			d.log.Warn("raft shutdown", "err", err)
		}
	}
	if d.peers != nil {
		d.peers.closeAll()
	}
	if d.replicas != nil {
		d.replicas.closeAll()
	}
	d.wg.Wait()
	if d.cfg.Socket != "" {
		os.Remove(d.cfg.Socket)
	}
}

// clusterID is the cluster's ID as far as this daemon knows it.
func (d *Daemon) clusterID() string {
	if d.node == nil {
		return ""
	}
	return d.node.FSM().ClusterID()
}

// loadOrCreateID reads the brick's persistent random ID, creating it
// crash-safely on first start.
func loadOrCreateID(path string) (control.BrickID, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if !strings.HasPrefix(id, "b-") || len(id) != 18 {
			return "", fmt.Errorf("brick ID file %s is corrupt (%q); move it away to start as a new brick", path, id)
		}
		return control.BrickID(id), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading brick ID %s: %w", path, err)
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generating brick ID: %w", err)
	}
	id := "b-" + hex.EncodeToString(raw[:])
	if err := atomicfile.Write(path, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("writing brick ID %s: %w", path, err)
	}
	return control.BrickID(id), nil
}

func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory for %s: %w", path, err)
	}
	// A socket left by a daemon that died is stale; one that answers is not.
	if c, err := net.DialTimeout("unix", path, 500*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s is in use by another running brickd (use --socket)", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("restricting %s: %w", path, err)
	}
	return l, nil
}
