package head

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

var (
	seedFlag  = flag.Int64("seed", 0, "run TestRandomSchedules with this seed only")
	stepsFlag = flag.Int("steps", 3000, "steps per TestRandomSchedules run")
	runsFlag  = flag.Int("runs", 150, "TestRandomSchedules runs (without -seed)")
	traceLen  = 60
)

// TestRandomSchedules drives a Machine through random interleavings of
// submits, syncs, deliveries, lost acks, broken streams, crashes, ticks,
// Raft outcomes, op log reads and truncations, heals (the head's own and
// external full heals), divergences and fences, from a start where the
// bricks hold ops of an older epoch (some outside the ISR, some of them
// with ops the volume never committed), checking after every step:
//   - every Sync that succeeded covers ops synced on every brick of the ISR
//     (as committed in Raft) at that moment, and the ISR had ≥ min-isr bricks;
//   - nothing completes successfully after the head reported fenced;
//   - every brick receives a gapless sequence at the head's epoch (healing
//     streams included: exactly once, in order, from its applied seq);
//   - the head proposes at its own epoch, shrinking, or growing by one
//     brick that holds no op the volume never committed; and when Raft
//     commits such a growth, the added brick has fsync'd (its synced seq,
//     the brick's truth) every op covered by a Sync completed before;
//   - nothing is proposed, sent or read after the head reported fenced;
//   - every waiter completes exactly once, and (after a fault-free
//     stabilisation) at all; and then, unless the head is read-only (every
//     brick lost some unsynced op), every brick outside the ISR has been
//     healed back or the head reports it needs a full resync.
func TestRandomSchedules(t *testing.T) {
	if *seedFlag != 0 {
		if err := runSchedule(*seedFlag, *stepsFlag); err != nil {
			t.Fatalf("seed %d: %v", *seedFlag, err)
		}
		return
	}
	base := time.Now().UnixNano()
	for i := range *runsFlag {
		seed := base + int64(i)
		if err := runSchedule(seed, *stepsFlag); err != nil {
			t.Fatalf("seed %d: %v\nrerun: go test ./replica/head -run TestRandomSchedules -seed %d -v", seed, err, seed)
		}
	}
}

type simBrick struct {
	id              string
	gen             uint64 // stream open at the brick (0: none)
	promised        uint64
	applied, synced uint64
	inbox           [][]*brickpb.Op
	outbox          []simMsg
	diverge         bool              // flip the errno of the next op
	silent          bool              // the stream delivers no more acks (a partition)
	epochOf         map[uint64]uint64 // epoch of each applied op (5: never committed)
	logFirst        uint64            // its op log holds no op before
}

// uncommitted: the brick holds an op the volume never committed.
func (b *simBrick) uncommitted() bool {
	for s := uint64(1); s <= b.applied; s++ {
		if b.epochOf[s] == badEpoch {
			return true
		}
	}
	return false
}

const (
	oldEpoch = 6 // the epoch of the ops before the head's StartSeq
	badEpoch = 5 // ops a brick got from a head whose successor never had them
)

type simMsg struct {
	gen uint64
	ack *brickpb.ReplicateAck
}

type simWaiter struct {
	op    *brickpb.Op // nil: a sync
	prior []*brickpb.Op
	done  bool
}

type sim struct {
	rng       *rand.Rand
	m         *Machine
	cfg       Config
	now       time.Time
	step      int
	raftISR   []string
	raftIndex uint64
	bricks    map[string]*simBrick
	proposal  *ProposeISR
	opening   map[string]uint64
	waiters   map[uint64]*simWaiter
	ops       []*brickpb.Op          // every submitted op, in order
	seqOps    map[uint64]*brickpb.Op // the volume's committed op at each seq
	fetches   []HealFetch            // outstanding op log reads
	flipped   map[uint64]bool        // seqs some brick answered wrongly
	nextW     uint64
	fenced    bool
	fenceAt   int
	covers    []uint64 // seqs covered by successful syncs
	trace     []string
	err       error
}

