package mounter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/brickvol/brick/fuse"
	"github.com/brickvol/brick/locks"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica/head"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newNode is a shareNode with no catalog, daemons or head: the tests set
// its target by hand.
func newNode(host string) *shareNode {
	return &shareNode{volID: "v-1", name: "web", self: "b-" + host, host: host, session: host + "/s",
		log: quiet(), lease: time.Second, stall: 2 * time.Second, kick: make(chan struct{}, 1),
		mirror: locks.NewMirror(), changed: make(chan struct{}), c: newConns(nil, "test")}
}

// asHead makes n the head at epoch with an empty lock table (no real head:
// only the lock and session paths may be used).
func asHead(n *shareNode, epoch uint64) {
	n.mu.Lock()
	n.local, n.table, n.epoch, n.sessions = &headRun{epoch: epoch}, locks.New(), epoch, map[string]time.Time{}
	n.bump()
	n.mu.Unlock()
}

// serve runs srv on an in-memory listener and returns a client for it.
func serveShare(t *testing.T, srv brickpb.ShareServer) brickpb.ShareClient {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	brickpb.RegisterShareServer(g, srv)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return brickpb.NewShareClient(cc)
}

func follow(n *shareNode, c brickpb.ShareClient, addr string, epoch uint64) {
	n.mu.Lock()
	n.remote, n.remoteAddr, n.epoch = c, addr, epoch
	n.bump()
	n.mu.Unlock()
}

func TestHeadLost(t *testing.T) {
	local, remote := target{local: &headRun{}}, target{remote: brickpb.NewShareClient(nil)}
	for _, c := range []struct {
		t    target
		err  error
		want bool
	}{
		{local, nil, false},
		{local, head.ErrFenced, true},
		{local, fmt.Errorf("op: %w", head.ErrClosed), true},
		{local, status.Error(codes.Unavailable, "brick b-2 down"), false}, // a brick, not the head
		{local, syscall.EROFS, false},
		{remote, status.Error(codes.Unavailable, "connection refused"), true},
		{remote, status.Error(codes.DeadlineExceeded, "slow"), true},
		{remote, status.Error(codes.FailedPrecondition, notHead+": n2 is not the head"), true},
		{remote, status.Error(codes.FailedPrecondition, "something else"), false},
		{remote, status.Error(codes.InvalidArgument, "bad"), false},
		{remote, fmt.Errorf("head: read-only: %w", syscall.EROFS), false},
	} {
		if got := headLost(c.t, c.err); got != c.want {
			t.Errorf("headLost(remote=%v, %v) = %v, want %v", c.t.remote != nil, c.err, got, c.want)
		}
	}
}

