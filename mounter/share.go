package mounter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/auth"
	"github.com/brickvol/brick/fuse"
	"github.com/brickvol/brick/locks"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica/head"
)

// A shared volume (access=shared) is mounted on many hosts. Every mount
// process serves the Share service; the catalog says which host is the
// head. The head's mount process runs the head (as a single-host mount
// does) and the lock table; the others send every file operation to it.
// When the head changes (its host detached, or died and another mounting
// host took the head over through the catalog), each mount process follows
// the catalog: the new head starts a head at the new epoch (fencing the
// bricks, so a deposed head can no longer write), the others switch to it,
// re-assert their locks, and retry what was in flight. The kernel's mount
// never changes, so applications see a stall, not an error.

// Tunables of the shared path that are not flags: how often the catalog is
// read, how many file IDs a host reserves at a time, how far past the
// highest file ID a new head starts (IDs the old head handed out in
// batches may be unused yet), and how long one forwarded call may take.
const (
	shareCatalogEvery = time.Second
	shareFIDBatch     = 256
	shareFIDGap       = 1 << 24
	shareCallTimeout  = 60 * time.Second
	shareMaxMsg       = 64 << 20
	// A head that vanishes without a word (power loss, a partition, a
	// frozen process) leaves calls to it hanging: pings every
	// shareKeepalive, unanswered for as long again, fail them.
	shareKeepalive = 2 * time.Second
)

// shareNode is one host's side of a shared volume: a fuse.Backend (with
// UsageReporter and Locker) that sends every call to the current head,
// local or remote, and the Share server other hosts call when this host
// is the head.
type shareNode struct {
	cfg      Config
	c        *conns
	volID    string
	name     string
	self     string // brick ID
	host     string // daemon name
	session  string
	addrs    map[string]string
	others   []string
	log      *slog.Logger
	lease    time.Duration // a session's locks live this long without a Hello
	stall    time.Duration // how long a call waits for a head before EIO
	endpoint string        // where this host's Share server listens

	kick chan struct{} // wakes the catalog loop early

	mirror *locks.Mirror // the locks this host holds, to re-assert after failover

	mu         sync.Mutex
	changed    chan struct{} // closed when the target changes
	gen        uint64        // bumped on every target change
	local      *headRun      // set while this host is the head
	table      *locks.Table  // the lock table, while this host is the head
	sessions   map[string]time.Time
	remote     brickpb.ShareClient // set while another host is the head
	remoteAddr string
	epoch      uint64    // the head's epoch of the current target
	lostSince  time.Time // first failed call to the remote head (zero: fine)
	helloed    uint64    // gen the last successful Hello was for
	fidNext    uint64
	fidEnd     uint64
	fidGen     uint64
	headSince  time.Time
	// unsynced is, per head epoch, the highest seq of an op that head
	// acknowledged to this host since this host's last successful Sync:
	// a head acknowledges writes before the bricks have them, so a Sync
	// answered by a later head must say whether they survived the change.
	unsynced map[uint64]uint64
}

// target is a snapshot of where calls go.
type target struct {
	gen    uint64
	local  *headRun
	table  *locks.Table
	remote brickpb.ShareClient
	addr   string
	epoch  uint64
}

func (t target) ok() bool { return t.local != nil || t.remote != nil }

