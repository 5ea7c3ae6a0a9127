package mounter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/brickvol/brick/auth"
	"github.com/brickvol/brick/fuse"
	"github.com/brickvol/brick/namecache"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica"
	"github.com/brickvol/brick/replica/head"
)

// Config is what brickd hands a mount process.
type Config struct {
	Volume  string
	Dir     string
	Epoch   uint64 // the epoch brickd attached at
	Daemon  string // gRPC address of this host's brickd
	BrickID string // this host's brick ID
	Key     string // cluster key
	// ReplicaTimeout: see head.Config.
	ReplicaTimeout time.Duration
	// StatusFile, when set, is kept up to date with the head's status
	// (StatusFile) for brickd.
	StatusFile string
	// HealBandwidth throttles each heal in bytes/s (0 unlimited, <0 the
	// head's default).
	HealBandwidth int64
	// FailoverTimeout (shared volumes): how long the head's host must be
	// dead in gossip before another mounting host takes the head over; the
	// lease of a host's locks on the head.
	FailoverTimeout time.Duration
	// NameCache is how many names the head's name cache holds (package
	// namecache); 0 turns it off. It answers lookups only while every
	// in-sync brick acknowledged an op of this head within the lease
	// (nameCacheLease: a tenth of FailoverTimeout, at most 1 s).
	NameCache int
	// Linger is how long the head may hold back ops nobody waits for yet
	// to batch them (head.Config.Linger); 0 sends every op at once.
	Linger time.Duration
	// GRPCStreams carries the replication streams as gRPC streams instead
	// of package framed's connections (which a brick of an older version
	// does not serve: the head then falls back to gRPC by itself).
	GRPCStreams bool
	// ReplicaDir, when set, is this host's replica of the volume, read
	// directly when it is the primary and has applied what a read must
	// see (backend.readLocal); empty reads through the brick always.
	ReplicaDir string
	Logger     *slog.Logger
	// Ready receives "ready\n" once the file system is mounted, or the
	// error that stopped the mount; then it is closed.
	Ready io.WriteCloser
}

// Run mounts the volume and serves it until SIGTERM/SIGINT or an external
// unmount; it returns after unmounting.
func Run(ctx context.Context, cfg Config) (err error) {
	log := cfg.Logger.With("volume", cfg.Volume, "dir", cfg.Dir, "epoch", cfg.Epoch)
	readySent := false
	defer func() {
		if !readySent && cfg.Ready != nil {
			fmt.Fprintf(cfg.Ready, "%v\n", err)
			cfg.Ready.Close()
		}
	}()
	key, err := auth.NewKey(cfg.Key)
	if err != nil {
		return fmt.Errorf("cluster key: %w", err)
	}
	c := newConns(key, "mount:"+cfg.BrickID)
	defer c.closeAll()
	dc, err := c.get(cfg.Daemon)
	if err != nil {
		return err
	}
	ctl := brickpb.NewControlClient(dc)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	vr, err := ctl.GetVolume(cctx, &brickpb.GetVolumeRequest{Header: c.header(), Name: cfg.Volume})
	if err != nil {
		return fmt.Errorf("reading volume %s from brickd at %s: %w", cfg.Volume, cfg.Daemon, err)
	}
	vol := vr.Volume
	if vol.Access != "shared" && (vol.Epoch != cfg.Epoch || vol.Head != cfg.BrickID) {
		return fmt.Errorf("volume %s moved on before it could be mounted: epoch %d, head %s (this mount was for epoch %d)",
			vol.Name, vol.Epoch, vol.HeadName, cfg.Epoch)
	}
	pr, err := ctl.ListPeers(cctx, &brickpb.ListPeersRequest{Header: c.header()})
	if err != nil {
		return fmt.Errorf("listing peers: %w", err)
	}
	addrs := map[string]string{}
	var others []string
	for _, p := range pr.Peers {
		addrs[p.BrickId] = p.Address
		if p.Address != "" && p.Address != cfg.Daemon {
			others = append(others, p.Address)
		}
	}

	if vol.Access == "shared" {
		return runShared(ctx, cfg, c, ctl, vol, pr.Peers, addrs, others, log, func() {
			readySent = true
		})
	}
	hr, err := startHead(ctx, cfg, c, vol, addrs, others, log, 0)
	if err != nil {
		return err
	}
	defer hr.stop()
	h, be := hr.h, hr.be
	rctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	opts := fuse.DefaultOptions(vol.Name)
	opts.QuotaBytes = int64(vol.SizeBytes)
	opts.AllowOther = true
	opts.Logger = log.With("component", "fuse")
	srv, err := fuse.Mount(cfg.Dir, be, opts)
	if err != nil {
		return fmt.Errorf("mounting %s at %s: %w", vol.Name, cfg.Dir, err)
	}
	log.Info("mounted")
	go followSize(rctx, ctl, c, vol.Name, int64(vol.SizeBytes), srv, log)
	if cfg.Ready != nil {
		io.WriteString(cfg.Ready, "ready\n")
		cfg.Ready.Close()
		readySent = true
	}

	serve(srv, cfg.Dir, log)
	// Whatever the kernel flushed is now submitted; make it durable before
	// the head goes away.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := h.Sync(sctx); err != nil && !errors.Is(err, head.ErrClosed) {
		log.Warn("final sync", "err", err)
	}
	return nil
}