func runSchedule(seed int64, steps int) (err error) {
	rng := rand.New(rand.NewSource(seed))
	ids := []string{"a", "b", "c", "d"}[:3+rng.Intn(2)]
	start := uint64(rng.Intn(3) * 4) // ops 1..start exist, at oldEpoch
	isr := ids
	if rng.Intn(2) == 0 {
		isr = ids[:len(ids)-1] // the last brick starts outside the ISR
	}
	cfg := Config{
		Volume: "v", Epoch: 7, StartSeq: start, Placement: ids, ISR: isr, MinISR: 1 + rng.Intn(2), Primary: ids[rng.Intn(len(ids))],
		ReplicaTimeout: time.Second, MaxInflightBytes: int64(500 + rng.Intn(3000)),
		ProposalRetry: 200 * time.Millisecond, ReconnectBackoff: 50 * time.Millisecond, MaxReconnectBackoff: 400 * time.Millisecond,
		HealRetry: 300 * time.Millisecond, HealBytesPerSec: []int64{0, 20000, 100000}[rng.Intn(3)],
	}
	m, err := New(cfg)
	if err != nil {
		return err
	}
	s := &sim{
		rng: rng, m: m, cfg: cfg, now: time.Unix(5000, 0), raftISR: slices.Clone(isr),
		bricks: map[string]*simBrick{}, flipped: map[uint64]bool{}, opening: map[string]uint64{}, waiters: map[uint64]*simWaiter{},
		fenceAt: steps + 1, seqOps: map[uint64]*brickpb.Op{},
	}
	if rng.Intn(3) == 0 {
		s.fenceAt = rng.Intn(steps)
	}
	for seq := uint64(1); seq <= start; seq++ {
		s.seqOps[seq] = &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 9, Seq: seq, Epoch: oldEpoch, Data: make([]byte, 50)}
	}
	for _, id := range ids {
		b := &simBrick{id: id, applied: start, epochOf: map[uint64]uint64{}}
		if !slices.Contains(isr, id) { // behind, or ahead with ops never committed
			b.applied = uint64(rng.Intn(int(start) + 3))
		}
		bad := b.applied + 1
		if !slices.Contains(isr, id) && rng.Intn(2) == 0 {
			bad = uint64(rng.Intn(int(b.applied) + 1))
		}
		for seq := uint64(1); seq <= b.applied; seq++ {
			b.epochOf[seq] = oldEpoch
			if seq > start || seq >= bad {
				b.epochOf[seq] = badEpoch
			}
		}
		b.synced = uint64(rng.Intn(int(b.applied) + 1))
		s.bricks[id] = b
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nconfig: ISR %v min-isr %d primary %s window %d\nlast events:\n%s\nstatus: %+v",
				err, ids, cfg.MinISR, cfg.Primary, cfg.MaxInflightBytes, strings.Join(s.trace, "\n"), s.m.Status())
		}
	}()
	s.do(Tick{Now: s.now})
	for s.step = 0; s.step < steps && s.err == nil; s.step++ {
		s.random()
	}
	for i := 0; i < 400 && s.err == nil; i++ {
		s.stabilise()
	}
	if s.err != nil {
		return s.err
	}
	for w, sw := range s.waiters {
		if !sw.done {
			return fmt.Errorf("waiter %d (%v) never completed after stabilisation", w, sw.op.GetType())
		}
	}
	if !s.fenced {
		for _, c := range s.covers {
			s.checkDurable(c, "at the end")
		}
		st := s.m.Status()
		for _, h := range st.Heals {
			// Read-only with ops lost by every brick (unsynced, crashed)
			// is stuck whatever heal does.
			if h.State != HealNeedsFull && st.State != StateReadOnly {
				return fmt.Errorf("brick %s still out of the ISR after stabilisation: %+v", h.ID, h)
			}
		}
	}
	return s.err
}

func (s *sim) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("step %d: %s", s.step, fmt.Sprintf(format, args...))
	}
}

func (s *sim) note(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf("%5d ", s.step)+fmt.Sprintf(format, args...))
	if len(s.trace) > traceLen {
		s.trace = s.trace[1:]
	}
}

func (s *sim) do(ev Event) {
	s.note("event %T %s", ev, brief(ev))
	for _, a := range s.m.Step(ev) {
		s.act(a)
	}
	if st := s.m.Status(); !sameSet(st.ISR, s.raftISR) {
		s.fail("machine ISR %v differs from Raft's %v", st.ISR, s.raftISR)
	}
}