// runShared mounts a shared volume: it serves Share, follows the catalog
// until it knows the head, mounts, and serves until unmounted.
func runShared(ctx context.Context, cfg Config, c *conns, ctl brickpb.ControlClient, vol *brickpb.Volume,
	peers []*brickpb.PeerInfo, addrs map[string]string, others []string, log *slog.Logger, readySent func()) error {
	n := &shareNode{cfg: cfg, c: c, volID: vol.Id, name: vol.Name, self: cfg.BrickID, addrs: addrs, others: others,
		log: log.With("access", "shared"), lease: cfg.FailoverTimeout, kick: make(chan struct{}, 1),
		mirror: locks.NewMirror(), changed: make(chan struct{})}
	if n.lease <= 0 {
		n.lease = 10 * time.Second
	}
	n.stall = 3*n.lease + 30*time.Second
	for _, p := range peers {
		if p.BrickId == cfg.BrickID {
			n.host = p.Name
		}
	}
	if n.host == "" {
		return fmt.Errorf("this host's brick %s is not among the cluster's peers", cfg.BrickID)
	}
	var rb [8]byte
	rand.Read(rb[:])
	n.session = n.host + "/" + hex.EncodeToString(rb[:])

	// The Share server listens on this host's address, next to brickd's.
	host, _, err := net.SplitHostPort(cfg.Daemon)
	if err != nil {
		return fmt.Errorf("brickd address %q: %w", cfg.Daemon, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return fmt.Errorf("listening for other hosts of %s on %s: %w", vol.Name, host, err)
	}
	n.endpoint = ln.Addr().String()
	key, err := auth.NewKey(cfg.Key)
	if err != nil {
		return err
	}
	al := key.Listen(ln, "share", n.log)
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(shareMaxMsg), grpc.MaxSendMsgSize(shareMaxMsg),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: shareKeepalive / 2, PermitWithoutStream: true}))
	brickpb.RegisterShareServer(srv, &shareServer{n: n})
	go srv.Serve(al)
	defer srv.Stop()

	lctx, stop := context.WithCancel(ctx)
	// The catalog loop stops first, so it cannot start a head after the
	// local one is stopped.
	defer func() { stop(); n.stopLocal() }()
	go n.loop(lctx)
	go n.helloLoop(lctx)
	go n.sweepLoop(lctx)

	// Mount once the head is known, so the first operations do not wait.
	wctx, wcancel := context.WithTimeout(ctx, n.stall)
	t, err := n.waitTarget(wctx)
	wcancel()
	if err != nil {
		return fmt.Errorf("finding the head of shared volume %s: %w", vol.Name, err)
	}
	n.log.Info("head known", "local", t.local != nil, "remote", t.addr, "epoch", t.epoch, "endpoint", n.endpoint)

	opts := fuse.DefaultOptions(vol.Name)
	opts.QuotaBytes = int64(vol.SizeBytes)
	opts.AllowOther = true
	// Other hosts change files behind this kernel's back: no writeback
	// cache, no data kept across opens, attributes always asked for
	// (close-to-open), names cached briefly.
	opts.NoWritebackCache = true
	opts.AppendAtBackendEOF = true
	opts.AttrTimeout = -1
	opts.Logger = n.log.With("component", "fuse")
	fs, err := fuse.Mount(cfg.Dir, n, opts)
	if err != nil {
		return fmt.Errorf("mounting %s at %s: %w", vol.Name, cfg.Dir, err)
	}
	n.log.Info("mounted")
	go followSize(lctx, ctl, c, vol.Name, int64(vol.SizeBytes), fs, n.log)
	if cfg.Ready != nil {
		io.WriteString(cfg.Ready, "ready\n")
		cfg.Ready.Close()
		readySent()
	}
	serve(fs, cfg.Dir, n.log)
	if t, _ := n.current(); t.local != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		if err := t.local.h.Sync(sctx); err != nil && !errors.Is(err, head.ErrClosed) {
			n.log.Warn("final sync", "err", err)
		}
	}
	return nil
}

// current returns where calls go now, and a channel closed when that
// changes.
func (n *shareNode) current() (target, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return target{gen: n.gen, local: n.local, table: n.table, remote: n.remote, addr: n.remoteAddr, epoch: n.epoch}, n.changed
}

// bump publishes a target change; n.mu is held.
func (n *shareNode) bump() {
	n.gen++
	close(n.changed)
	n.changed = make(chan struct{})
	n.lostSince = time.Time{}
}

func (n *shareNode) waitTarget(ctx context.Context) (target, error) {
	for {
		t, ch := n.current()
		if t.ok() {
			return t, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return t, fmt.Errorf("no head answered within %v (see this mount's log)", n.stall)
		}
	}
}

// lost records that the remote head of gen failed a call.
func (n *shareNode) lost(t target, err error) {
	n.mu.Lock()
	if t.gen == n.gen && t.remote != nil && n.lostSince.IsZero() {
		n.lostSince = time.Now()
		n.log.Warn("the head does not answer; waiting for it or for a new head", "head", t.addr, "epoch", t.epoch, "err", err)
	}
	if t.gen == n.gen && t.local != nil {
		n.log.Warn("this host's head stopped; asking the catalog", "epoch", t.epoch, "err", err)
	}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *shareNode) answered(t target) {
	if t.remote == nil {
		return
	}
	n.mu.Lock()
	if t.gen == n.gen && !n.lostSince.IsZero() {
		n.log.Info("the head answers again", "head", t.addr, "after", time.Since(n.lostSince).Round(time.Millisecond))
		n.lostSince = time.Time{}
	}
	n.mu.Unlock()
}

// headLost says whether err means the head that was called is no longer
// (or not yet) the head, so the call should go to whichever is next. A
// local head's errors are about bricks (a gRPC code there says nothing
// about the head) unless the head itself stopped; a remote head answers
// every failure of the op in-band (ShareError), so a gRPC error from it is
// about the head.
func headLost(t target, err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, head.ErrFenced) || errors.Is(err, head.ErrClosed) || errors.Is(err, head.ErrStaleEpoch) {
		return true
	}
	if t.remote == nil {
		return false
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.FailedPrecondition:
		return strings.HasPrefix(st.Message(), notHead)
	}
	return false
}

const notHead = "not the head"

