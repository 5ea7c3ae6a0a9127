package head

import (
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// mh drives a Machine by hand and remembers what it said.
type mh struct {
	t    *testing.T
	m    *Machine
	now  time.Time
	gens map[string]uint64
	last []Action
	done map[uint64]Complete // every completion ever, by waiter
}

func newMH(t *testing.T, mut func(*Config)) *mh {
	t.Helper()
	cfg := Config{
		Volume: "v", Epoch: 5, Placement: []string{"a", "b", "c"}, ISR: []string{"a", "b", "c"},
		MinISR: 2, Primary: "a", ReplicaTimeout: 3 * time.Second, MaxInflightBytes: 1 << 20,
		Logger: testLogger(t),
	}
	if mut != nil {
		mut(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &mh{t: t, m: m, now: time.Unix(1000, 0), gens: map[string]uint64{}, done: map[uint64]Complete{}}
	h.step(Tick{Now: h.now})
	return h
}

func (h *mh) step(ev Event) []Action {
	h.t.Helper()
	h.last = h.m.Step(ev)
	for _, a := range h.last {
		switch a := a.(type) {
		case Reconnect:
			h.gens[a.Brick] = a.Gen
		case Complete:
			if prev, ok := h.done[a.Waiter]; ok {
				h.t.Fatalf("waiter %d completed twice: %+v then %+v", a.Waiter, prev, a)
			}
			h.done[a.Waiter] = a
		}
	}
	return h.last
}

func (h *mh) advance(d time.Duration) []Action {
	h.now = h.now.Add(d)
	return h.step(Tick{Now: h.now})
}

func (h *mh) up(id string, applied, synced uint64) []Action {
	return h.step(StreamUp{Brick: id, Gen: h.gens[id], Applied: applied, Synced: synced})
}

func (h *mh) ack(id string, applied, synced uint64, results ...*brickpb.OpResult) []Action {
	return h.step(Ack{Brick: id, Gen: h.gens[id], Ack: &brickpb.ReplicateAck{AppliedSeq: applied, SyncedSeq: synced, Results: results}})
}

func (h *mh) sent(id string) []uint64 {
	var seqs []uint64
	for _, a := range h.last {
		if s, ok := a.(Send); ok && s.Brick == id {
			for _, op := range s.Ops {
				seqs = append(seqs, op.Seq)
			}
		}
	}
	return seqs
}

func (h *mh) proposals() []ProposeISR {
	var ps []ProposeISR
	for _, a := range h.last {
		if p, ok := a.(ProposeISR); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

func (h *mh) allUp() {
	for _, id := range h.m.isr {
		h.up(id, h.m.trimSeq, h.m.trimSeq)
	}
}

func mkdir(name string) *brickpb.Op {
	return &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: name}
}

func write(n int) *brickpb.Op {
	return &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 2, Data: make([]byte, n)}
}

func TestMachinePipelinesContiguousSeqs(t *testing.T) {
	h := newMH(t, nil)
	if len(h.gens) != 3 {
		t.Fatalf("first tick should open a stream to every ISR brick, got %v", h.last)
	}
	h.allUp()
	for i := uint64(1); i <= 10; i++ {
		h.step(Submit{Op: write(10), Waiter: i})
		c, ok := h.done[i]
		if !ok || c.Err != nil || c.Result.Seq != i {
			t.Fatalf("write %d: want an immediate completion with seq %d, got %+v (ok=%v)", i, i, c, ok)
		}
		for _, id := range []string{"a", "b", "c"} {
			if got := h.sent(id); !slices.Equal(got, []uint64{i}) {
				t.Fatalf("write %d: brick %s sent %v, want [%d]", i, id, got, i)
			}
		}
	}
	for _, a := range h.last {
		if s, ok := a.(Send); ok && s.Ops[0].Epoch != 5 {
			t.Fatalf("op sent with epoch %d, want 5", s.Ops[0].Epoch)
		}
	}
	if st := h.m.Status(); st.LastSeq != 10 || st.TrimSeq != 0 || st.State != StateHealthy {
		t.Fatalf("status %+v", st)
	}
}

func TestMachineWindowBlocksSubmit(t *testing.T) {
	h := newMH(t, func(c *Config) { c.MaxInflightBytes = 1000 })
	h.allUp()
	h.step(Submit{Op: write(800), Waiter: 1})
	h.step(Submit{Op: write(800), Waiter: 2})
	if _, ok := h.done[2]; ok {
		t.Fatal("second write completed though the window is full")
	}
	if st := h.m.Status(); st.Queued != 1 {
		t.Fatalf("queued %d, want 1", st.Queued)
	}
	h.ack("a", 1, 0)
	h.ack("b", 1, 0)
	if _, ok := h.done[2]; ok {
		t.Fatal("window freed before the slowest brick acked")
	}
	h.ack("c", 1, 0)
	if c, ok := h.done[2]; !ok || c.Result.Seq != 2 {
		t.Fatalf("second write not sequenced after the window freed: %+v", c)
	}
	// A cancelled queued submission is never sequenced.
	h.step(Submit{Op: write(800), Waiter: 3})
	h.step(Cancel{Waiter: 3, Err: errors.New("ctx done")})
	if c := h.done[3]; c.Err == nil {
		t.Fatal("cancel of a queued write succeeded")
	}
	for _, id := range []string{"a", "b", "c"} {
		h.ack(id, 2, 0)
	}
	if h.m.LastSeq() != 2 {
		t.Fatalf("cancelled write was sequenced: last seq %d", h.m.LastSeq())
	}
}

func TestMachineSyncCoalescesAndWaitsForEveryBrick(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	h.step(Submit{Op: write(1), Waiter: 1})
	h.step(SyncReq{Waiter: 2})
	h.step(SyncReq{Waiter: 3}) // nothing new: shares barrier seq 2
	if h.m.LastSeq() != 2 {
		t.Fatalf("two syncs with nothing between should share one barrier; last seq %d", h.m.LastSeq())
	}
	h.ack("a", 2, 2)
	h.ack("c", 2, 2)
	h.ack("b", 2, 1)
	if _, ok := h.done[2]; ok {
		t.Fatal("sync completed before b synced the barrier")
	}
	h.ack("b", 2, 2)
	if h.done[2].Err != nil || h.done[3].Err != nil {
		t.Fatalf("syncs: %+v %+v", h.done[2], h.done[3])
	}
	h.step(SyncReq{Waiter: 4}) // everything durable: immediate, no new barrier
	if _, ok := h.done[4]; !ok || h.m.LastSeq() != 2 {
		t.Fatalf("sync of durable work should complete at once without a barrier")
	}
}

func TestMachinePrimaryFailoverAnswersOnce(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	h.step(Submit{Op: mkdir("d"), Waiter: 1, WantResult: true})
	h.ack("b", 1, 0, &brickpb.OpResult{Seq: 1, Attr: &brickpb.Attr{Fid: 22}})
	h.ack("c", 1, 0, &brickpb.OpResult{Seq: 1, Attr: &brickpb.Attr{Fid: 33}})
	if _, ok := h.done[1]; ok {
		t.Fatal("answered from a non-primary while the primary is in the ISR")
	}
	h.advance(3 * time.Second)
	ps := h.proposals()
	if len(ps) != 1 || !slices.Equal(ps[0].ISR, []string{"b", "c"}) || ps[0].Epoch != 5 {
		t.Fatalf("want a proposal of [b c] at epoch 5, got %v", ps)
	}
	if _, ok := h.done[1]; ok {
		t.Fatal("answered before Raft confirmed the primary's removal")
	}
	h.step(ISRCommitted{Epoch: 5, ISR: []string{"b", "c"}, Proposed: true})
	c, ok := h.done[1]
	if !ok || c.Err != nil || c.Result.Attr.GetFid() != 22 {
		t.Fatalf("want the new primary b's result, got %+v", c)
	}
	if h.m.Primary() != "b" {
		t.Fatalf("primary %q, want b", h.m.Primary())
	}
	// The old primary's late ack (on a closed stream) answers nothing again.
	h.ack("a", 1, 0, &brickpb.OpResult{Seq: 1})
	h.ack("b", 1, 0, &brickpb.OpResult{Seq: 1})
}

func TestMachineNewPrimaryAnswersLater(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	h.step(Submit{Op: mkdir("d"), Waiter: 1, WantResult: true})
	h.step(StreamDown{Brick: "a", Gen: h.gens["a"]})
	h.up("a", 7, 0) // claims ops this head never sequenced: out at once
	if ps := h.proposals(); len(ps) != 1 || !slices.Equal(ps[0].ISR, []string{"b", "c"}) {
		t.Fatalf("want [b c] proposed, got %v", h.last)
	}
	h.step(ISRCommitted{Epoch: 5, ISR: []string{"b", "c"}, Proposed: true})
	if _, ok := h.done[1]; ok {
		t.Fatal("answered before any ISR brick reported a result")
	}
	h.ack("c", 1, 0, &brickpb.OpResult{Seq: 1, Errno: uint32(syscall.EEXIST)})
	if _, ok := h.done[1]; ok {
		t.Fatal("answered from c, which is not the primary")
	}
	h.ack("b", 1, 0, &brickpb.OpResult{Seq: 1, Errno: uint32(syscall.EEXIST)})
	if c := h.done[1]; c.Result.GetErrno() != uint32(syscall.EEXIST) {
		t.Fatalf("want EEXIST from b, got %+v", c)
	}
}

func TestMachineDivergedBrickIsDropped(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	h.step(Submit{Op: mkdir("d"), Waiter: 1, WantResult: true})
	h.ack("c", 1, 0, &brickpb.OpResult{Seq: 1, Errno: uint32(syscall.ENOENT)})
	h.ack("a", 1, 0, &brickpb.OpResult{Seq: 1})
	ps := h.proposals()
	if len(ps) != 1 || !slices.Equal(ps[0].ISR, []string{"a", "b"}) {
		t.Fatalf("want [a b] proposed after c diverged, got %v", h.last)
	}
	if c := h.done[1]; c.Err != nil || c.Result.GetErrno() != 0 {
		t.Fatalf("the primary's answer stands: %+v", c)
	}
	if st := h.m.Status(); st.State != StateDegraded || st.Bricks[2].Leaving == "" {
		t.Fatalf("status %+v", st)
	}
}

func TestMachineUnresumableBrickLeaves(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	h.step(Submit{Op: write(1), Waiter: 1})
	for _, id := range []string{"a", "b", "c"} {
		h.ack(id, 1, 0)
	}
	h.step(StreamDown{Brick: "c", Gen: h.gens["c"], Err: errors.New("reset")})
	if h.gens["c"] == 3 {
		t.Fatal("no immediate reconnect after a working stream broke")
	}
	h.up("c", 0, 0) // crashed: lost seq 1, which the head no longer retains
	ps := h.proposals()
	if len(ps) != 1 || !slices.Equal(ps[0].ISR, []string{"a", "b"}) {
		t.Fatalf("want [a b] proposed for an unresumable brick, got %v", h.last)
	}
}

func TestMachineResumesFromAppliedPlusOne(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	for i := uint64(1); i <= 5; i++ {
		h.step(Submit{Op: write(1), Waiter: i})
	}
	h.ack("a", 5, 0)
	h.ack("b", 5, 0)
	h.step(StreamDown{Brick: "c", Gen: h.gens["c"], Err: errors.New("reset")})
	h.step(Submit{Op: write(1), Waiter: 6})
	if got := h.sent("c"); got != nil {
		t.Fatalf("sent %v to a brick with no stream", got)
	}
	h.up("c", 3, 0)
	if got := h.sent("c"); !slices.Equal(got, []uint64{4, 5, 6}) {
		t.Fatalf("resend after reconnect: %v, want [4 5 6]", got)
	}
	// An ack from the dead stream changes nothing.
	h.step(Ack{Brick: "c", Gen: h.gens["c"] - 1, Ack: &brickpb.ReplicateAck{AppliedSeq: 6}})
	if st := h.m.Status(); st.Bricks[2].Applied != 3 {
		t.Fatalf("stale-generation ack was taken: %+v", st.Bricks[2])
	}
}

func TestMachineFencedByBrick(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	h.step(Submit{Op: mkdir("x"), Waiter: 1, WantResult: true})
	h.step(SyncReq{Waiter: 2})
	h.step(Ack{Brick: "b", Gen: h.gens["b"], Ack: &brickpb.ReplicateAck{Error: "stale epoch 5, promised 6", Errno: uint32(syscall.ESTALE)}})
	var fe *FencedError
	for w := uint64(1); w <= 2; w++ {
		if c := h.done[w]; !errors.As(c.Err, &fe) || fe.Epoch != 5 {
			t.Fatalf("waiter %d: want FencedError at epoch 5, got %+v", w, c)
		}
	}
	h.step(Submit{Op: write(1), Waiter: 3})
	h.ack("a", 2, 2, &brickpb.OpResult{Seq: 1})
	if c := h.done[3]; !errors.Is(c.Err, ErrFenced) {
		t.Fatalf("write after fence: %+v", c)
	}
	for _, a := range h.last {
		if _, ok := a.(Send); ok {
			t.Fatal("fenced head sent ops")
		}
	}
	if st := h.m.Status(); st.State != StateFenced {
		t.Fatalf("state %q", st.State)
	}
}

func TestMachineStartsReadOnlyBelowMinISR(t *testing.T) {
	h := newMH(t, func(c *Config) { c.ISR = []string{"a"} })
	h.step(Submit{Op: write(1), Waiter: 1})
	if c := h.done[1]; !errors.Is(c.Err, syscall.EROFS) {
		t.Fatalf("want EROFS, got %+v", c)
	}
	if st := h.m.Status(); st.State != StateReadOnly {
		t.Fatalf("state %q", st.State)
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	c := Config{Epoch: 1, Placement: []string{"a", "b"}, ISR: []string{"a", "z"}, MinISR: 1}
	if err := c.Validate(); err == nil || !containsAll(err.Error(), "ISR", "z") {
		t.Fatalf("got %v", err)
	}
	c.ISR = []string{"a"}
	c.MinISR = 3
	if err := c.Validate(); err == nil || !containsAll(err.Error(), "MinISR") {
		t.Fatalf("got %v", err)
	}
}

// An op answered when it was sequenced (a write, or a create the mount
// answered itself) that the primary then fails is reported, as EIO, by the
// first Sync covering it, to every waiter of that barrier, and only then.
func TestMachineReportsEarlyOpsThatFailed(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	h.step(Submit{Op: write(1), Waiter: 1})                     // seq 1, fails
	h.step(SyncReq{Waiter: 2})                                  // barrier seq 2
	h.step(Submit{Op: mkdir("d"), Waiter: 3})                   // seq 3, early, fails
	h.step(Submit{Op: mkdir("e"), Waiter: 4, WantResult: true}) // seq 4: its waiter is told
	h.step(SyncReq{Waiter: 5})                                  // barrier seq 5
	h.step(SyncReq{Waiter: 6})                                  // shares it
	efbig := &brickpb.OpResult{Seq: 1, Errno: uint32(syscall.EFBIG)}
	// A non-primary's report alone says nothing: only the primary's counts.
	h.ack("b", 2, 2, efbig, &brickpb.OpResult{Seq: 2})
	h.ack("c", 2, 2, efbig, &brickpb.OpResult{Seq: 2})
	h.ack("a", 2, 2, efbig, &brickpb.OpResult{Seq: 2})
	c2 := h.done[2]
	var lost *LostOpsError
	if !errors.As(c2.Err, &lost) || !errors.Is(c2.Err, syscall.EIO) || len(lost.Ops) != 1 {
		t.Fatalf("sync covering a failed early write: %v, want a LostOpsError (EIO) naming it", c2.Err)
	}
	res := []*brickpb.OpResult{{Seq: 3, Errno: uint32(syscall.EEXIST)}, {Seq: 4, Errno: uint32(syscall.EEXIST)}, {Seq: 5}}
	for _, id := range []string{"b", "c"} {
		h.ack(id, 5, 5, res...)
	}
	if _, ok := h.done[5]; ok {
		t.Fatal("sync completed before the primary synced")
	}
	h.ack("a", 5, 5, res...)
	if c := h.done[4]; c.Err != nil || c.Result.GetErrno() != uint32(syscall.EEXIST) {
		t.Fatalf("waited-for op: %+v, want its errno", c)
	}
	for _, w := range []uint64{5, 6} {
		err := h.done[w].Err
		if !errors.As(err, &lost) || len(lost.Ops) != 1 || !strings.Contains(lost.Ops[0], `op 3 (OP_MKDIR`) {
			t.Fatalf("waiter %d of the barrier covering the failed early mkdir: %v", w, err)
		}
	}
	h.step(Submit{Op: write(1), Waiter: 7})
	h.step(SyncReq{Waiter: 8})
	for _, id := range []string{"a", "b", "c"} {
		h.ack(id, 7, 7, &brickpb.OpResult{Seq: 6}, &brickpb.OpResult{Seq: 7})
	}
	if err := h.done[8].Err; err != nil {
		t.Fatalf("a failure is reported once; the next sync got %v", err)
	}
}

// A write or setattr the primary failed with ENOENT changed a file that no
// longer exists: nothing readable was lost, and no fsync fails for it.
func TestMachineEarlyOpOnGoneFileIsNotLost(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	h.step(Submit{Op: write(1), Waiter: 1})
	h.step(Submit{Op: &brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: 2, Valid: 32}, Waiter: 2})
	h.step(SyncReq{Waiter: 3})
	gone := uint32(syscall.ENOENT)
	for _, id := range []string{"a", "b", "c"} {
		h.ack(id, 3, 3, &brickpb.OpResult{Seq: 1, Errno: gone}, &brickpb.OpResult{Seq: 2, Errno: gone}, &brickpb.OpResult{Seq: 3})
	}
	if c, ok := h.done[3]; !ok || c.Err != nil {
		t.Fatalf("sync after ops on a file that is gone: %+v (done %v)", c, ok)
	}
}

// PrimaryApplied tells local reads how far the primary has applied, and
// through the stream generation, when the tree they read may have been
// replaced: never while the primary is out of the ISR or its stream down.
func TestMachinePrimaryApplied(t *testing.T) {
	h := newMH(t, nil)
	if _, _, ok := h.m.PrimaryApplied(); ok {
		t.Fatal("ok before the primary's stream is up")
	}
	h.allUp()
	_, gen1, ok := h.m.PrimaryApplied()
	if !ok {
		t.Fatal("not ok with every stream up")
	}
	h.step(Submit{Op: write(1), Waiter: 1})
	if applied, _, _ := h.m.PrimaryApplied(); applied != 0 {
		t.Fatalf("applied %d before any ack", applied)
	}
	h.ack("b", 1, 0)
	if applied, _, _ := h.m.PrimaryApplied(); applied != 0 {
		t.Fatalf("applied %d after another brick's ack", applied)
	}
	h.ack("a", 1, 0)
	if applied, gen, ok := h.m.PrimaryApplied(); applied != 1 || gen != gen1 || !ok {
		t.Fatalf("after the primary's ack: %d %d %v, want 1 %d true", applied, gen, ok, gen1)
	}
	h.step(StreamDown{Brick: "a", Gen: h.gens["a"], Err: errors.New("reset")})
	if _, _, ok := h.m.PrimaryApplied(); ok {
		t.Fatal("ok with the primary's stream down")
	}
	h.advance(time.Second) // the reconnect
	h.up("a", 1, 0)
	_, gen2, ok := h.m.PrimaryApplied()
	if !ok || gen2 <= gen1 {
		t.Fatalf("after the reconnect: gen %d (before %d), ok %v; want a newer generation", gen2, gen1, ok)
	}
	// Out of the ISR, another brick is the primary.
	h.step(ISRCommitted{Epoch: 5, ISR: []string{"b", "c"}, Index: 10})
	if h.m.Primary() != "b" {
		t.Fatalf("primary %s, want b", h.m.Primary())
	}
	h.ack("b", 1, 0) // no news; b's position stands
	if applied, _, ok := h.m.PrimaryApplied(); !ok || applied != 1 {
		t.Fatalf("b as the primary: %d %v", applied, ok)
	}
	h.step(Stop{Err: ErrClosed})
	if _, _, ok := h.m.PrimaryApplied(); ok {
		t.Fatal("ok after Stop")
	}
}

// A LeaseProof counts for the ISR bricks it names, and only for them.
func TestMachineLeaseProof(t *testing.T) {
	h := newMH(t, nil)
	h.allUp()
	at := h.now.Add(time.Second)
	h.step(LeaseProof{Bricks: []string{"a", "b", "x"}, At: at})
	if !h.m.LastAck().IsZero() {
		t.Fatal("held with brick c unproved")
	}
	h.step(LeaseProof{Bricks: []string{"c"}, At: at.Add(time.Second)})
	if got := h.m.LastAck(); !got.Equal(at) {
		t.Fatalf("LastAck %v, want the oldest proof %v", got, at)
	}
	h.step(ISRCommitted{Epoch: 5, ISR: []string{"b", "c"}, Index: 10})
	h.step(LeaseProof{Bricks: []string{"a", "b", "c"}, At: at.Add(2 * time.Second)})
	if got := h.m.LastAck(); !got.Equal(at.Add(2 * time.Second)) {
		t.Fatalf("LastAck %v after the ISR shrank, want %v", got, at.Add(2*time.Second))
	}
}

// The usage estimate counts what a write says it grows the volume by (0
// for an overwrite), a write that says nothing by its bytes, and settles
// on the primary's figure once it reports.
func TestMachineUsedEstimateCountsGrowth(t *testing.T) {
	h := newMH(t, func(c *Config) { c.MaxInflightBytes = 1 << 30 })
	h.allUp()
	h.step(Ack{Brick: "a", Gen: h.gens["a"], Ack: &brickpb.ReplicateAck{UsedBytes: 1000}})
	if u, ok := h.m.UsedEstimate(); !ok || u != 1000 {
		t.Fatalf("estimate %d (%v) after the primary reported 1000", u, ok)
	}
	growing := func(n int, g int64) *brickpb.Op {
		op := write(n)
		op.Growth = &g
		return op
	}
	h.step(Submit{Op: growing(4096, 0), Waiter: 1})
	if u, _ := h.m.UsedEstimate(); u != 1000 {
		t.Errorf("estimate %d after an overwrite of 4096 bytes, want 1000", u)
	}
	h.step(Submit{Op: growing(4096, 100), Waiter: 2})
	if u, _ := h.m.UsedEstimate(); u != 1100 {
		t.Errorf("estimate %d after a write growing 100 bytes, want 1100", u)
	}
	plain := write(4096) // no growth said: its bytes
	h.step(Submit{Op: plain, Waiter: 3})
	if u, _ := h.m.UsedEstimate(); u != 1100+opSize(plain) {
		t.Errorf("estimate %d after a write of 4096 bytes without growth, want %d", u, 1100+opSize(plain))
	}
	// The primary applied the first two and reports.
	h.step(Ack{Brick: "a", Gen: h.gens["a"], Ack: &brickpb.ReplicateAck{AppliedSeq: 2, SyncedSeq: 2, UsedBytes: 1100}})
	if u, _ := h.m.UsedEstimate(); u != 1100+opSize(plain) {
		t.Errorf("estimate %d once the primary reported 1100 at seq 2, want %d", u, 1100+opSize(plain))
	}
	for _, id := range []string{"a", "b", "c"} {
		h.step(Ack{Brick: id, Gen: h.gens[id], Ack: &brickpb.ReplicateAck{AppliedSeq: 3, SyncedSeq: 3, UsedBytes: 5196}})
	}
	if u, _ := h.m.UsedEstimate(); u != 5196 {
		t.Errorf("estimate %d with every op applied and trimmed, want the primary's 5196", u)
	}
}
