package head

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// fakeControl is Raft as the head sees it: it records proposals and fails
// them while told to.
type fakeControl struct {
	mu    sync.Mutex
	fail  error
	index uint64
	calls chan []string
}

func newFakeControl() *fakeControl { return &fakeControl{calls: make(chan []string, 100)} }

func (c *fakeControl) SetISR(_ context.Context, epoch uint64, isr []string) (uint64, error) {
	c.mu.Lock()
	err := c.fail
	c.index++
	idx := c.index
	c.mu.Unlock()
	c.calls <- slices.Clone(isr)
	if err != nil {
		return 0, err
	}
	return idx, nil
}

func (c *fakeControl) setFail(err error) { c.mu.Lock(); c.fail = err; c.mu.Unlock() }

// next returns the next proposal (bounded wait: a missing one is a failure).
func (c *fakeControl) next(t *testing.T) []string {
	t.Helper()
	select {
	case isr := <-c.calls:
		return isr
	case <-time.After(10 * time.Second):
		t.Fatal("no SetISR call")
		return nil
	}
}

func (c *fakeControl) none(t *testing.T) {
	t.Helper()
	select {
	case isr := <-c.calls:
		t.Fatalf("unexpected SetISR(%v)", isr)
	default:
	}
}

type rig struct {
	t   *testing.T
	h   *Head
	net *MemNet
	clk *ManualClock
	ctl *fakeControl
	cfg Config
}

func newRig(t *testing.T, mut func(*Config)) *rig {
	t.Helper()
	return newRigNet(t, mut, nil)
}

// newRigNet is newRig with pre run on the bricks before the head starts.
func newRigNet(t *testing.T, mut func(*Config), pre func(*MemNet)) *rig {
	t.Helper()
	ids := []string{"a", "b", "c"}
	r := &rig{t: t, net: NewMemNet(ids...), clk: NewManualClock(time.Unix(1_000_000, 0)), ctl: newFakeControl()}
	r.cfg = LocalConfig()
	r.cfg.Volume, r.cfg.Epoch, r.cfg.Placement, r.cfg.ISR, r.cfg.MinISR, r.cfg.Primary = "v", 1, ids, ids, 1, "a"
	if mut != nil {
		mut(&r.cfg)
	}
	if pre != nil {
		pre(r.net)
	}
	h, err := Start(context.Background(), r.cfg, r.net, r.ctl, r.clk, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r.h = h
	t.Cleanup(func() { h.Close() })
	r.wait("every ISR stream up", func(s Status) bool {
		for _, b := range s.Bricks {
			if b.Stream != "up" {
				return false
			}
		}
		return true
	})
	return r
}

func (r *rig) wait(what string, cond func(Status) bool) Status {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.h.WaitFor(ctx, cond)
	if err != nil {
		r.t.Fatalf("waiting for %s: %v\nstatus: %+v", what, err, s)
	}
	return s
}

// waitAcked waits until the head saw the listed bricks apply (and, with
// synced, sync) up to seq.
func (r *rig) waitAcked(seq uint64, synced bool, ids ...string) {
	r.t.Helper()
	r.wait(fmt.Sprintf("%v acked seq %d (synced=%v)", ids, seq, synced), func(s Status) bool {
		for _, b := range s.Bricks {
			if slices.Contains(ids, b.ID) && (b.Applied < seq || synced && b.Synced < seq) {
				return false
			}
		}
		return true
	})
}

func (r *rig) waitBrick(id string, seq uint64) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.net.Brick(id).WaitApplied(ctx, seq); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) do(op *brickpb.Op) *brickpb.OpResult {
	r.t.Helper()
	res, err := r.h.Do(context.Background(), op)
	if err != nil {
		r.t.Fatalf("do %v: %v", op.Type, err)
	}
	return res
}

// async runs f in a goroutine; the returned channel yields its error.
func async(f func() error) chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func notDone(t *testing.T, ch chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s completed too early: %v", what, err)
	default:
	}
}

func result(t *testing.T, ch chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not complete", what)
		return nil
	}
}

func checkGapless(t *testing.T, net *MemNet, last uint64, ids ...string) {
	t.Helper()
	for _, id := range ids {
		b := net.Brick(id)
		if f := b.Faults(); len(f) > 0 {
			t.Errorf("brick %s saw protocol faults: %v", id, f)
		}
		ops := b.Ops()
		for i, op := range ops {
			if op.Seq != uint64(i+1) {
				t.Fatalf("brick %s: op %d has seq %d (received %d ops)", id, i, op.Seq, len(ops))
			}
		}
		if uint64(len(ops)) != last {
			t.Errorf("brick %s applied %d ops, want %d", id, len(ops), last)
		}
	}
}