func brief(ev Event) string {
	switch e := ev.(type) {
	case Ack:
		return fmt.Sprintf("%s/%d applied %d synced %d results %d err %q", e.Brick, e.Gen, e.Ack.AppliedSeq, e.Ack.SyncedSeq, len(e.Ack.Results), e.Ack.Error)
	case Submit:
		return fmt.Sprintf("w%d %v", e.Waiter, e.Op.Type)
	default:
		return fmt.Sprintf("%+v", e)
	}
}

func (s *sim) act(a Action) {
	switch a := a.(type) {
	case Send:
		s.note("  send %s/%d seqs %d..%d", a.Brick, a.Gen, a.Ops[0].Seq, a.Ops[len(a.Ops)-1].Seq)
		if s.fenced {
			s.fail("sent ops after being fenced")
		}
		for i, op := range a.Ops {
			if op.Epoch != s.cfg.Epoch || i > 0 && op.Seq != a.Ops[i-1].Seq+1 {
				s.fail("bad batch to %s: op %d epoch %d", a.Brick, op.Seq, op.Epoch)
			}
			if c := s.seqOps[op.Seq]; c == nil {
				s.seqOps[op.Seq] = op
			} else if c.Type != op.Type || len(c.Data) != len(op.Data) {
				s.fail("op %d sent to %s is not the volume's op %d", op.Seq, a.Brick, op.Seq)
			}
		}
		if b := s.bricks[a.Brick]; b.gen == a.Gen {
			b.inbox = append(b.inbox, a.Ops)
		}
	case Complete:
		s.note("  complete w%d err=%v", a.Waiter, a.Err)
		s.complete(a)
	case ProposeISR:
		s.note("  propose %v", a.ISR)
		if s.proposal != nil {
			s.fail("second proposal %v while %v is outstanding", a.ISR, s.proposal.ISR)
		}
		if s.fenced {
			s.fail("proposal %v after being fenced", a.ISR)
		}
		if x := s.added(a.ISR); x != nil {
			if a.Epoch != s.cfg.Epoch || len(a.ISR) != len(s.raftISR)+1 {
				s.fail("bad growth %+v (Raft ISR %v)", a, s.raftISR)
			}
			if x.uncommitted() {
				s.fail("proposal %v adds brick %s, which holds ops the volume never committed (epochs %v)", a.ISR, x.id, x.epochOf)
			}
		} else if a.Epoch != s.cfg.Epoch || len(a.ISR) < s.cfg.MinISR || len(a.ISR) >= len(s.raftISR) {
			s.fail("bad proposal %+v (Raft ISR %v, min-isr %d)", a, s.raftISR, s.cfg.MinISR)
		}
		for _, id := range s.raftISR {
			if len(a.ISR) > len(s.raftISR) && !slices.Contains(a.ISR, id) {
				s.fail("proposal %v both grows and shrinks the ISR %v", a.ISR, s.raftISR)
			}
		}
		s.proposal = &a
	case HealFetch:
		s.note("  fetch %s/%d from %s after %d up to %d", a.Brick, a.Fetch, a.Source, a.AfterSeq, a.UpTo)
		if s.fenced {
			s.fail("op log read after being fenced")
		}
		s.fetches = append(s.fetches, a)
	case CancelFetch:
		s.fetches = slices.DeleteFunc(s.fetches, func(f HealFetch) bool { return f.Brick == a.Brick && f.Fetch == a.Fetch })
	case Reconnect:
		s.note("  reconnect %s/%d", a.Brick, a.Gen)
		s.opening[a.Brick] = a.Gen
	case CloseStream:
		if b := s.bricks[a.Brick]; b.gen == a.Gen {
			b.gen, b.inbox, b.outbox, b.silent = 0, nil, nil, false
		}
	case StateChanged:
		s.note("  state %s: %s", a.State, a.Reason)
		if a.State == StateFenced {
			s.fenced = true
		}
	}
}

