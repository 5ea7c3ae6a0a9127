package head

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// newHealMH is a machine with ISR [a b] (streams up) and c outside it.
func newHealMH(t *testing.T, mut func(*Config)) *mh {
	h := newMH(t, func(c *Config) {
		c.ISR, c.MinISR, c.HealRetry = []string{"a", "b"}, 1, 2*time.Second
		if mut != nil {
			mut(c)
		}
	})
	if h.gens["c"] == 0 {
		t.Fatal("the first tick should open a heal stream to c")
	}
	h.allUp()
	return h
}

func (h *mh) fetches() []HealFetch {
	var fs []HealFetch
	for _, a := range h.last {
		if f, ok := a.(HealFetch); ok {
			fs = append(fs, f)
		}
	}
	return fs
}

func (h *mh) has(want Action) bool {
	return slices.ContainsFunc(h.last, func(a Action) bool { return fmt.Sprint(a) == fmt.Sprint(want) })
}

func (h *mh) heal(id string) HealStatus {
	for _, s := range h.m.Status().Heals {
		if s.ID == id {
			return s
		}
	}
	h.t.Fatalf("no heal status for %s", id)
	return HealStatus{}
}

// logOps are copies of the volume's ops after, up to to (what an op log
// read returns).
func (h *mh) logOps(all []*brickpb.Op, after, to uint64) []*brickpb.Op {
	var ops []*brickpb.Op
	for _, op := range all {
		if op.Seq > after && op.Seq <= to {
			ops = append(ops, proto.Clone(op).(*brickpb.Op))
		}
	}
	return ops
}

func TestMachineHealThrottle(t *testing.T) {
	const rate = 10_000
	h := newHealMH(t, func(c *Config) { c.HealBytesPerSec, c.MaxInflightBytes = rate, 100_000 })
	for i := uint64(1); i <= 60; i++ {
		h.step(Submit{Op: write(1000), Waiter: i}) // 1096 bytes in the window each
	}
	h.up("c", 0, 0)
	total := len(h.sent("c"))
	if total != 10 {
		t.Fatalf("at once: sent %v, want 1..10 (a full bucket, and one op of debt)", h.sent("c"))
	}
	h.ack("c", uint64(total), 0)
	if st := h.m.Status(); st.State != StateHealing || h.heal("c").Phase != "retained" {
		t.Fatalf("state %q, heal %+v", st.State, h.heal("c"))
	}
	// A token bucket: rate bytes/s, a burst of one second's worth, one op
	// of debt at most.
	elapsed := time.Duration(0)
	for i, d := range []time.Duration{time.Second, 500 * time.Millisecond, 2 * time.Second, 100 * time.Millisecond} {
		h.advance(d)
		elapsed += d
		total += len(h.sent("c"))
		h.ack("c", uint64(total), 0)
		if want := []int{19, 23, 33, 34}[i]; total != want || int64(total)*1096 > int64(rate*(1+elapsed.Seconds()))+1096 {
			t.Fatalf("after %s: sent %d ops (%d bytes), want %d", elapsed, total, total*1096, want)
		}
	}
	if s := h.heal("c"); s.Rate <= 0 || s.Rate > 2*rate || s.ETA <= 0 || s.OpsRemaining != uint64(60-total) || s.BytesRemaining != int64(60-total)*1096 {
		t.Fatalf("heal status %+v", s)
	}
}