// call runs fn against the current head, retrying on the next head when
// the one called is lost, for up to n.stall; then it fails with EIO.
func (n *shareNode) call(ctx context.Context, what string, fn func(ctx context.Context, t target) error) error {
	deadline := time.Now().Add(n.stall)
	var lastErr error
	for {
		t, changed := n.current()
		if t.ok() {
			cctx, cancel := ctx, context.CancelFunc(func() {})
			if t.remote != nil && what != "lock wait" {
				cctx, cancel = context.WithTimeout(ctx, shareCallTimeout)
			}
			err := fn(cctx, t)
			cancel()
			if ctx.Err() != nil && err != nil {
				return fmt.Errorf("%s on %s: %w: %w", what, n.name, err, syscall.EINTR)
			}
			if !headLost(t, err) {
				n.answered(t)
				return err
			}
			n.lost(t, err)
			lastErr = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s on %s: no head answered for %v (last error: %v): %w", what, n.name, n.stall, lastErr, syscall.EIO)
		}
		select {
		case <-changed:
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%s on %s: %w", what, n.name, syscall.EINTR)
		}
	}
}

func (n *shareNode) ref(t target) *brickpb.ShareRef {
	return &brickpb.ShareRef{Ref: &brickpb.VolumeRef{Header: n.c.header(), VolumeId: n.volID, Epoch: t.epoch}, Session: n.session}
}

// shareErr turns a ShareError into an error wrapping its errno.
func shareErr(t target, e *brickpb.ShareError) error {
	if e == nil {
		return nil
	}
	en := syscall.Errno(e.Errno)
	if en == 0 {
		en = syscall.EIO
	}
	return fmt.Errorf("head %s: %s: %w", t.addr, e.Message, en)
}

// fuse.Backend

func (n *shareNode) NewFID() uint64 {
	for {
		var fid uint64
		err := n.call(context.Background(), "reserve file IDs", func(ctx context.Context, t target) error {
			if t.local != nil {
				fid = t.local.h.NewFID()
				return nil
			}
			n.mu.Lock()
			if n.fidGen == t.gen && n.fidNext < n.fidEnd {
				fid = n.fidNext
				n.fidNext++
				n.mu.Unlock()
				return nil
			}
			n.mu.Unlock()
			r, err := t.remote.NewFIDs(ctx, &brickpb.NewFIDsRequest{Ref: n.ref(t), Count: shareFIDBatch})
			if err != nil {
				return err
			}
			n.mu.Lock()
			n.fidGen, n.fidNext, n.fidEnd = t.gen, r.First+1, r.First+uint64(r.Count)
			n.mu.Unlock()
			fid = r.First
			return nil
		})
		if err == nil {
			return fid
		}
		// NewFID cannot fail: the op that uses the ID will report the
		// trouble. Keep asking, as the file system's caller waits anyway.
		n.log.Warn("reserving file IDs", "err", err)
	}
}

func (n *shareNode) Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	var res *brickpb.OpResult
	var epoch uint64 // of the head that answered
	err := n.call(ctx, "op "+op.Type.String(), func(ctx context.Context, t target) error {
		epoch = t.epoch
		if t.local != nil {
			var err error
			res, err = t.local.be.Do(ctx, op)
			return err
		}
		r, err := t.remote.Do(ctx, &brickpb.ShareOpRequest{Ref: n.ref(t), Op: op})
		if err != nil {
			return err
		}
		res = r.Result
		return shareErr(t, r.Error)
	})
	if err == nil && res != nil {
		n.acknowledged(epoch, res.Seq)
	}
	return res, err
}

// acknowledged records an op acknowledged by the head at epoch.
func (n *shareNode) acknowledged(epoch, seq uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unsynced == nil {
		n.unsynced = map[uint64]uint64{}
	}
	n.unsynced[epoch] = max(n.unsynced[epoch], seq)
}

// settle is called when a Sync succeeded on a head at epoch, which took
// over at startSeq, for the acknowledgements in snap (taken when the Sync
// began). Ops of that epoch are durable now; ops of the epoch before it
// survived the takeover if they were in the history it took over (seq ≤
// startSeq); anything else may be lost, and the Sync must fail with EIO,
// as fsync does after a lost write-back. It forgets what it settled.
func (n *shareNode) settle(snap map[uint64]uint64, epoch, startSeq uint64) error {
	var lost []string
	for e, seq := range snap {
		switch {
		case e == epoch:
		case e+1 == epoch && seq <= startSeq:
		default:
			lost = append(lost, fmt.Sprintf("up to op %d of epoch %d", seq, e))
		}
	}
	n.mu.Lock()
	for e, seq := range snap {
		if n.unsynced[e] <= seq {
			delete(n.unsynced, e)
		}
	}
	n.mu.Unlock()
	if len(lost) > 0 {
		n.log.Error("writes acknowledged by a head that is gone may be lost: reporting EIO to fsync", "lost", strings.Join(lost, ", "), "epoch", epoch, "start_seq", startSeq)
		return fmt.Errorf("sync on %s: the head changed before writes it had acknowledged were durable (%s): %w", n.name, strings.Join(lost, ", "), syscall.EIO)
	}
	return nil
}