func TestOrderingAndPipelining(t *testing.T) {
	r := newRig(t, nil)
	for _, id := range []string{"a", "b", "c"} {
		r.net.Brick(id).Hold(true)
	}
	for i := uint64(1); i <= 50; i++ {
		if res := r.do(write(100)); res.Seq != i {
			t.Fatalf("write %d got seq %d", i, res.Seq)
		}
	}
	if r.h.AfterSeq() != 50 {
		t.Fatalf("AfterSeq %d, want 50", r.h.AfterSeq())
	}
	for _, id := range []string{"a", "b", "c"} {
		r.waitBrick(id, 50) // every op delivered while no ack reached the head
	}
	if s := r.h.Status(); s.TrimSeq != 0 || s.Bricks[0].Applied != 0 {
		t.Fatalf("the head saw acks it should not have: %+v", s)
	}
	for _, id := range []string{"a", "b", "c"} {
		r.net.Brick(id).Hold(false)
	}
	r.waitAcked(50, false, "a", "b", "c")
	checkGapless(t, r.net, 50, "a", "b", "c")
	for _, op := range r.net.Brick("b").Ops() {
		if op.Epoch != 1 {
			t.Fatalf("op %d at epoch %d", op.Seq, op.Epoch)
		}
	}
}

func TestWriteReturnsBeforeAcksMetadataWaitsForPrimary(t *testing.T) {
	r := newRig(t, nil)
	r.net.Brick("a").SetApply(func(op *brickpb.Op) *brickpb.OpResult {
		return &brickpb.OpResult{Attr: &brickpb.Attr{Fid: 100 + op.Seq}}
	})
	r.net.Brick("b").SetApply(func(op *brickpb.Op) *brickpb.OpResult {
		return &brickpb.OpResult{Attr: &brickpb.Attr{Fid: 200 + op.Seq}}
	})
	r.net.Brick("a").Hold(true)
	r.net.Brick("b").Hold(true)
	r.net.Brick("c").Hold(true)
	if res := r.do(write(10)); res.Seq != 1 {
		t.Fatalf("write: %+v", res)
	}
	var got *brickpb.OpResult
	done := async(func() (err error) { got, err = r.h.Do(context.Background(), mkdir("d")); return err })
	r.net.Brick("b").Hold(false) // a non-primary answers first: out of order
	r.net.Brick("c").Hold(false)
	r.waitAcked(2, false, "b", "c")
	notDone(t, done, "mkdir before the primary answered")
	r.net.Brick("a").Hold(false)
	if err := result(t, done, "mkdir"); err != nil {
		t.Fatal(err)
	}
	if got.Seq != 2 || got.Attr.GetFid() != 102 {
		t.Fatalf("want the primary's result (fid 102), got %+v", got)
	}
}

func TestSyncWaitsForEveryISRBrick(t *testing.T) {
	r := newRig(t, nil)
	r.do(write(10))
	r.net.Brick("a").Hold(true) // the slow one is the primary; b and c ack first
	done := async(func() error { return r.h.Sync(context.Background()) })
	r.waitAcked(2, true, "b", "c")
	notDone(t, done, "sync before a acked")
	r.net.Brick("a").Hold(false)
	if err := result(t, done, "sync"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if p := r.net.Brick(id).Position(); p.Synced < 2 {
			t.Fatalf("sync returned but brick %s synced only %d", id, p.Synced)
		}
	}
}