func (s *sim) complete(c Complete) {
	w := s.waiters[c.Waiter]
	if w == nil || w.done {
		s.fail("completion of unknown or finished waiter %d", c.Waiter)
		return
	}
	w.done = true
	if c.Err == nil && s.fenced {
		s.fail("waiter %d completed successfully after the head was fenced", c.Waiter)
	}
	if c.Err != nil || w.op != nil {
		if w.op != nil && c.Err == nil && c.Result.GetSeq() != w.op.Seq {
			s.fail("waiter %d answered with seq %d, its op has seq %d", c.Waiter, c.Result.GetSeq(), w.op.Seq)
		}
		if w.op != nil && c.Err == nil && !s.flipped[w.op.Seq] && c.Result.Errno != expectErrno(w.op) {
			s.fail("waiter %d got errno %d, deterministic answer is %d", c.Waiter, c.Result.Errno, expectErrno(w.op))
		}
		return
	}
	var cover uint64
	for _, op := range w.prior {
		cover = max(cover, op.Seq)
	}
	for _, op := range w.prior {
		if op.Seq == 0 && !s.failedOrCancelled(op) {
			s.fail("sync completed before an earlier op was sequenced")
		}
	}
	if len(s.raftISR) < s.cfg.MinISR {
		s.fail("sync completed with ISR %v below min-isr %d", s.raftISR, s.cfg.MinISR)
	}
	s.checkDurable(cover, fmt.Sprintf("when sync w%d completed", c.Waiter))
	s.covers = append(s.covers, cover)
}

// added is the one brick isr adds to Raft's ISR, or nil.
func (s *sim) added(isr []string) *simBrick {
	for _, id := range isr {
		if !slices.Contains(s.raftISR, id) {
			return s.bricks[id]
		}
	}
	return nil
}

// answerFetch answers the oldest outstanding op log read, or fails it.
func (s *sim) answerFetch(ok bool) {
	f := s.fetches[0]
	s.fetches = s.fetches[1:]
	src := s.bricks[f.Source]
	ev := HealFetched{Brick: f.Brick, Fetch: f.Fetch}
	switch {
	case !ok:
		ev.Err = errors.New("source unreachable")
	case src.promised > s.cfg.Epoch:
		ev.Err = fmt.Errorf("promised epoch %d: %w", src.promised, ErrStaleEpoch)
	case f.AfterSeq > src.applied:
		ev.Err = fmt.Errorf("asked after %d, applied %d", f.AfterSeq, src.applied)
	case f.AfterSeq < src.applied && f.AfterSeq+1 < src.logFirst:
		ev.Err = &LogTruncatedError{Source: src.id, AfterSeq: f.AfterSeq, FirstSeq: src.logFirst}
	default:
		var size int64
		for seq := f.AfterSeq + 1; seq <= src.applied && seq <= f.UpTo && size < f.MaxBytes; seq++ {
			op := proto.Clone(s.seqOps[seq]).(*brickpb.Op)
			op.Epoch, op.OriginEpoch = src.epochOf[seq], src.epochOf[seq]
			ev.Ops = append(ev.Ops, op)
			size += opSize(op)
		}
	}
	s.do(ev)
}

func (s *sim) failedOrCancelled(op *brickpb.Op) bool {
	for _, w := range s.waiters {
		if w.op == op {
			return w.done
		}
	}
	return false
}

func (s *sim) checkDurable(cover uint64, when string) {
	for _, id := range s.raftISR {
		if b := s.bricks[id]; b.synced < cover {
			s.fail("%s: ISR brick %s synced only %d of %d", when, id, b.synced, cover)
		}
	}
}

func expectErrno(op *brickpb.Op) uint32 {
	if op.Type != brickpb.OpType_OP_WRITE && op.Type != brickpb.OpType_OP_SYNC && op.Seq%4 == 0 {
		return uint32(syscall.EEXIST)
	}
	return 0
}

func (s *sim) submit(op *brickpb.Op, want bool) {
	s.nextW++
	w := &simWaiter{op: op}
	s.waiters[s.nextW] = w
	if op == nil {
		w.prior = slices.Clone(s.ops)
		s.do(SyncReq{Waiter: s.nextW})
		return
	}
	s.ops = append(s.ops, op)
	s.do(Submit{Op: op, Waiter: s.nextW, WantResult: want})
}