func (n *shareNode) Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	var res *brickpb.MetaResponse
	err := n.call(ctx, "meta "+req.Kind.String(), func(ctx context.Context, t target) error {
		if t.local != nil {
			var err error
			res, err = t.local.be.Meta(ctx, req)
			return err
		}
		r, err := t.remote.Meta(ctx, &brickpb.ShareMetaRequest{Ref: n.ref(t), Meta: req})
		if err != nil {
			return err
		}
		res = r.Meta
		return shareErr(t, r.Error)
	})
	return res, err
}

func (n *shareNode) Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error) {
	var data []byte
	err := n.call(ctx, "read", func(ctx context.Context, t target) error {
		if t.local != nil {
			var err error
			data, err = t.local.be.Read(ctx, fid, off, size)
			return err
		}
		r, err := t.remote.Read(ctx, &brickpb.ShareReadRequest{Ref: n.ref(t), Fid: fid, Offset: off, Size: uint32(size)})
		if err != nil {
			return err
		}
		if r.Errno != 0 {
			return syscall.Errno(r.Errno)
		}
		data = r.Data
		return shareErr(t, r.Error)
	})
	return data, err
}

func (n *shareNode) Sync(ctx context.Context) error {
	n.mu.Lock()
	snap := maps.Clone(n.unsynced)
	n.mu.Unlock()
	return n.call(ctx, "sync", func(ctx context.Context, t target) error {
		if t.local != nil {
			if err := t.local.be.Sync(ctx); err != nil {
				return err
			}
			return n.settle(snap, t.epoch, t.local.startSeq)
		}
		r, err := t.remote.Sync(ctx, &brickpb.ShareSyncRequest{Ref: n.ref(t)})
		if err != nil {
			return err
		}
		if err := shareErr(t, r.Error); err != nil {
			return err
		}
		return n.settle(snap, t.epoch, r.StartSeq)
	})
}

// UsedBytes implements fuse.UsageReporter.
func (n *shareNode) UsedBytes(ctx context.Context) (int64, error) {
	var used int64
	err := n.call(ctx, "usage", func(ctx context.Context, t target) error {
		if t.local != nil {
			var err error
			used, err = t.local.be.UsedBytes(ctx)
			return err
		}
		r, err := t.remote.Usage(ctx, &brickpb.ShareSyncRequest{Ref: n.ref(t)})
		if err != nil {
			return err
		}
		used = r.UsedBytes
		return shareErr(t, r.Error)
	})
	return used, err
}

// fuse.Locker: every host's locks live in the head's table.

func toLock(session string, owner uint64, lk fuse.LockSpec) locks.Lock {
	l := locks.Lock{Kind: locks.Posix, Owner: locks.Owner{Session: session, ID: owner}, Pid: lk.Pid, Start: lk.Start, End: lk.End}
	if lk.Flock {
		l.Kind = locks.Flock
	}
	switch lk.Type {
	case syscall.F_RDLCK:
		l.Type = locks.Read
	case syscall.F_WRLCK:
		l.Type = locks.Write
	case syscall.F_UNLCK:
		l.Type = locks.Unlock
	default:
		l.Type = 255 // Validate refuses it: EINVAL
	}
	return l
}

func toPB(fid uint64, l locks.Lock) *brickpb.FileLock {
	return &brickpb.FileLock{Flock: l.Kind == locks.Flock, Type: uint32(l.Type), Start: l.Start, End: l.End, Pid: l.Pid, Owner: l.Owner.ID, Fid: fid}
}

func fromPB(session string, p *brickpb.FileLock) (uint64, locks.Lock) {
	l := locks.Lock{Kind: locks.Posix, Type: locks.Type(p.Type), Owner: locks.Owner{Session: session, ID: p.Owner}, Pid: p.Pid, Start: p.Start, End: p.End}
	if p.Flock {
		l.Kind = locks.Flock
	}
	return p.Fid, l
}

func toSpec(l locks.Lock) fuse.LockSpec {
	s := fuse.LockSpec{Flock: l.Kind == locks.Flock, Start: l.Start, End: l.End, Pid: l.Pid}
	switch l.Type {
	case locks.Read:
		s.Type = syscall.F_RDLCK
	case locks.Write:
		s.Type = syscall.F_WRLCK
	default:
		s.Type = syscall.F_UNLCK
	}
	return s
}

func (n *shareNode) GetLock(ctx context.Context, fid, owner uint64, lk fuse.LockSpec) (fuse.LockSpec, bool, error) {
	l := toLock(n.session, owner, lk)
	var conflict locks.Lock
	var found bool
	err := n.call(ctx, "lock query", func(ctx context.Context, t target) error {
		if t.local != nil {
			var err error
			conflict, found, err = t.table.Get(fid, l)
			return err
		}
		r, err := t.remote.Lock(ctx, &brickpb.LockRequest{Ref: n.ref(t), Op: brickpb.LockOp_LOCK_GET, Lock: toPB(fid, l)})
		if err != nil {
			return err
		}
		if r.Errno != 0 {
			return syscall.Errno(r.Errno)
		}
		if r.Conflict != nil {
			_, conflict = fromPB("", r.Conflict)
			found = true
		}
		return nil
	})
	return toSpec(conflict), found, err
}