func TestLostAckShrinksISRThroughRaftAndWaitsForIt(t *testing.T) {
	r := newRig(t, nil)
	raftDown := errors.New("raft: no leader")
	r.ctl.setFail(raftDown)
	r.net.Brick("c").DropAcks(true)
	r.net.Brick("c").SetReachable(false) // and heal cannot reach it
	r.do(write(10))
	done := async(func() error { return r.h.Sync(context.Background()) })
	r.waitAcked(2, true, "a", "b")
	notDone(t, done, "sync with c silent")
	r.ctl.none(t)

	r.clk.Advance(r.cfg.ReplicaTimeout)
	if isr := r.ctl.next(t); !slices.Equal(isr, []string{"a", "b"}) {
		t.Fatalf("proposed %v, want [a b]", isr)
	}
	r.wait("the failed proposal", func(s Status) bool { return strings.Contains(s.Reason, "retrying") })
	notDone(t, done, "sync while Raft is unreachable")
	if s := r.h.Status(); !slices.Equal(s.ISR, []string{"a", "b", "c"}) || s.State != StateDegraded {
		t.Fatalf("ISR changed without Raft: %+v", s)
	}

	r.ctl.setFail(nil)
	r.clk.Advance(r.cfg.ProposalRetry)
	if isr := r.ctl.next(t); !slices.Equal(isr, []string{"a", "b"}) {
		t.Fatalf("retried %v, want [a b]", isr)
	}
	if err := result(t, done, "sync"); err != nil {
		t.Fatal(err)
	}
	s := r.wait("ISR [a b]", func(s Status) bool { return slices.Equal(s.ISR, []string{"a", "b"}) })
	if s.State != StateDegraded {
		t.Fatalf("state %q, want degraded", s.State)
	}
	if err := r.h.Sync(context.Background()); err != nil { // a new sync needs only a and b
		t.Fatal(err)
	}
}

func TestStaleEpochFromBrickFences(t *testing.T) {
	r := newRig(t, nil)
	r.do(write(1))
	r.net.Brick("b").Fence(2) // a successor attached at epoch 2 and is fencing the ISR
	err := r.h.Sync(context.Background())
	var fe *FencedError
	if !errors.As(err, &fe) || fe.Epoch != 1 || !strings.Contains(err.Error(), "epoch 2") {
		t.Fatalf("want a FencedError naming epochs 1 and 2, got %v", err)
	}
	last := r.h.AfterSeq()
	for _, op := range []*brickpb.Op{write(1), mkdir("x")} {
		if _, err := r.h.Do(context.Background(), op); !errors.Is(err, ErrFenced) {
			t.Fatalf("%v after fence: %v", op.Type, err)
		}
	}
	if err := r.h.Sync(context.Background()); !errors.Is(err, ErrFenced) {
		t.Fatalf("sync after fence: %v", err)
	}
	if s := r.h.Status(); s.State != StateFenced || !strings.Contains(s.Reason, "epoch 1") {
		t.Fatalf("status %q: %q", s.State, s.Reason)
	}
	if got := r.h.AfterSeq(); got != last || got > 2 {
		t.Fatalf("last seq %d (was %d at the fence): something was sequenced after the fence", got, last)
	}
}

func TestISRShrinkRacingNewEpochFences(t *testing.T) {
	r := newRig(t, nil)
	r.ctl.setFail(fmt.Errorf("set ISR of volume v: %w: proposed at epoch 1, the volume is at epoch 2", ErrStaleEpoch))
	r.net.Brick("c").DropAcks(true)
	r.do(write(1))
	r.do(mkdir("m")) // the primary answers: fine
	sync := async(func() error { return r.h.Sync(context.Background()) })
	r.waitAcked(3, true, "a", "b")
	r.clk.Advance(r.cfg.ReplicaTimeout)
	r.ctl.next(t)
	if err := result(t, sync, "sync"); !errors.Is(err, ErrFenced) {
		t.Fatalf("sync: want fenced, got %v", err)
	}
	for _, op := range []*brickpb.Op{write(1), mkdir("n")} {
		if _, err := r.h.Do(context.Background(), op); !errors.Is(err, ErrFenced) {
			t.Fatalf("%v after fence: %v", op.Type, err)
		}
	}
	if err := r.h.Sync(context.Background()); !errors.Is(err, ErrFenced) {
		t.Fatalf("sync after fence: %v", err)
	}
}