// deliver applies the oldest batch in b's inbox.
func (s *sim) deliver(b *simBrick) {
	batch := b.inbox[0]
	b.inbox = b.inbox[1:]
	ack := &brickpb.ReplicateAck{}
	for _, op := range batch {
		if op.Epoch < b.promised {
			ack.Error, ack.Errno = fmt.Sprintf("stale epoch %d, promised %d", op.Epoch, b.promised), uint32(syscall.ESTALE)
			break
		}
		if op.Seq != b.applied+1 {
			s.fail("brick %s got seq %d after %d: a gap or a duplicate", b.id, op.Seq, b.applied)
			return
		}
		errno := expectErrno(op)
		if b.diverge {
			errno, b.diverge = uint32(syscall.EIO), false
			s.flipped[op.Seq] = true
		}
		b.applied = op.Seq
		b.epochOf[op.Seq] = OriginEpoch(op)
		if op.Type == brickpb.OpType_OP_SYNC {
			b.synced = b.applied
		}
		ack.Results = append(ack.Results, &brickpb.OpResult{Seq: op.Seq, Errno: errno})
	}
	ack.AppliedSeq, ack.SyncedSeq = b.applied, b.synced
	if !b.silent {
		b.outbox = append(b.outbox, simMsg{gen: b.gen, ack: ack})
	}
	if ack.Error != "" {
		b.gen, b.inbox = 0, nil // the brick ends the stream after the error
	}
}

func (s *sim) open(id string, ok bool) {
	gen := s.opening[id]
	delete(s.opening, id)
	b := s.bricks[id]
	switch {
	case !ok:
		s.do(StreamDown{Brick: id, Gen: gen, Err: errors.New("dial failed")})
	case b.promised > s.cfg.Epoch:
		s.do(Fenced{Brick: id, Msg: fmt.Sprintf("promised epoch %d", b.promised)})
	default:
		b.gen, b.inbox, b.outbox, b.silent = gen, nil, nil, false
		s.do(StreamUp{Brick: id, Gen: gen, Applied: b.applied, Synced: b.synced, AppliedEpoch: b.epochOf[b.applied]})
	}
}

func (s *sim) breakStream(b *simBrick) {
	gen := b.gen
	b.gen, b.inbox, b.outbox, b.silent = 0, nil, nil, false
	if gen != 0 {
		s.do(StreamDown{Brick: b.id, Gen: gen, Err: errors.New("reset")})
	}
}

func (s *sim) resolve(outcome int) {
	p := s.proposal
	s.proposal = nil
	switch outcome {
	case 0:
		if x := s.added(p.ISR); x != nil {
			for _, c := range s.covers {
				if x.synced < c {
					s.fail("Raft adds brick %s to the ISR with synced seq %d, but a completed Sync covered seq %d", x.id, x.synced, c)
				}
			}
		}
		s.raftIndex++
		s.raftISR = slices.Clone(p.ISR)
		s.do(ISRCommitted{Epoch: p.Epoch, ISR: p.ISR, Index: s.raftIndex, Proposed: true})
	case 1:
		s.do(ISRProposalFailed{Err: errors.New("raft: no leader")})
	default:
		s.do(ISRProposalFailed{Err: ErrStaleEpoch, Stale: true})
	}
}