func TestMachineHealFromOpLogThenJoins(t *testing.T) {
	h := newHealMH(t, nil)
	var all []*brickpb.Op
	for i := uint64(1); i <= 5; i++ {
		op := write(10)
		all = append(all, op)
		h.step(Submit{Op: op, Waiter: i})
	}
	h.ack("a", 5, 0)
	h.ack("b", 5, 0)
	h.up("c", 2, 2) // lacks 3..5, which the head no longer retains
	fs := h.fetches()
	if len(fs) != 1 || fs[0].Source != "a" || fs[0].AfterSeq != 2 || fs[0].UpTo != 5 || h.sent("c") != nil {
		t.Fatalf("want one read of a's log after 2 up to 5 and nothing sent, got %v", h.last)
	}
	if s := h.heal("c"); s.Phase != "op-log" || s.Source != "a" || s.OpsRemaining != 3 {
		t.Fatalf("heal status %+v", s)
	}
	six := write(10)
	all = append(all, six)
	h.step(Submit{Op: six, Waiter: 6}) // sequenced meanwhile: retained, not sent yet
	if h.sent("c") != nil {
		t.Fatal("sent op 6 to c before 3..5")
	}
	ops := h.logOps(all, 2, 5)
	for _, op := range ops {
		op.Epoch = 4 // an older head's ops: the stream takes the head's epoch only
	}
	h.step(HealFetched{Brick: "c", Fetch: fs[0].Fetch, Ops: ops})
	if got := h.sent("c"); !slices.Equal(got, []uint64{3, 4, 5, 6}) {
		t.Fatalf("sent %v, want [3 4 5 6]", got)
	}
	for _, a := range h.last {
		if s, ok := a.(Send); ok && slices.ContainsFunc(s.Ops, func(op *brickpb.Op) bool { return op.Epoch != 5 }) {
			t.Fatal("sent an op at an epoch other than the head's")
		}
	}
	h.ack("c", 6, 2)
	ps := h.proposals()
	if len(ps) != 1 || ps[0].Epoch != 5 || !slices.Equal(ps[0].ISR, []string{"a", "b", "c"}) {
		t.Fatalf("want [a b c] proposed at epoch 5, got %v", h.last)
	}
	if s := h.heal("c"); s.Phase != "joining" || h.m.Status().State != StateHealing {
		t.Fatalf("heal status %+v", s)
	}
	// While joining, c holds the window and counts for fsync.
	h.step(SyncReq{Waiter: 7})
	h.ack("a", 7, 7)
	h.ack("b", 7, 7)
	if _, ok := h.done[7]; ok {
		t.Fatal("a sync completed without the joining brick")
	}
	if st := h.m.Status(); st.TrimSeq != 6 {
		t.Fatalf("trim %d: the joining brick's ops were dropped", st.TrimSeq)
	}
	h.step(ISRCommitted{Epoch: 5, ISR: []string{"a", "b", "c"}, Index: 9, Proposed: true})
	if st := h.m.Status(); st.State != StateHealthy || len(st.Heals) != 0 || st.Bricks[2].Stream != "up" {
		t.Fatalf("after the join: %+v", st)
	}
	if got := h.sent("c"); got != nil {
		t.Fatalf("the joined brick's stream resent %v", got)
	}
	h.ack("c", 7, 7)
	if c, ok := h.done[7]; !ok || c.Err != nil {
		t.Fatalf("sync after c fsync'd: %+v", c)
	}
}

func TestMachineHealChecksTheBricksLastOp(t *testing.T) {
	for _, tc := range []struct {
		logEpoch uint64
		ok       bool
	}{{4, true}, {3, false}} {
		t.Run(fmt.Sprint(tc.logEpoch), func(t *testing.T) {
			h := newHealMH(t, func(c *Config) { c.StartSeq = 4 })
			h.step(StreamUp{Brick: "c", Gen: h.gens["c"], Applied: 3, Synced: 3, AppliedEpoch: 4})
			fs := h.fetches()
			if len(fs) != 1 || fs[0].AfterSeq != 2 {
				t.Fatalf("want a read of op 3 to check c's, got %v", h.last)
			}
			var log []*brickpb.Op
			for s := uint64(3); s <= 4; s++ {
				log = append(log, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Seq: s, Epoch: tc.logEpoch})
			}
			h.step(HealFetched{Brick: "c", Fetch: fs[0].Fetch, Ops: log})
			if tc.ok {
				if got := h.sent("c"); !slices.Equal(got, []uint64{4}) {
					t.Fatalf("sent %v, want [4]", got)
				}
				return
			}
			s := h.heal("c")
			if s.State != HealNeedsFull || !containsAll(s.Reason, "brick c needs a full resync", "epoch 4", "epoch 3") || h.sent("c") != nil {
				t.Fatalf("heal %+v, actions %v", s, h.last)
			}
			h.advance(time.Minute)
			if _, ok := h.gens["c"]; ok && slices.ContainsFunc(h.last, func(a Action) bool { _, ok := a.(Reconnect); return ok }) {
				t.Fatal("a diverged brick is retried")
			}
		})
	}
}