func TestBelowMinISRTurnsReadOnlyThenRecovers(t *testing.T) {
	r := newRigNet(t, func(c *Config) { c.ISR, c.MinISR = []string{"a", "b"}, 2 },
		func(n *MemNet) { n.Brick("c").SetReachable(false) }) // the head cannot heal c itself here
	r.do(write(1))
	if err := r.h.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.net.Brick("b").DropAcks(true)
	r.do(write(1)) // seq 3, sequenced before read-only: it stays in the stream
	sync := async(func() error { return r.h.Sync(context.Background()) })
	r.waitAcked(4, true, "a")
	r.clk.Advance(r.cfg.ReplicaTimeout)
	s := r.wait("read-only", func(s Status) bool { return s.State == StateReadOnly })
	if !strings.Contains(s.Reason, "min-isr 2") || !strings.Contains(s.Reason, "brick b") {
		t.Fatalf("reason does not say why: %q", s.Reason)
	}
	r.ctl.none(t) // never shrink below min-isr
	if err := result(t, sync, "pending sync"); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("pending sync: want EROFS, got %v", err)
	}
	if _, err := r.h.Do(context.Background(), write(1)); !errors.Is(err, syscall.EROFS) || !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write while read-only: %v", err)
	}
	if err := r.h.Sync(context.Background()); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("sync of work not durable on b: %v", err)
	}

	// Heal (outside the head) brought c level with a; Raft commits
	// [a b c]; now b can go.
	r.net.Brick("c").HealFrom(r.net.Brick("a"))
	r.net.Brick("c").SetReachable(true)
	r.h.ObserveISR(1, 50, []string{"a", "b", "c"})
	if isr := r.ctl.next(t); !slices.Equal(isr, []string{"a", "c"}) {
		t.Fatalf("proposed %v, want [a c]", isr)
	}
	r.wait("writable, ISR [a c]", func(s Status) bool {
		// healing once the head's heal stream to b is up, degraded before
		return (s.State == StateDegraded || s.State == StateHealing) && slices.Equal(s.ISR, []string{"a", "c"})
	})
	r.do(write(1))
	if err := r.h.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The head may sequence a barrier of its own after the Sync (for a
	// brick about to rejoin): compare once the bricks have it.
	last := r.h.AfterSeq()
	r.waitBrick("a", last)
	r.waitBrick("c", last)
	checkGapless(t, r.net, last, "a", "c")
}

func TestReadOnlyEndsWhenTheStuckBrickCatchesUp(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MinISR = 3 })
	r.net.Brick("c").DropAcks(true)
	r.do(write(1))
	r.waitAcked(1, false, "a", "b")
	r.clk.Advance(r.cfg.ReplicaTimeout)
	r.wait("read-only", func(s Status) bool { return s.State == StateReadOnly })
	r.net.Brick("c").DropAcks(false)
	r.net.Brick("c").Disconnect() // the reopened stream reports applied 1
	r.wait("healthy", func(s Status) bool { return s.State == StateHealthy })
	r.do(write(1))
	if err := r.h.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkGapless(t, r.net, 3, "a", "b", "c")
	if n := r.net.Brick("c").Opens(); n != 2 {
		t.Fatalf("c opened %d streams, want 2", n)
	}
}

func TestPrimaryFailoverAnswersWaitingOpOnce(t *testing.T) {
	r := newRig(t, nil)
	r.net.Brick("a").DropAcks(true)
	r.net.Brick("b").SetApply(func(op *brickpb.Op) *brickpb.OpResult {
		return &brickpb.OpResult{Errno: uint32(syscall.EEXIST)}
	})
	r.net.Brick("c").SetApply(func(op *brickpb.Op) *brickpb.OpResult {
		return &brickpb.OpResult{Errno: uint32(syscall.EEXIST)}
	})
	var got *brickpb.OpResult
	done := async(func() (err error) { got, err = r.h.Do(context.Background(), mkdir("d")); return err })
	r.waitAcked(1, false, "b", "c")
	notDone(t, done, "mkdir while the primary is silent")
	r.clk.Advance(r.cfg.ReplicaTimeout)
	if isr := r.ctl.next(t); !slices.Equal(isr, []string{"b", "c"}) {
		t.Fatalf("proposed %v", isr)
	}
	if err := result(t, done, "mkdir"); err != nil {
		t.Fatal(err)
	}
	if got.GetErrno() != uint32(syscall.EEXIST) || r.h.Primary() != "b" {
		t.Fatalf("want b's EEXIST, got %+v from primary %s", got, r.h.Primary())
	}
}

func TestDivergingBrickIsDropped(t *testing.T) {
	r := newRig(t, nil)
	r.net.Brick("c").SetApply(func(op *brickpb.Op) *brickpb.OpResult {
		if op.Type == brickpb.OpType_OP_MKDIR {
			return &brickpb.OpResult{Errno: uint32(syscall.ENOENT)}
		}
		return nil
	})
	if res := r.do(mkdir("d")); res.Errno != 0 {
		t.Fatalf("want the primary's errno 0, got %d", res.Errno)
	}
	if isr := r.ctl.next(t); !slices.Equal(isr, []string{"a", "b"}) {
		t.Fatalf("proposed %v, want [a b]", isr)
	}
	r.wait("ISR [a b]", func(s Status) bool { return slices.Equal(s.ISR, []string{"a", "b"}) })
}

