package head

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func healOf(s Status, id string) HealStatus {
	for _, h := range s.Heals {
		if h.ID == id {
			return h
		}
	}
	return HealStatus{}
}

// dropByTimeout partitions c (acks lost, no reconnect), writes n ops and a
// Sync, and lets the replica timeout drop c from the ISR through Raft.
func (r *rig) dropByTimeout(id string, n int) {
	r.t.Helper()
	b := r.net.Brick(id)
	b.DropAcks(true)
	b.SetReachable(false)
	for range n {
		r.do(write(1000))
	}
	sync := async(func() error { return r.h.Sync(context.Background()) })
	r.waitAcked(uint64(n+1), true, "a", "b")
	r.waitBrick(id, uint64(n+1)) // applied and synced, unacknowledged
	r.clk.Advance(r.cfg.ReplicaTimeout)
	if isr := r.ctl.next(r.t); !slices.Equal(isr, []string{"a", "b"}) {
		r.t.Fatalf("proposed %v", isr)
	}
	if err := result(r.t, sync, "sync"); err != nil {
		r.t.Fatal(err)
	}
	r.wait(id+" out of the ISR, unreachable", func(s Status) bool {
		h := healOf(s, id)
		return !slices.Contains(s.ISR, id) && h.State == HealUnreachable && h.Stream == "down" && s.State == StateDegraded
	})
	b.DropAcks(false)
}

// rejoined waits for id back in the ISR and checks every brick's ops.
func (r *rig) rejoined(id string) {
	r.t.Helper()
	if isr := r.ctl.next(r.t); !slices.Equal(isr, []string{"a", "b", "c"}) {
		r.t.Fatalf("proposed %v, want [a b c]", isr)
	}
	r.wait(id+" back in the ISR", func(s Status) bool {
		return slices.Equal(s.ISR, []string{"a", "b", "c"}) && s.State == StateHealthy && len(s.Heals) == 0
	})
	// From now on a Sync waits for it too.
	r.net.Brick(id).Hold(true)
	sync := async(func() error { return r.h.Sync(context.Background()) })
	s := r.wait("the sync pending", func(s Status) bool { return s.PendingSyncs == 1 })
	r.waitBrick(id, s.LastSeq)
	notDone(r.t, sync, "sync while the rejoined brick holds its acks")
	r.net.Brick(id).Hold(false)
	if err := result(r.t, sync, "sync"); err != nil {
		r.t.Fatal(err)
	}
	checkGapless(r.t, r.net, r.h.AfterSeq(), "a", "b", "c")
}

func TestHealRejoinsFromRetainedOps(t *testing.T) {
	r := newRig(t, nil)
	r.dropByTimeout("c", 5) // c applied 1..6 (it lost only acks)
	a := r.net.Brick("a")
	a.Hold(true) // the head keeps 7.. until a acknowledges them
	for range 3 {
		r.do(write(1000))
	}
	r.waitAcked(9, false, "b")
	c := r.net.Brick("c")
	c.Hold(true)
	c.SetReachable(true)
	r.clk.Advance(r.cfg.HealRetry)
	s := r.wait("c healing from the retained ops", func(s Status) bool {
		h := healOf(s, "c")
		return h.State == HealHealing && h.Phase == "retained"
	})
	if h := healOf(s, "c"); s.State != StateHealing || h.Applied != 6 || h.Target != 9 || h.OpsRemaining != 3 || h.BytesRemaining != 3*1096 {
		t.Fatalf("status %q, heal %+v", s.State, h)
	}
	c.Hold(false)
	a.Hold(false)
	r.rejoined("c")
	if n := a.Fetches() + r.net.Brick("b").Fetches(); n != 0 {
		t.Fatalf("read op logs %d times; the head retained every op c lacked", n)
	}
}

func TestHealRejoinsFromAnOpLog(t *testing.T) {
	r := newRig(t, nil)
	r.dropByTimeout("c", 5)
	r.net.Brick("c").Crash() // and lost nothing it synced
	for range 10 {
		r.do(write(1000))
	}
	r.waitAcked(16, false, "a", "b") // the head retains nothing c lacks
	a := r.net.Brick("a")
	a.HoldFetches(true)
	r.net.Brick("c").SetReachable(true)
	r.clk.Advance(r.cfg.HealRetry)
	s := r.wait("c reading a's op log", func(s Status) bool { return healOf(s, "c").Phase == "op-log" })
	if h := healOf(s, "c"); h.Source != "a" || h.Applied != 6 || h.Target != 16 || s.State != StateHealing {
		t.Fatalf("status %q, heal %+v", s.State, h)
	}
	r.do(write(1000)) // sequenced while c catches up
	a.HoldFetches(false)
	r.rejoined("c")
	if a.Fetches() == 0 {
		t.Fatal("a's op log was never read")
	}
}