func (n *shareNode) SetLock(ctx context.Context, fid, owner uint64, lk fuse.LockSpec, wait bool) error {
	l := toLock(n.session, owner, lk)
	what, op := "lock", brickpb.LockOp_LOCK_SET
	if wait {
		what, op = "lock wait", brickpb.LockOp_LOCK_WAIT
	}
	err := n.call(ctx, what, func(ctx context.Context, t target) error {
		if t.local != nil {
			if wait {
				return t.table.Wait(ctx, fid, l)
			}
			return t.table.Set(fid, l)
		}
		r, err := t.remote.Lock(ctx, &brickpb.LockRequest{Ref: n.ref(t), Op: op, Lock: toPB(fid, l)})
		if err != nil {
			return err
		}
		if r.Errno != 0 {
			return syscall.Errno(r.Errno)
		}
		return nil
	})
	if err == nil {
		n.mirror.Apply(fid, l)
	}
	return err
}

func (n *shareNode) ReleaseLocks(ctx context.Context, fid, owner uint64, flock bool) error {
	o := locks.Owner{Session: n.session, ID: owner}
	kinds := []locks.Kind{locks.Posix}
	if flock {
		kinds = append(kinds, locks.Flock) // and OFD locks, whose owner is the open file
	}
	for _, k := range kinds {
		n.mirror.ReleaseOwner(fid, k, o)
	}
	return n.call(ctx, "lock release", func(ctx context.Context, t target) error {
		if t.local != nil {
			for _, k := range kinds {
				t.table.ReleaseOwner(fid, k, o)
			}
			return nil
		}
		_, err := t.remote.Lock(ctx, &brickpb.LockRequest{Ref: n.ref(t), Op: brickpb.LockOp_LOCK_RELEASE,
			Lock: &brickpb.FileLock{Flock: flock, Owner: owner, Fid: fid, Type: uint32(locks.Unlock), End: ^uint64(0)}})
		return err
	})
}

// The catalog loop: the catalog says who the head is; this host follows.

func (n *shareNode) loop(ctx context.Context) {
	t := time.NewTicker(shareCatalogEvery)
	defer t.Stop()
	for {
		n.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
	}
}

// daemons are the brickd addresses to ask, this host's first.
func (n *shareNode) daemons() []string { return append([]string{n.cfg.Daemon}, n.others...) }

// control runs fn against the first daemon that answers.
func (n *shareNode) control(ctx context.Context, fn func(ctx context.Context, c brickpb.ControlClient) error) error {
	var lastErr error
	for _, addr := range n.daemons() {
		cc, err := n.c.get(addr)
		if err != nil {
			lastErr = err
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = fn(cctx, brickpb.NewControlClient(cc))
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			return err
		}
	}
	return lastErr
}

func (n *shareNode) reconcile(ctx context.Context) {
	var vol *brickpb.Volume
	err := n.control(ctx, func(ctx context.Context, c brickpb.ControlClient) error {
		r, err := c.GetVolume(ctx, &brickpb.GetVolumeRequest{Header: n.c.header(), Name: n.name})
		if err == nil {
			vol = r.Volume
		}
		return err
	})
	if err != nil {
		n.log.Debug("reading the catalog", "err", err)
		return
	}
	if vol.Id != n.volID {
		n.log.Error("the volume was deleted and re-created under this mount; it fails every operation until unmounted", "id", vol.Id)
		n.stopLocal()
		return
	}
	me := slices.IndexFunc(vol.Attachments, func(a *brickpb.Attachment) bool { return a.BrickId == n.self })
	if me < 0 || vol.Attachments[me].Endpoint != n.endpoint {
		// Not attached (the catalog dropped this host, taken for dead), or
		// the endpoint is not published yet: (re)attach with it.
		if me < 0 {
			n.log.Warn("this host is no longer attached; attaching again", "epoch", vol.Epoch)
		}
		err := n.control(ctx, func(ctx context.Context, c brickpb.ControlClient) error {
			_, err := c.AttachVolume(ctx, &brickpb.AttachVolumeRequest{Header: n.c.header(), Name: n.name, Host: n.host, Endpoint: n.endpoint})
			return err
		})
		if err != nil {
			n.log.Warn("publishing this host's endpoint", "endpoint", n.endpoint, "err", err)
		}
		return // read the catalog again
	}
	switch {
	case vol.Head == n.self:
		n.mu.Lock()
		have := n.local != nil && n.epoch == vol.Epoch
		n.mu.Unlock()
		if !have {
			n.becomeHead(ctx, vol)
		}
	case vol.Head == "":
		n.takeHead(ctx, vol, "the volume has no head")
	default:
		h := slices.IndexFunc(vol.Attachments, func(a *brickpb.Attachment) bool { return a.BrickId == vol.Head })
		ep := ""
		if h >= 0 {
			ep = vol.Attachments[h].Endpoint
		}
		n.mu.Lock()
		lost := !n.lostSince.IsZero()
		switchTo := ep != "" && (n.remoteAddr != ep || n.epoch != vol.Epoch || n.remote == nil)
		n.mu.Unlock()
		switch {
		case switchTo:
			n.follow(vol, ep)
		case lost || ep == "":
			n.takeHead(ctx, vol, fmt.Sprintf("head %s does not answer", vol.HeadName))
		default:
			// A call may still be waiting on a head whose host gossip
			// already gave up on: ask, so the takeover does not wait for
			// the call to fail.
			if st := n.gossipState(ctx, vol.Head); st != "" && st != "alive" {
				n.takeHead(ctx, vol, fmt.Sprintf("head %s is %s in gossip", vol.HeadName, st))
			}
		}
	}
}