func TestStreamDownResumesWithoutGapOrDuplicate(t *testing.T) {
	r := newRig(t, nil)
	b := r.net.Brick("b")
	b.Hold(true)
	for range 10 {
		r.do(write(1))
	}
	r.waitBrick("b", 10)
	b.Disconnect() // the 10 held acks are lost: the head thinks b applied 0
	b.Hold(false)
	r.waitAcked(10, false, "b")
	for range 5 {
		r.do(write(1))
	}
	if err := r.h.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.SetReachable(false)
	b.Crash() // loses nothing: all synced
	r.do(write(1))
	r.waitAcked(17, false, "a", "c")
	r.wait("b unreachable", func(s Status) bool {
		return s.Bricks[1].Stream == "down" && strings.Contains(s.Bricks[1].LastErr, "unreachable")
	})
	b.SetReachable(true)
	r.clk.Advance(r.cfg.MaxReconnectBackoff)
	r.waitAcked(17, false, "b")
	checkGapless(t, r.net, 17, "a", "b", "c")
	if b.Opens() < 3 {
		t.Fatalf("b opened %d streams", b.Opens())
	}
}

func TestCrashedBrickResentFromRetainedOps(t *testing.T) {
	r := newRig(t, nil)
	c := r.net.Brick("c")
	c.Hold(true)
	for range 5 {
		r.do(write(1))
	}
	r.waitBrick("c", 5)
	c.Crash() // applied falls back to 0; the head retains 1..5 (c never acked)
	c.Hold(false)
	r.waitAcked(5, false, "a", "b", "c")
	checkGapless(t, r.net, 5, "a", "b", "c")
}

func TestCancelledDoWhileWindowFull(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxInflightBytes = 1000 })
	r.net.Brick("a").Hold(true)
	r.do(write(900))
	ctx, cancel := context.WithCancel(context.Background())
	done := async(func() error { _, err := r.h.Do(ctx, write(900)); return err })
	r.wait("queued", func(s Status) bool { return s.Queued == 1 })
	cancel()
	if err := result(t, done, "cancelled write"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	r.net.Brick("a").Hold(false)
	r.waitAcked(1, false, "a", "b", "c")
	if r.h.AfterSeq() != 1 {
		t.Fatalf("cancelled write was sequenced (AfterSeq %d)", r.h.AfterSeq())
	}
}

func TestCloseFailsWaiters(t *testing.T) {
	r := newRig(t, nil)
	r.net.Brick("a").Hold(true)
	done := async(func() error { _, err := r.h.Do(context.Background(), mkdir("x")); return err })
	r.wait("sequenced", func(s Status) bool { return s.LastSeq == 1 })
	r.h.Close()
	if err := result(t, done, "mkdir"); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v", err)
	}
	if _, err := r.h.Do(context.Background(), write(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("do after close: %v", err)
	}
}

func TestHeldWithinFollowsAcksOfThisEpoch(t *testing.T) {
	r := newRig(t, func(c *Config) { c.ReplicaTimeout = time.Minute })
	if r.h.HeldWithin(time.Second) {
		t.Fatal("held before any brick applied an op of this epoch")
	}
	r.do(mkdir("x"))
	r.waitAcked(r.h.AfterSeq(), false, "a", "b", "c")
	if !r.h.HeldWithin(time.Second) {
		t.Fatal("not held right after every ISR brick applied an op")
	}
	// Acks only prove the epoch as of the op they acknowledge: time
	// passing without new ops (or a SIGSTOP) ends the hold.
	r.clk.Advance(2 * time.Second)
	if r.h.HeldWithin(time.Second) {
		t.Fatal("still held 2 s after the newest acknowledged op, lease 1 s")
	}
	r.do(write(1))
	r.waitAcked(r.h.AfterSeq(), false, "a", "b", "c")
	if !r.h.HeldWithin(time.Second) {
		t.Fatal("not held after a fresh op was applied")
	}
	// One ISR brick silent (a successor may have fenced the others and
	// left out one this head still reaches): the others' acks do not hold.
	r.net.Brick("c").DropAcks(true)
	r.clk.Advance(2 * time.Second)
	r.do(write(1))
	r.waitAcked(r.h.AfterSeq(), false, "a", "b")
	if r.h.HeldWithin(time.Second) {
		t.Fatal("held while an ISR brick has acknowledged nothing for 2 s")
	}
	r.net.Brick("c").DropAcks(false)
	r.do(write(1))
	r.waitAcked(r.h.AfterSeq(), false, "a", "b", "c")
	if !r.h.HeldWithin(time.Second) {
		t.Fatal("not held once every ISR brick acknowledged a fresh op")
	}
	r.net.Brick("b").Fence(2)
	if err := r.h.Sync(context.Background()); !errors.Is(err, ErrFenced) {
		t.Fatalf("sync after the fence: %v", err)
	}
	if r.h.HeldWithin(time.Hour) {
		t.Fatal("a fenced head still holds its epoch")
	}
}