func TestMachineHealTruncatedLogNeedsFullHeal(t *testing.T) {
	h := newHealMH(t, nil)
	for i := uint64(1); i <= 5; i++ {
		h.step(Submit{Op: write(10), Waiter: i})
	}
	h.ack("a", 5, 0)
	h.ack("b", 5, 0)
	h.up("c", 0, 0)
	for _, src := range []string{"a", "b"} {
		fs := h.fetches()
		if len(fs) != 1 || fs[0].Source != src {
			t.Fatalf("want a read of %s's log, got %v", src, h.last)
		}
		h.step(HealFetched{Brick: "c", Fetch: fs[0].Fetch, Err: &LogTruncatedError{Source: src, AfterSeq: 0, FirstSeq: 4}})
	}
	s := h.heal("c")
	want := "brick c needs a full resync: the op log of b starts at 4, the brick is at 0"
	if s.State != HealNeedsFull || s.Reason != want {
		t.Fatalf("heal %+v, want reason %q", s, want)
	}
	if st := h.m.Status(); st.State != StateDegraded || !strings.Contains(st.Reason, want) {
		t.Fatalf("state %q: %q", st.State, st.Reason)
	}
	if !h.has(CloseStream{Brick: "c", Gen: h.gens["c"]}) || len(h.proposals()) != 0 {
		t.Fatalf("actions %v", h.last)
	}
	gen := h.gens["c"]
	h.advance(2 * time.Second) // retried, in case a log covers it now
	if h.gens["c"] == gen {
		t.Fatal("not retried after HealRetry")
	}
	h.up("c", 0, 0)
	if s := h.heal("c"); s.State != HealNeedsFull {
		t.Fatalf("the state flickered while retrying: %+v", s)
	}
}

func TestMachineFenceStopsHeal(t *testing.T) {
	h := newHealMH(t, nil)
	for i := uint64(1); i <= 5; i++ {
		h.step(Submit{Op: write(10), Waiter: i})
	}
	h.ack("a", 5, 0)
	h.ack("b", 5, 0)
	h.up("c", 2, 2)
	fs := h.fetches()
	h.step(Fenced{Brick: "b", Msg: "promised epoch 6"})
	if !h.has(CloseStream{Brick: "c", Gen: h.gens["c"]}) || !h.has(CancelFetch{Brick: "c", Fetch: fs[0].Fetch}) {
		t.Fatalf("fencing did not stop the heal: %v", h.last)
	}
	h.step(HealFetched{Brick: "c", Fetch: fs[0].Fetch, Ops: []*brickpb.Op{{Seq: 3, Epoch: 5}, {Seq: 4, Epoch: 5}, {Seq: 5, Epoch: 5}}})
	h.advance(time.Minute)
	for _, a := range h.last {
		switch a.(type) {
		case Send, Reconnect, HealFetch, ProposeISR:
			t.Fatalf("fenced head acted: %v", h.last)
		}
	}
}

func TestMachineFenceWhileJoiningProposesNothingMore(t *testing.T) {
	h := newHealMH(t, nil)
	h.step(Submit{Op: write(10), Waiter: 1})
	h.up("c", 0, 0)
	h.ack("c", 1, 0)
	if ps := h.proposals(); len(ps) != 1 {
		t.Fatalf("want c proposed, got %v", h.last)
	}
	h.step(ISRProposalFailed{Err: ErrStaleEpoch, Stale: true})
	if st := h.m.Status(); st.State != StateFenced {
		t.Fatalf("state %q", st.State)
	}
	h.advance(time.Minute)
	if len(h.proposals()) != 0 || len(h.m.Status().ISR) != 2 {
		t.Fatal("a fenced head proposed again")
	}
}