// A mount process that is not the head refuses with "not the head"; bad
// references are refused as invalid; a head refuses callers that know a
// newer epoch (it was deposed and does not know it yet).
func TestShareServerRefusals(t *testing.T) {
	n := newNode("n2")
	c := serveShare(t, &shareServer{n: n})
	ref := func(vol string, epoch uint64, session string) *brickpb.ShareRef {
		return &brickpb.ShareRef{Ref: &brickpb.VolumeRef{VolumeId: vol, Epoch: epoch}, Session: session}
	}
	ctx := context.Background()
	_, err := c.Sync(ctx, &brickpb.ShareSyncRequest{Ref: ref("v-1", 1, "n1/a")})
	if status.Code(err) != codes.FailedPrecondition || !strings.HasPrefix(status.Convert(err).Message(), notHead) {
		t.Fatalf("non-head: %v", err)
	}
	asHead(n, 4)
	for _, r := range []*brickpb.ShareRef{nil, ref("v-9", 4, "n1/a"), ref("v-1", 4, "")} {
		if _, err := c.Sync(ctx, &brickpb.ShareSyncRequest{Ref: r}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ref %v: %v, want InvalidArgument", r, err)
		}
	}
	if _, err := c.Sync(ctx, &brickpb.ShareSyncRequest{Ref: ref("v-1", 5, "n1/a")}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("caller at a newer epoch: %v", err)
	}
	if _, err := c.NewFIDs(ctx, &brickpb.NewFIDsRequest{Ref: ref("v-1", 4, "n1/a"), Count: 0}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("NewFIDs of 0: %v", err)
	}
	if _, err := c.Lock(ctx, &brickpb.LockRequest{Ref: ref("v-1", 4, "n1/a"), Op: brickpb.LockOp_LOCK_SET}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Lock without a lock: %v", err)
	}
	if _, err := c.Lock(ctx, &brickpb.LockRequest{Ref: ref("v-1", 4, "n1/a"), Op: 99, Lock: &brickpb.FileLock{}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown lock op: %v", err)
	}
	if r, err := c.Lock(ctx, &brickpb.LockRequest{Ref: ref("v-1", 4, "n1/a"), Op: brickpb.LockOp_LOCK_SET,
		Lock: &brickpb.FileLock{Fid: 7, Type: 1, Start: 9, End: 3}}); err != nil || syscall.Errno(r.Errno) != syscall.EINVAL {
		t.Errorf("lock with start > end: %v %v", r, err)
	}
}

// Locks from another host go through the head's table over gRPC and meet
// the head's own: conflicts, F_GETLK, release on close, and a host's locks
// dropped when its session lapses.
func TestShareLocksAcrossHosts(t *testing.T) {
	h := newNode("n1")
	asHead(h, 2)
	client := newNode("n2")
	follow(client, serveShare(t, &shareServer{n: h}), "n1:1", 2)
	ctx := context.Background()
	wr := fuse.LockSpec{Type: syscall.F_WRLCK, Start: 0, End: 99, Pid: 42}

	if err := client.SetLock(ctx, 7, 0xa, wr, false); err != nil {
		t.Fatalf("n2 locks: %v", err)
	}
	if err := h.SetLock(ctx, 7, 0xb, fuse.LockSpec{Type: syscall.F_RDLCK, Start: 50, End: 60}, false); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("the head's own conflicting lock: %v, want EAGAIN", err)
	}
	c, found, err := h.GetLock(ctx, 7, 0xb, fuse.LockSpec{Type: syscall.F_RDLCK, Start: 50, End: 60})
	if err != nil || !found || c.Type != syscall.F_WRLCK || c.Pid != 42 || c.End != 99 {
		t.Fatalf("GETLK on the head: %+v %v %v", c, found, err)
	}
	c, found, err = client.GetLock(ctx, 7, 0xc, fuse.LockSpec{Type: syscall.F_WRLCK, Start: 0, End: 0})
	if err != nil || !found || c.Pid != 42 {
		t.Fatalf("GETLK over gRPC: %+v %v %v", c, found, err)
	}
	if n := len(client.mirror.All()); n != 1 {
		t.Fatalf("n2 records %d locks, want 1", n)
	}

	// A blocking wait on the head is granted when n2 closes the file.
	got := make(chan error, 1)
	go func() { got <- h.SetLock(ctx, 7, 0xb, fuse.LockSpec{Type: syscall.F_WRLCK, Start: 0, End: 9}, true) }()
	select {
	case err := <-got:
		t.Fatalf("the wait returned before n2 released: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := client.ReleaseLocks(ctx, 7, 0xa, false); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the wait after n2's release: %v", err)
	}
	if n := len(client.mirror.All()); n != 0 {
		t.Fatalf("n2 still records %d locks after the release", n)
	}

	// flock from n2 while the head holds a POSIX lock: different kinds.
	if err := client.SetLock(ctx, 7, 0xd, fuse.LockSpec{Flock: true, Type: syscall.F_WRLCK, End: ^uint64(0)}, false); err != nil {
		t.Fatalf("flock beside a POSIX lock: %v", err)
	}
	// n2 vanishes: once its session lapses the sweep drops its flock.
	h.seen(client.session)
	h.mu.Lock()
	h.sessions[client.session] = time.Now().Add(-2 * h.lease)
	h.mu.Unlock()
	sctx, stop := context.WithCancel(ctx)
	go h.sweepLoop(sctx)
	defer stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := h.SetLock(ctx, 7, 0xe, fuse.LockSpec{Flock: true, Type: syscall.F_WRLCK, End: ^uint64(0)}, false)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the vanished host's flock was never released: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// After a head change a host re-asserts the locks it holds; one that
// another host took meanwhile is refused and dropped from its record.
func TestShareReclaimOnNewHead(t *testing.T) {
	old := newNode("n1")
	asHead(old, 2)
	client := newNode("n2")
	follow(client, serveShare(t, &shareServer{n: old}), "n1:1", 2)
	ctx := context.Background()
	for fid := uint64(1); fid <= 2; fid++ {
		if err := client.SetLock(ctx, fid, 0xa, fuse.LockSpec{Type: syscall.F_WRLCK, End: 9}, false); err != nil {
			t.Fatal(err)
		}
	}
	// n3 is the new head and, before n2 says hello, grants fid 2 to itself.
	nh := newNode("n3")
	asHead(nh, 3)
	if err := nh.SetLock(ctx, 2, 0xb, fuse.LockSpec{Type: syscall.F_WRLCK, End: 9}, false); err != nil {
		t.Fatal(err)
	}
	follow(client, serveShare(t, &shareServer{n: nh}), "n3:1", 3)
	client.hello(ctx)
	if _, ok, _ := nh.table.Get(1, locks.Lock{Kind: locks.Posix, Type: locks.Write, Owner: locks.Owner{Session: "x", ID: 1}, End: 9}); !ok {
		t.Fatal("n2's lock on fid 1 was not re-asserted on the new head")
	}
	if all := client.mirror.All(); len(all) != 1 || all[0].Fid != 1 {
		t.Fatalf("n2's record after the refused reclaim: %+v", all)
	}
	// A second hello is a renewal, not a reclaim.
	client.hello(ctx)
	if n := nh.table.Len(); n != 2 {
		t.Fatalf("%d locks on the new head, want 2", n)
	}
}

// fakeShare answers Sync: "not the head" while notHead is set, else OK.
type fakeShare struct {
	brickpb.UnimplementedShareServer
	refuse atomic.Bool
	calls  atomic.Int32
}

func (f *fakeShare) Sync(ctx context.Context, req *brickpb.ShareSyncRequest) (*brickpb.ShareSyncResponse, error) {
	f.calls.Add(1)
	if f.refuse.Load() {
		return nil, status.Error(codes.FailedPrecondition, notHead+": deposed")
	}
	return &brickpb.ShareSyncResponse{}, nil
}

// A call that finds its head deposed waits for the next head and is
// retried there; with no head at all it fails with EIO after the stall
// limit; a POSIX-level failure reported in-band is not retried.
func TestCallFollowsTheHead(t *testing.T) {
	n := newNode("n2")
	oldHead, newHead := &fakeShare{}, &fakeShare{}
	oldHead.refuse.Store(true)
	follow(n, serveShare(t, oldHead), "n1:1", 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		follow(n, serveShare(t, newHead), "n3:1", 2)
	}()
	if err := n.Sync(context.Background()); err != nil {
		t.Fatalf("sync across a head change: %v", err)
	}
	if oldHead.calls.Load() == 0 || newHead.calls.Load() != 1 {
		t.Fatalf("calls: old head %d, new head %d", oldHead.calls.Load(), newHead.calls.Load())
	}
	n.mu.Lock()
	lost := n.lostSince
	n.mu.Unlock()
	if !lost.IsZero() {
		t.Fatal("still marked lost after the new head answered")
	}

	newHead.refuse.Store(true)
	start := time.Now()
	err := n.Sync(context.Background())
	if !errors.Is(err, syscall.EIO) || time.Since(start) < n.stall {
		t.Fatalf("no head for the stall limit: %v after %v", err, time.Since(start))
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Sync(ctx); !errors.Is(err, syscall.EINTR) {
		t.Fatalf("cancelled while waiting for a head: %v", err)
	}
}

// Promise 1 across a head change: a Sync answered by a new head succeeds
// only for acknowledgements that head's history holds (its own epoch's, or
// the previous epoch's up to where it took over); anything else may be
// lost and the Sync says EIO, once.
func TestSyncAfterHeadChange(t *testing.T) {
	n := newNode("n2")
	snap := func() map[uint64]uint64 { n.mu.Lock(); defer n.mu.Unlock(); return maps.Clone(n.unsynced) }
	n.acknowledged(2, 10)
	n.acknowledged(2, 7)
	if err := n.settle(snap(), 3, 12); err != nil {
		t.Fatalf("ops up to 10 of epoch 2, new head took over at 12: %v", err)
	}
	n.acknowledged(3, 20)
	if err := n.settle(snap(), 3, 12); err != nil {
		t.Fatalf("ops of the syncing head's own epoch: %v", err)
	}
	n.acknowledged(3, 25)
	if err := n.settle(snap(), 4, 24); !errors.Is(err, syscall.EIO) {
		t.Fatalf("op 25 of epoch 3, new head took over at 24: %v, want EIO", err)
	}
	if err := n.settle(snap(), 4, 24); err != nil {
		t.Fatalf("the loss is reported once: %v", err)
	}
	n.acknowledged(4, 30)
	if err := n.settle(snap(), 6, 100); !errors.Is(err, syscall.EIO) {
		t.Fatalf("an epoch skipped in between: %v, want EIO", err)
	}
	// An acknowledgement that arrives while a Sync runs is not settled by it.
	s := snap()
	n.acknowledged(6, 101)
	if err := n.settle(s, 6, 100); err != nil {
		t.Fatal(err)
	}
	if got := snap()[6]; got != 101 {
		t.Fatalf("unsynced after a concurrent acknowledgement: %d, want 101", got)
	}
}