func (s *sim) pick(cond func(*simBrick) bool) *simBrick {
	var c []*simBrick
	for _, id := range s.cfg.Placement {
		if b := s.bricks[id]; cond(b) {
			c = append(c, b)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[s.rng.Intn(len(c))]
}

func (s *sim) random() {
	r := s.rng.Intn(100)
	any := func(*simBrick) bool { return true }
	switch {
	case r < 14:
		s.submit(&brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 9, Data: make([]byte, s.rng.Intn(400))}, false)
	case r < 21:
		s.submit(&brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "d"}, true)
	case r < 26:
		s.submit(nil, false)
	case r < 50:
		if b := s.pick(func(b *simBrick) bool { return len(b.inbox) > 0 }); b != nil {
			s.deliver(b)
		}
	case r < 72:
		if b := s.pick(func(b *simBrick) bool { return len(b.outbox) > 0 }); b != nil {
			msg := b.outbox[0]
			b.outbox = b.outbox[1:]
			s.do(Ack{Brick: b.id, Gen: msg.gen, Ack: msg.ack})
		}
	case r < 74:
		if b := s.pick(func(b *simBrick) bool { return b.gen != 0 }); b != nil {
			b.outbox, b.silent = nil, true // partitioned: acks stop until the stream is replaced
		}
	case r < 76:
		if b := s.pick(func(b *simBrick) bool { return b.gen != 0 }); b != nil {
			s.breakStream(b)
		}
	case r < 77:
		if b := s.pick(any); b != nil {
			b.applied = b.synced // lose what was not fsync'd
			s.breakStream(b)
		}
	case r < 83:
		if b := s.pick(func(b *simBrick) bool { return s.opening[b.id] != 0 }); b != nil {
			s.open(b.id, s.rng.Intn(5) > 0)
		}
	case r < 90:
		s.now = s.now.Add(time.Duration(s.rng.Intn(400)) * time.Millisecond)
		s.do(Tick{Now: s.now})
	case r < 93:
		if s.proposal != nil {
			o := s.rng.Intn(4) // 0, 1: commit; 2: unreachable; 3: stale, if allowed
			if o == 3 && s.step < s.fenceAt {
				o = 2
			}
			s.resolve(max(o-1, 0))
		}
	case r < 96 && len(s.fetches) > 0:
		s.answerFetch(s.rng.Intn(6) > 0)
	case r < 97 && s.rng.Intn(4) == 0:
		if b := s.pick(any); b != nil {
			b.logFirst = uint64(s.rng.Intn(int(b.applied) + 2))
		}
	case r < 97:
		if s.nextW > 0 {
			w := uint64(1 + s.rng.Intn(int(s.nextW)))
			if !s.waiters[w].done {
				s.do(Cancel{Waiter: w, Err: errors.New("ctx done")})
			}
		}
	case r < 98:
		s.heal()
	case r < 99:
		if b := s.pick(any); b != nil {
			b.diverge = true
		}
	default:
		if s.step >= s.fenceAt {
			if b := s.pick(any); b != nil {
				b.promised = s.cfg.Epoch + 1
			}
		}
	}
}

// heal copies the most advanced ISR brick onto a brick outside the ISR,
// durably, and commits it into the ISR (what heal does).
func (s *sim) heal() {
	out := s.pick(func(b *simBrick) bool { return !slices.Contains(s.raftISR, b.id) })
	if out == nil || s.fenced {
		return
	}
	var src *simBrick
	for _, id := range s.raftISR {
		if b := s.bricks[id]; src == nil || b.applied > src.applied {
			src = b
		}
	}
	if src == nil {
		return
	}
	s.breakStream(out)
	out.applied, out.synced, out.diverge = src.applied, src.applied, false
	out.epochOf = maps.Clone(src.epochOf)
	s.raftIndex++
	var isr []string
	for _, id := range s.cfg.Placement {
		if id == out.id || slices.Contains(s.raftISR, id) {
			isr = append(isr, id)
		}
	}
	s.raftISR = isr
	s.do(ISRCommitted{Epoch: s.cfg.Epoch, ISR: isr, Index: s.raftIndex})
}

// stabilise runs one fault-free round: opens succeed, everything is
// delivered, Raft commits, time moves a little.
func (s *sim) stabilise() {
	for _, id := range s.cfg.Placement {
		if s.opening[id] != 0 {
			s.open(id, true)
		}
	}
	for _, id := range s.cfg.Placement {
		b := s.bricks[id]
		for len(b.inbox) > 0 && s.err == nil {
			s.deliver(b)
		}
		for len(b.outbox) > 0 && s.err == nil {
			msg := b.outbox[0]
			b.outbox = b.outbox[1:]
			s.do(Ack{Brick: id, Gen: msg.gen, Ack: msg.ack})
		}
	}
	for len(s.fetches) > 0 && s.err == nil {
		s.answerFetch(true)
	}
	if s.proposal != nil {
		s.resolve(0)
	}
	s.now = s.now.Add(100 * time.Millisecond)
	s.do(Tick{Now: s.now})
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