// gossipState is how gossip sees brick's host ("" when nobody answers).
func (n *shareNode) gossipState(ctx context.Context, brick string) string {
	var st string
	n.control(ctx, func(ctx context.Context, c brickpb.ControlClient) error {
		r, err := c.ListPeers(ctx, &brickpb.ListPeersRequest{Header: n.c.header()})
		if err != nil {
			return err
		}
		for _, p := range r.Peers {
			if p.BrickId == brick {
				st = p.GossipState
			}
		}
		return nil
	})
	return st
}

// becomeHead starts a head at vol.Epoch on this host.
func (n *shareNode) becomeHead(ctx context.Context, vol *brickpb.Volume) {
	n.stopLocal()
	n.log.Info("this host is the head; fencing the bricks", "epoch", vol.Epoch)
	hr, err := startHead(ctx, n.cfg, n.c, vol, n.addrs, n.others, n.log.With("epoch", vol.Epoch), shareFIDGap)
	if err != nil {
		n.log.Error("starting the head", "epoch", vol.Epoch, "err", err)
		return
	}
	table := locks.New()
	for _, h := range n.mirror.All() { // this host's own locks carry over
		if err := table.Set(h.Fid, h.Lock); err != nil {
			n.log.Warn("re-asserting a lock of this host", "fid", h.Fid, "lock", h.Lock.String(), "err", err)
		}
	}
	n.mu.Lock()
	n.local, n.table, n.remote, n.remoteAddr, n.epoch = hr, table, nil, "", vol.Epoch
	n.sessions = map[string]time.Time{}
	n.headSince = time.Now()
	n.bump()
	n.mu.Unlock()
	n.log.Info("serving as the head", "epoch", vol.Epoch, "endpoint", n.endpoint)
}

// stopLocal stops this host's head, if it runs one.
func (n *shareNode) stopLocal() {
	n.mu.Lock()
	hr := n.local
	if hr != nil {
		n.local, n.table, n.sessions = nil, nil, nil
		n.bump()
	}
	n.mu.Unlock()
	if hr != nil {
		hr.stop()
		n.log.Info("stopped this host's head", "epoch", hr.epoch)
	}
}

// follow sends calls to the head at ep from now on.
func (n *shareNode) follow(vol *brickpb.Volume, ep string) {
	n.stopLocal()
	cc, err := n.c.get(ep, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: shareKeepalive, Timeout: shareKeepalive, PermitWithoutStream: true}))
	if err != nil {
		n.log.Warn("connecting to the head", "head", vol.HeadName, "endpoint", ep, "err", err)
		return
	}
	n.mu.Lock()
	n.remote, n.remoteAddr, n.epoch = brickpb.NewShareClient(cc), ep, vol.Epoch
	n.bump()
	n.mu.Unlock()
	n.log.Info("following the head", "head", vol.HeadName, "endpoint", ep, "epoch", vol.Epoch)
	n.hello(context.Background())
}

// takeHead asks the catalog to make this host the head, conditioned on
// the epoch it saw; the daemon refuses while the head's host is not yet
// dead for the failover timeout.
func (n *shareNode) takeHead(ctx context.Context, vol *brickpb.Volume, why string) {
	err := n.control(ctx, func(ctx context.Context, c brickpb.ControlClient) error {
		_, err := c.AttachVolume(ctx, &brickpb.AttachVolumeRequest{Header: n.c.header(), Name: n.name, Host: n.host,
			TakeHead: true, ExpectEpoch: vol.Epoch, Endpoint: n.endpoint})
		return err
	})
	switch {
	case err == nil:
		n.log.Warn("took the head over", "from", vol.HeadName, "old_epoch", vol.Epoch, "why", why)
		select {
		case n.kick <- struct{}{}:
		default:
		}
	case status.Code(err) == codes.FailedPrecondition, status.Code(err) == codes.Aborted:
		n.log.Debug("not taking the head over yet", "why", why, "err", err)
	default:
		n.log.Warn("taking the head over", "err", err)
	}
}

// helloLoop keeps this host's session alive on a remote head and, on the
// first Hello to a new head, re-asserts this host's locks there.
func (n *shareNode) helloLoop(ctx context.Context) {
	every := n.lease / 3
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		n.hello(ctx)
	}
}