// serve waits for SIGTERM/SIGINT, then unmounts, or for an unmount from
// outside.
func serve(srv *fuse.Server, dir string, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	select {
	case s := <-sig:
		log.Info("unmounting", "signal", s.String())
		if err := srv.Unmount(); err != nil {
			log.Warn("unmount failed; detaching lazily", "err", err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		<-served
	case <-served:
		log.Info("unmounted from outside")
	}
}

// headRun is a running head and what runs beside it: the resyncer and the
// status file writer.
type headRun struct {
	h        *head.Head
	be       *backend
	epoch    uint64
	startSeq uint64 // the seq this head took over at (Takeover.StartSeq)
	stop     func() // stops the helpers and closes the head
}

// startHead fences every in-sync brick of vol at vol.Epoch, brings them
// level from the longest log, and starts the head. fidGap is added to the
// highest file ID found, so IDs a previous head may have handed out but
// not used yet are never issued again (shared volumes: other hosts reserve
// IDs in batches).
func startHead(ctx context.Context, cfg Config, c *conns, vol *brickpb.Volume, addrs map[string]string, others []string, log *slog.Logger, fidGap uint64) (*headRun, error) {
	// Fence every in-sync brick at our epoch and bring them level from the
	// longest log before the first op; drop the ones that cannot be.
	tr := &transport{c: c, volID: vol.Id, addrs: addrs, grpcStreams: cfg.GRPCStreams, log: log}
	to, err := head.Takeover(ctx, tr, vol.Epoch, vol.Isr, log)
	if err != nil {
		return nil, fmt.Errorf("taking %s over at epoch %d: %w", vol.Name, vol.Epoch, err)
	}
	isr := to.Level
	maxFID := max(to.MaxFID, fuse.RootFID) + fidGap // the root exists in every replica
	if len(to.Failed) > 0 {
		log.Warn("dropping unreachable or lagging bricks from the in-sync set before the first write", "isr", isr,
			"failed", fmt.Sprint(to.Failed))
		k := &control{c: c, daemon: cfg.Daemon, others: others, volID: vol.Id}
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := k.SetISR(sctx, vol.Epoch, isr); err != nil {
			return nil, fmt.Errorf("shrinking the in-sync set of %s: %w", vol.Name, err)
		}
	}
	log.Info("fenced", "isr", isr, "start_seq", to.StartSeq, "max_fid", maxFID, "source", to.Source, "adopted", to.Adopted)
	if vol.Epoch > 1 {
		// A previous head's name cache may answer for up to its lease
		// after the bricks fenced above last acknowledged it; every op of
		// ours comes after that (namecache, head.HeldWithin). No host's
		// lease is longer than maxNameCacheLease.
		log.Info("waiting out a previous head's name-cache lease", "lease", maxNameCacheLease)
		select {
		case <-time.After(maxNameCacheLease):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	hc := head.DefaultConfig()
	hc.Volume, hc.Epoch = vol.Name, vol.Epoch
	hc.StartSeq, hc.MaxFID = to.StartSeq, maxFID
	for _, p := range vol.Placement {
		hc.Placement = append(hc.Placement, p.BrickId)
	}
	hc.ISR, hc.MinISR = isr, int(vol.MinIsr)
	if slices.Contains(hc.Placement, cfg.BrickID) {
		hc.Primary = cfg.BrickID // read from the local replica when there is one
	}
	if cfg.ReplicaTimeout > 0 {
		hc.ReplicaTimeout = cfg.ReplicaTimeout
	}
	if cfg.HealBandwidth >= 0 {
		hc.HealBytesPerSec = cfg.HealBandwidth
	}
	hc.Linger = cfg.Linger
	hc.Logger = log.With("component", "head")
	h, err := head.Start(ctx, hc, tr,
		&control{c: c, daemon: cfg.Daemon, others: others, volID: vol.Id}, head.SystemClock(), hc.Logger)
	if err != nil {
		return nil, fmt.Errorf("starting the head of %s: %w", vol.Name, err)
	}
	rs := &resyncer{h: h, c: c, volID: vol.Id, addrs: addrs, log: log.With("component", "resync"), rate: hc.HealBytesPerSec}
	rctx, stopResync := context.WithCancel(ctx)
	go rs.run(rctx)

	be := &backend{h: h, c: c, volID: vol.Id, addrs: addrs, log: log,
		names: namecache.New(cfg.NameCache), lease: nameCacheLease(cfg.FailoverTimeout),
		early: vol.Access != "shared", now: time.Now}
	if cfg.ReplicaDir != "" && hc.Primary == cfg.BrickID {
		be.tree, be.brickID = replica.NewTreeReader(cfg.ReplicaDir, maxLocalReadFiles), cfg.BrickID
	}
	if cfg.StatusFile != "" {
		go writeStatus(rctx, cfg.StatusFile, h, be, &rs.active)
	}
	stop := func() {
		stopResync()
		h.Close()
		c := be.counters()
		_, _, names := be.names.Stats()
		log.Info("served", "lookups_answered", c.LookupsAnswered, "lookups_passed_on", c.LookupsPassedOn,
			"names", names, "ops_answered_early", c.OpsAnsweredEarly,
			"reads_local", c.ReadsLocal, "reads_passed_on", c.ReadsPassedOn)
		if be.tree != nil {
			be.tree.Close()
		}
	}
	go be.primeRoot(rctx)
	return &headRun{h: h, be: be, epoch: vol.Epoch, startSeq: to.StartSeq, stop: stop}, nil
}

// maxLocalReadFiles bounds the files a mount process keeps open in its
// host's replica for local reads (replica.TreeReader).
const maxLocalReadFiles = 256

// nameCacheLease is how long after every in-sync brick last acknowledged
// an op of this head the name cache may answer (head.HeldWithin): a tenth
// of the failover timeout, at most maxNameCacheLease. A successor fences
// one of those bricks at least, and waits maxNameCacheLease after fencing
// before its first op (startHead), so this head has stopped answering
// from its cache before any name of the successor's can exist.
func nameCacheLease(failover time.Duration) time.Duration {
	if failover <= 0 {
		failover = 10 * time.Second
	}
	return min(failover/10, maxNameCacheLease)
}

// maxNameCacheLease bounds every host's name-cache lease.
const maxNameCacheLease = time.Second