// With a linger, ops nobody waits for are held back and go in one message
// with what follows, until somebody waits: a read (Hurry), an op whose
// result is awaited, or a sync. The linger here is an hour, so only those
// can have sent anything.
func TestLingerBatchesUntilSomebodyWaits(t *testing.T) {
	r := newRig(t, func(c *Config) { c.Linger = time.Hour })
	ids := []string{"a", "b", "c"}
	for i := 0; i < 20; i++ {
		r.do(write(10))
	}
	for _, id := range ids {
		if n := len(r.net.Brick(id).Ops()); n != 0 {
			t.Fatalf("brick %s got %d ops while they linger", id, n)
		}
	}
	// Completions may come before the loop hands the ops to the senders;
	// a Status request is served after that.
	r.h.Status()
	r.h.Hurry() // a reader is about to wait for seq 20
	for _, id := range ids {
		r.waitBrick(id, 20)
		if n := r.net.Brick(id).Sends(); n != 1 {
			t.Fatalf("brick %s: 20 lingering writes came in %d messages, want 1", id, n)
		}
	}
	for i := 0; i < 5; i++ {
		r.do(write(10))
	}
	if res := r.do(mkdir("d")); res.Seq != 26 { // waits for the primary's result
		t.Fatalf("mkdir: %+v", res)
	}
	for _, id := range ids {
		r.waitBrick(id, 26)
		if n := r.net.Brick(id).Sends(); n != 2 {
			t.Fatalf("brick %s: writes and the awaited mkdir after them came in %d more messages, want 1", id, n-1)
		}
	}
	r.do(write(10))
	if err := result(t, async(func() error { return r.h.Sync(context.Background()) }), "sync"); err != nil {
		t.Fatal(err)
	}
	checkGapless(t, r.net, 28, ids...)
}

// RenewLease keeps the hold without an op: every ISR brick must pass the
// check (a read a fenced brick refuses), and the hold dates from when the
// renewal began, not from when it ended.
func TestRenewLeaseHoldsWithoutOps(t *testing.T) {
	r := newRig(t, func(c *Config) { c.ReplicaTimeout = time.Minute })
	r.do(mkdir("x"))
	r.waitAcked(r.h.AfterSeq(), false, "a", "b", "c")
	last := r.h.AfterSeq()
	r.clk.Advance(2 * time.Second)
	if r.h.HeldWithin(time.Second) {
		t.Fatal("held 2 s after the last op")
	}
	var checked sync.Map
	ok := func(_ context.Context, id string) error { checked.Store(id, true); return nil }
	if err := r.h.RenewLease(context.Background(), ok); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, was := checked.Load(id); !was {
			t.Fatalf("brick %s not checked", id)
		}
	}
	if !r.h.HeldWithin(time.Second) { // RenewLease returns once its proof counts
		t.Fatal("not held after a renewal every brick passed")
	}
	if r.h.AfterSeq() != last {
		t.Fatalf("renewal sequenced ops: last seq %d, was %d", r.h.AfterSeq(), last)
	}
	// One brick fails its check (fenced, or unreachable): no hold.
	r.clk.Advance(2 * time.Second)
	refused := errors.New("refused")
	err := r.h.RenewLease(context.Background(), func(_ context.Context, id string) error {
		if id == "b" {
			return refused
		}
		return nil
	})
	if !errors.Is(err, refused) {
		t.Fatalf("renewal with a failing brick: %v", err)
	}
	if r.h.HeldWithin(time.Second) {
		t.Fatal("held though brick b failed its check")
	}
	// A renewal that took long proves only its start.
	err = r.h.RenewLease(context.Background(), func(context.Context, string) error {
		r.clk.Advance(700 * time.Millisecond) // three checks: 2.1 s in all
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.h.HeldWithin(time.Second) {
		t.Fatal("held from the end of a renewal that began 2.1 s ago")
	}
}