func (n *shareNode) hello(ctx context.Context) {
	t, _ := n.current()
	if t.remote == nil {
		return
	}
	n.mu.Lock()
	first := n.helloed != t.gen
	n.mu.Unlock()
	req := &brickpb.HelloRequest{Ref: n.ref(t), First: first}
	if first {
		for _, h := range n.mirror.All() {
			req.Reclaim = append(req.Reclaim, toPB(h.Fid, h.Lock))
		}
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := t.remote.Hello(hctx, req)
	if err != nil {
		n.log.Debug("hello to the head", "head", t.addr, "err", err)
		return
	}
	for _, l := range r.Refused {
		fid, lk := fromPB(n.session, l)
		n.log.Error("a lock this host held could not be re-asserted on the new head: another host took it meanwhile", "fid", fid, "lock", lk.String())
		n.mirror.ReleaseOwner(fid, lk.Kind, lk.Owner)
	}
	n.mu.Lock()
	if t.gen == n.gen {
		n.helloed = t.gen
	}
	n.mu.Unlock()
}

// sweepLoop, on the head, drops the locks of sessions that stopped saying
// Hello for the lease: a host that went away releases its locks.
func (n *shareNode) sweepLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.mu.Lock()
		table := n.table
		var gone []string
		for s, at := range n.sessions {
			if time.Since(at) > n.lease {
				gone = append(gone, s)
				delete(n.sessions, s)
			}
		}
		n.mu.Unlock()
		for _, s := range gone {
			if k := table.ReleaseSession(s); k > 0 {
				n.log.Warn("released the locks of a host that stopped answering", "session", s, "locks", k, "lease", n.lease)
			}
		}
	}
}

// seen renews a session on the head.
func (n *shareNode) seen(session string) {
	n.mu.Lock()
	if n.sessions != nil && session != n.session {
		n.sessions[session] = time.Now()
	}
	n.mu.Unlock()
}

// shareServer answers other hosts while this host is the head.
type shareServer struct {
	brickpb.UnimplementedShareServer
	n *shareNode
}

// serving returns the local head, or the "not the head" refusal.
func (s *shareServer) serving(r *brickpb.ShareRef) (target, error) {
	if r == nil || r.Ref == nil || r.Ref.VolumeId != s.n.volID {
		return target{}, status.Errorf(codes.InvalidArgument, "request for volume %v: this mount process serves %s (%s)", r.GetRef().GetVolumeId(), s.n.name, s.n.volID)
	}
	if r.Session == "" {
		return target{}, status.Error(codes.InvalidArgument, "request without a session")
	}
	t, _ := s.n.current()
	if t.local == nil {
		return t, status.Errorf(codes.FailedPrecondition, "%s: %s is not the head of %s", notHead, s.n.host, s.n.name)
	}
	if r.Ref.Epoch > t.epoch {
		return t, status.Errorf(codes.FailedPrecondition, "%s: %s heads %s at epoch %d, the caller knows epoch %d", notHead, s.n.host, s.n.name, t.epoch, r.Ref.Epoch)
	}
	s.n.seen(r.Session)
	return t, nil
}

// failure turns a local head's error into the answer: a lost head is "not
// the head" (the caller moves on), anything else a ShareError.
func (s *shareServer) failure(err error) (*brickpb.ShareError, error) {
	if headLost(target{}, err) {
		return nil, status.Errorf(codes.FailedPrecondition, "%s: %s's head stopped: %v", notHead, s.n.host, err)
	}
	var en syscall.Errno
	if !errors.As(err, &en) {
		en = syscall.EIO
	}
	return &brickpb.ShareError{Errno: uint32(en), Message: err.Error()}, nil
}

func (s *shareServer) Do(ctx context.Context, req *brickpb.ShareOpRequest) (*brickpb.ShareOpResponse, error) {
	t, err := s.serving(req.Ref)
	if err != nil {
		return nil, err
	}
	if req.Op == nil {
		return nil, status.Error(codes.InvalidArgument, "Do without an op")
	}
	res, err := t.local.be.Do(ctx, req.Op)
	if err != nil {
		e, gerr := s.failure(err)
		return &brickpb.ShareOpResponse{Error: e}, gerr
	}
	return &brickpb.ShareOpResponse{Result: res}, nil
}

func (s *shareServer) Meta(ctx context.Context, req *brickpb.ShareMetaRequest) (*brickpb.ShareMetaResponse, error) {
	t, err := s.serving(req.Ref)
	if err != nil {
		return nil, err
	}
	if req.Meta == nil {
		return nil, status.Error(codes.InvalidArgument, "Meta without a request")
	}
	res, err := t.local.be.Meta(ctx, req.Meta)
	if err != nil {
		e, gerr := s.failure(err)
		return &brickpb.ShareMetaResponse{Error: e}, gerr
	}
	return &brickpb.ShareMetaResponse{Meta: res}, nil
}