func TestHealTruncatedLogNeedsFullHeal(t *testing.T) {
	r := newRig(t, nil)
	r.dropByTimeout("c", 5)
	for range 5 {
		r.do(write(1000))
	}
	r.waitAcked(11, false, "a", "b")
	r.net.Brick("a").TruncateLog(9)
	r.net.Brick("b").TruncateLog(8)
	r.net.Brick("c").SetReachable(true)
	r.clk.Advance(r.cfg.HealRetry)
	want := "brick c needs a full resync: the op log of b starts at 8, the brick is at 6"
	s := r.wait("c needs a full heal", func(s Status) bool { return healOf(s, "c").State == HealNeedsFull })
	if h := healOf(s, "c"); h.Reason != want || s.State != StateDegraded || !strings.Contains(s.Reason, want) {
		t.Fatalf("status %q %q, heal %+v", s.State, s.Reason, h)
	}
	r.clk.Advance(r.cfg.HealRetry) // retried; still not covered
	r.do(write(1000))
	if err := r.h.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.ctl.none(t)
	if s := r.h.Status(); !slices.Equal(s.ISR, []string{"a", "b"}) || healOf(s, "c").State != HealNeedsFull {
		t.Fatalf("status %+v", s)
	}
	if got := len(r.net.Brick("c").Ops()); got != 6 {
		t.Fatalf("c applied %d ops, want 6: nothing may be sent past the gap", got)
	}
}

func TestHealThrottledByTheClock(t *testing.T) {
	r := newRig(t, func(c *Config) { c.HealBytesPerSec = 5000 })
	r.dropByTimeout("c", 10) // c at 11 (the sync barrier)
	for range 20 {
		r.do(write(1000)) // 12..31, read from a's op log
	}
	r.waitAcked(31, false, "a", "b")
	r.net.Brick("c").SetReachable(true)
	r.clk.Advance(r.cfg.HealRetry)
	// A full bucket at once, then 5000 bytes' worth (4 or 5 ops of 1096)
	// a second.
	for i, want := range []uint64{16, 21, 25, 30} {
		if i > 0 {
			r.clk.Advance(time.Second)
		}
		r.wait("c's throttled progress", func(s Status) bool { return healOf(s, "c").Applied == want })
		if got := r.net.Brick("c").Position().Applied; got != want {
			t.Fatalf("step %d: c applied %d, want %d: the throttle let more through", i, got, want)
		}
	}
}

func TestHealStopsWhenFenced(t *testing.T) {
	r := newRig(t, nil)
	r.dropByTimeout("c", 5)
	for range 5 {
		r.do(write(1000))
	}
	r.waitAcked(11, false, "a", "b")
	r.net.Brick("a").HoldFetches(true) // the heal waits on a's log
	r.net.Brick("c").SetReachable(true)
	r.clk.Advance(r.cfg.HealRetry)
	r.wait("c reading a's op log", func(s Status) bool { return healOf(s, "c").Phase == "op-log" })
	opens := r.net.Brick("c").Opens()
	r.net.Brick("b").Fence(2) // a successor
	if err := r.h.Sync(context.Background()); !errors.Is(err, ErrFenced) {
		t.Fatalf("want fenced, got %v", err)
	}
	r.net.Brick("a").HoldFetches(false)
	for range 5 {
		r.clk.Advance(r.cfg.HealRetry)
	}
	if s := r.h.Status(); s.State != StateFenced || !slices.Equal(s.ISR, []string{"a", "b"}) {
		t.Fatalf("status %+v", s)
	}
	r.ctl.none(t)
	if n := r.net.Brick("c").Opens(); n != opens {
		t.Fatalf("c opened %d more streams after the fence", n-opens)
	}
	if got := len(r.net.Brick("c").Ops()); got != 6 {
		t.Fatalf("c applied %d ops, want 6", got)
	}
}

func TestHealCuresReadOnly(t *testing.T) {
	r := newRigNet(t, func(c *Config) { c.ISR, c.MinISR = []string{"a", "b"}, 2 },
		func(n *MemNet) { n.Brick("c").SetReachable(false) })
	r.do(write(1))
	r.net.Brick("b").DropAcks(true)
	r.net.Brick("b").SetReachable(false)
	r.do(write(1))
	r.waitAcked(2, false, "a")
	r.clk.Advance(r.cfg.ReplicaTimeout)
	r.wait("read-only, c down", func(s Status) bool { return s.State == StateReadOnly && healOf(s, "c").Stream == "down" })
	r.net.Brick("c").SetReachable(true)
	r.clk.Advance(r.cfg.HealRetry)
	if isr := r.ctl.next(t); !slices.Equal(isr, []string{"a", "b", "c"}) {
		t.Fatalf("proposed %v, want [a b c]", isr)
	}
	if isr := r.ctl.next(t); !slices.Equal(isr, []string{"a", "c"}) {
		t.Fatalf("proposed %v, want [a c]", isr)
	}
	r.wait("writable with [a c]", func(s Status) bool { return slices.Equal(s.ISR, []string{"a", "c"}) && s.State != StateReadOnly })
	r.do(write(1))
	if err := r.h.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkGapless(t, r.net, r.h.AfterSeq(), "a", "c")
}