func (s *shareServer) Read(ctx context.Context, req *brickpb.ShareReadRequest) (*brickpb.ShareReadResponse, error) {
	t, err := s.serving(req.Ref)
	if err != nil {
		return nil, err
	}
	if req.Size > shareMaxMsg/2 || req.Offset < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "read of %d bytes at %d: out of range", req.Size, req.Offset)
	}
	data, err := t.local.be.Read(ctx, req.Fid, req.Offset, int(req.Size))
	if err != nil {
		var en syscall.Errno
		if errors.As(err, &en) && !headLost(target{}, err) && en != syscall.EIO && en != syscall.EROFS {
			return &brickpb.ShareReadResponse{Errno: uint32(en)}, nil
		}
		e, gerr := s.failure(err)
		return &brickpb.ShareReadResponse{Error: e}, gerr
	}
	return &brickpb.ShareReadResponse{Data: data}, nil
}

func (s *shareServer) Sync(ctx context.Context, req *brickpb.ShareSyncRequest) (*brickpb.ShareSyncResponse, error) {
	t, err := s.serving(req.Ref)
	if err != nil {
		return nil, err
	}
	if err := t.local.be.Sync(ctx); err != nil {
		e, gerr := s.failure(err)
		return &brickpb.ShareSyncResponse{Error: e}, gerr
	}
	return &brickpb.ShareSyncResponse{StartSeq: t.local.startSeq}, nil
}

func (s *shareServer) NewFIDs(ctx context.Context, req *brickpb.NewFIDsRequest) (*brickpb.NewFIDsResponse, error) {
	t, err := s.serving(req.Ref)
	if err != nil {
		return nil, err
	}
	if req.Count == 0 || req.Count > 1<<16 {
		return nil, status.Errorf(codes.InvalidArgument, "reserve %d file IDs: want 1..65536", req.Count)
	}
	// The head hands IDs out one at a time; a batch is consecutive as long
	// as nobody else draws meanwhile, so draw one and skip the rest.
	first := t.local.h.NewFIDs(uint64(req.Count))
	return &brickpb.NewFIDsResponse{First: first, Count: req.Count}, nil
}

func (s *shareServer) Usage(ctx context.Context, req *brickpb.ShareSyncRequest) (*brickpb.UsageResponse, error) {
	t, err := s.serving(req.Ref)
	if err != nil {
		return nil, err
	}
	used, err := t.local.be.UsedBytes(ctx)
	if err != nil {
		e, gerr := s.failure(err)
		return &brickpb.UsageResponse{Error: e}, gerr
	}
	return &brickpb.UsageResponse{UsedBytes: used}, nil
}

func (s *shareServer) Lock(ctx context.Context, req *brickpb.LockRequest) (*brickpb.LockResponse, error) {
	t, err := s.serving(req.Ref)
	if err != nil {
		return nil, err
	}
	if req.Lock == nil {
		return nil, status.Error(codes.InvalidArgument, "Lock without a lock")
	}
	fid, l := fromPB(req.Ref.Session, req.Lock)
	errnoOf := func(err error) uint32 {
		var en syscall.Errno
		if errors.As(err, &en) {
			return uint32(en)
		}
		return uint32(syscall.EIO)
	}
	switch req.Op {
	case brickpb.LockOp_LOCK_GET:
		c, ok, err := t.table.Get(fid, l)
		if err != nil {
			return &brickpb.LockResponse{Errno: errnoOf(err)}, nil
		}
		if ok {
			return &brickpb.LockResponse{Conflict: toPB(fid, c)}, nil
		}
		return &brickpb.LockResponse{}, nil
	case brickpb.LockOp_LOCK_SET:
		if err := t.table.Set(fid, l); err != nil {
			return &brickpb.LockResponse{Errno: errnoOf(err)}, nil
		}
	case brickpb.LockOp_LOCK_WAIT:
		if err := t.table.Wait(ctx, fid, l); err != nil {
			return &brickpb.LockResponse{Errno: errnoOf(err)}, nil
		}
	case brickpb.LockOp_LOCK_RELEASE:
		t.table.ReleaseOwner(fid, locks.Posix, l.Owner)
		if req.Lock.Flock {
			t.table.ReleaseOwner(fid, locks.Flock, l.Owner)
		}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown lock operation %v", req.Op)
	}
	return &brickpb.LockResponse{}, nil
}

func (s *shareServer) Hello(ctx context.Context, req *brickpb.HelloRequest) (*brickpb.HelloResponse, error) {
	t, err := s.serving(req.Ref)
	if err != nil {
		return nil, err
	}
	resp := &brickpb.HelloResponse{Epoch: t.epoch, LeaseMs: s.n.lease.Milliseconds()}
	if req.First {
		for _, p := range req.Reclaim {
			fid, l := fromPB(req.Ref.Session, p)
			if err := t.table.Set(fid, l); err != nil {
				resp.Refused = append(resp.Refused, p)
				s.n.log.Warn("a host's lock could not be re-asserted", "session", req.Ref.Session, "fid", fid, "lock", l.String(), "err", err)
			}
		}
	}
	return resp, nil
}
