package head

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"syscall"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// Machine is the head's deterministic core: sequence numbers, the retained
// window, acknowledgements, fsync barriers, ISR shrink, read-only, fencing.
// It does no I/O, reads no clock and starts no goroutine: events in, actions
// out. Not safe for concurrent use.
type Machine struct {
	cfg Config
	log *slog.Logger
	now time.Time

	epoch     uint64
	placement []string
	isr       []string // committed in Raft, placement order
	isrIndex  uint64
	primary   string
	bricks    map[string]*brick  // exactly the ISR members
	healers   map[string]*healer // exactly the placement bricks outside the ISR
	joining   string             // the healer proposed into the ISR, if any
	nextGen   uint64
	nextFetch uint64

	lastSeq  uint64   // last sequenced op
	trimSeq  uint64   // every op ≤ trimSeq is applied by every ISR brick
	entries  []*entry // entries[i] holds seq trimSeq+1+i
	inflight int64    // bytes of entries
	seqBytes int64    // bytes of every op sequenced (entry.cum of the last)
	seqGrow  int64    // usage growth of every op sequenced (entry.cumGrow of the last)
	trimGrow int64    // seqGrow when trimSeq was sequenced
	covered  uint64   // highest seq a completed Sync covered
	waiting  []uint64 // seqs with a result waiter, ascending (lazily cleaned)
	backlog  []pending
	syncs    []syncWait // ascending seq
	lost     []lostOp   // early-answered ops that failed, not reported yet
	lostN    int        // failures not kept in lost (bounded)
	reported lostReport // the last report, for waiters sharing its barrier
	lastSync uint64     // seq of the last OP_SYNC barrier
	syncAt   time.Time  // when it was sequenced

	proposing bool
	proposeAt time.Time // no proposal before
	propErr   string
	leaving   []string          // ISR bricks the head wants out (this step)
	leaveWhy  map[string]string // and why
	readOnly  string            // why; "" when writable
	fenced    *FencedError
	stopped   error

	state, reason string
	out           []Action
}

type connState uint8

const (
	connDown connState = iota
	connOpening
	connUp
)

func (c connState) String() string {
	return [...]string{"down", "opening", "up"}[c]
}

// brick is the head's view of one ISR brick.
type brick struct {
	id       string
	gen      uint64 // current stream generation
	conn     connState
	known    bool   // reported its position on a stream at least once
	sent     uint64 // last seq sent on the current stream
	applied  uint64 // ≥ trimSeq always (a placeholder of trimSeq until known)
	synced   uint64 // 0 until known
	since    time.Time
	retryAt  time.Time
	failures int
	heldAt   time.Time // sequencing time of the newest op it acknowledged applying
	out      string    // sticky reason to leave the ISR (diverged, unresumable)
	full     string    // it needs a full resync, not just the op log
	sticky   bool      // and no op log can ever do (it diverged)
	lastErr  string
	// used is the replica's usage as of usedAt (its applied seq then), from
	// its stream's opening or its last ack that carried one (usedOK).
	used   int64
	usedAt uint64
	usedOK bool
}

// entry is one sequenced op still retained for resends.
type entry struct {
	op      *brickpb.Op
	at      time.Time
	size    int64
	cum     int64                        // seqBytes once it was sequenced
	cumGrow int64                        // seqGrow once it was sequenced (opGrowth)
	waiter  uint64                       // 0 once answered (or none)
	early   bool                         // answered when sequenced (Submit without WantResult)
	results map[string]*brickpb.OpResult // by brick
}

// pending is a submission not sequenced yet; op nil means a sync.
type pending struct {
	waiter uint64
	op     *brickpb.Op
	want   bool
	size   int64
}

// lostOp is an early-answered op the primary failed.
type lostOp struct {
	seq  uint64
	desc string
}

type lostReport struct {
	seq uint64
	err error
}

// maxLost bounds the failures a report lists.
const maxLost = 16

type syncWait struct {
	waiter, seq uint64
	at          time.Time
}

// New returns a machine for cfg, which must pass Validate. Its first event
// must be a Tick.
func New(cfg Config) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Machine{
		cfg:       cfg,
		log:       log.With("volume", cfg.Volume, "epoch", cfg.Epoch),
		epoch:     cfg.Epoch,
		placement: slices.Clone(cfg.Placement),
		bricks:    map[string]*brick{},
		healers:   map[string]*healer{},
		lastSeq:   cfg.StartSeq,
		trimSeq:   cfg.StartSeq,
		leaveWhy:  map[string]string{},
	}
	m.isr = m.inPlacement(cfg.ISR)
	for _, id := range m.isr {
		m.bricks[id] = &brick{id: id, applied: m.trimSeq, sent: m.trimSeq}
	}
	for _, id := range m.placement {
		if m.bricks[id] == nil {
			m.healers[id] = &healer{id: id}
		}
	}
	m.primary = m.preferredPrimary()
	return m, nil
}

// Step applies one event and returns what the driver must do, in order.
func (m *Machine) Step(ev Event) []Action {
	switch e := ev.(type) {
	case Tick:
		if e.Now.After(m.now) {
			m.now = e.Now
		}
	case Submit:
		m.submit(e)
	case SyncReq:
		m.syncReq(e)
	case Cancel:
		m.cancel(e)
	case Ack:
		if h := m.healers[e.Brick]; h != nil {
			m.healAck(h, e)
		} else {
			m.ack(e)
		}
	case StreamDown:
		if b := m.bricks[e.Brick]; b != nil && b.gen == e.Gen && b.conn != connDown {
			m.breakStream(b, errText(e.Err))
		} else if h := m.healers[e.Brick]; h != nil && h.gen == e.Gen && h.conn != connDown {
			m.healDown(h, errText(e.Err), h.conn == connUp && h.failures == 0)
		}
	case StreamUp:
		if h := m.healers[e.Brick]; h != nil {
			m.healStreamUp(h, e)
		} else {
			m.streamUp(e)
		}
	case HealFetched:
		if h := m.healers[e.Brick]; h != nil {
			m.healFetched(h, e)
		}
	case ISRCommitted:
		m.isrCommitted(e)
	case ISRProposalFailed:
		m.proposalFailed(e)
	case LeaseProof:
		for _, id := range e.Bricks {
			if b := m.bricks[id]; b != nil && slices.Contains(m.isr, id) {
				b.heldAt = later(b.heldAt, e.At)
			}
		}
	case Fenced:
		m.fence(fmt.Sprintf("brick %s refused epoch %d: %s", e.Brick, m.epoch, e.Msg))
	case Resynced:
		if h := m.healers[e.Brick]; h != nil {
			m.resynced(h)
		}
	case Stop:
		m.stop(e.Err)
	}
	if m.fenced == nil && m.stopped == nil {
		m.reconcile()
		m.trim() // the window may have been held by a brick proposed into the ISR
		m.admit()
		m.checkSyncs()
		m.flush()
		m.connect()
		m.heal()
	}
	m.updateState()
	out := m.out
	m.out = nil
	return out
}

// LastSeq is the last sequenced op: what a read must wait for.
func (m *Machine) LastSeq() uint64 { return m.lastSeq }

// Primary is the brick whose results answer metadata ops ("" if none).
func (m *Machine) Primary() string { return m.primary }

// PrimaryApplied is the primary brick's last acknowledged applied seq and
// its stream's generation, while the primary is in the ISR and its stream
// is up and the machine takes ops (ok). A reader that sees the same generation before and after
// reading the primary's tree directly (mounter's local reads) read a tree
// that no resync replaced meanwhile: a brick leaves the ISR, and its
// stream ends, before anything but the stream changes its tree.
func (m *Machine) PrimaryApplied() (applied, gen uint64, ok bool) {
	b := m.bricks[m.primary]
	if b == nil || b.conn != connUp || !b.known || !slices.Contains(m.isr, m.primary) || m.Refused() {
		return 0, 0, false
	}
	return b.applied, b.gen, true
}

// LastAck is the latest time (to the tick) after which every ISR brick is
// known to have been at this epoch: the oldest, over the ISR, of the
// sequencing time of the newest op the brick acknowledged applying. Zero
// until every ISR brick has acknowledged one. Every brick, not any: a
// successor fences every brick of its ISR, which is a non-empty part of
// this head's, before its first write, but may have left out a brick this
// head still reaches (one it found unreachable), which then goes on
// acknowledging this head until its daemon fences it.
func (m *Machine) LastAck() time.Time {
	var t time.Time
	for i, id := range m.isr {
		b := m.bricks[id]
		if b == nil || b.heldAt.IsZero() {
			return time.Time{}
		}
		if i == 0 || b.heldAt.Before(t) {
			t = b.heldAt
		}
	}
	return t
}

// Refused is whether the machine takes no more ops at all (fenced or
// stopped).
func (m *Machine) Refused() bool { return m.refusal() != nil }

// Epoch is the machine's epoch.
func (m *Machine) Epoch() uint64 { return m.epoch }

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

func (m *Machine) complete(w uint64, r *brickpb.OpResult, err error) {
	if w != 0 {
		m.emit(Complete{Waiter: w, Result: r, Err: err})
	}
}

// refusal is why a new op or sync cannot be taken at all.
func (m *Machine) refusal() error {
	switch {
	case m.stopped != nil:
		return m.stopped
	case m.fenced != nil:
		return m.fenced
	}
	return nil
}

func (m *Machine) submit(e Submit) {
	if err := m.refusal(); err != nil {
		m.complete(e.Waiter, nil, err)
		return
	}
	if e.Op == nil || e.Op.Type == brickpb.OpType_OP_UNSPECIFIED || e.Op.Type == brickpb.OpType_OP_SYNC {
		m.complete(e.Waiter, nil, fmt.Errorf("%w: submit takes mutating ops (use a sync for OP_SYNC), got %v", ErrInvalid, e.Op.GetType()))
		return
	}
	if m.readOnly != "" {
		m.complete(e.Waiter, nil, &ReadOnlyError{Reason: m.readOnly})
		return
	}
	m.backlog = append(m.backlog, pending{waiter: e.Waiter, op: e.Op, want: e.WantResult, size: opSize(e.Op)})
}

func (m *Machine) syncReq(e SyncReq) {
	if err := m.refusal(); err != nil {
		m.complete(e.Waiter, nil, err)
		return
	}
	if m.readOnly != "" {
		if m.durable(m.lastSeq) {
			m.covered = max(m.covered, m.lastSeq)
			m.complete(e.Waiter, nil, m.lostBy(m.lastSeq))
		} else {
			m.complete(e.Waiter, nil, &ReadOnlyError{Reason: m.readOnly})
		}
		return
	}
	m.backlog = append(m.backlog, pending{waiter: e.Waiter})
}

// admit sequences queued submissions in order while the window has room.
// An op bigger than the whole window goes alone.
func (m *Machine) admit() {
	for m.readOnly == "" && len(m.backlog) > 0 {
		p := m.backlog[0]
		if p.op != nil && m.inflight > 0 && m.inflight+p.size > m.cfg.MaxInflightBytes {
			return
		}
		m.backlog[0] = pending{}
		m.backlog = m.backlog[1:]
		if p.op == nil {
			m.barrier(p.waiter)
			continue
		}
		e := m.sequence(p.op, p.size)
		if p.want {
			e.waiter = p.waiter
			m.waiting = append(m.waiting, e.op.Seq)
		} else {
			e.early = true
			m.complete(p.waiter, &brickpb.OpResult{Seq: e.op.Seq}, nil)
		}
	}
}

// barrier makes waiter w wait for an fsync of everything sequenced so far,
// sharing the last barrier when nothing was sequenced after it.
func (m *Machine) barrier(w uint64) {
	if m.durable(m.lastSeq) {
		m.covered = max(m.covered, m.lastSeq)
		m.complete(w, nil, m.lostBy(m.lastSeq))
		return
	}
	if m.lastSync != m.lastSeq {
		m.newBarrier()
	}
	m.syncs = append(m.syncs, syncWait{waiter: w, seq: m.lastSync, at: m.syncAt})
}

func (m *Machine) newBarrier() {
	op := &brickpb.Op{Type: brickpb.OpType_OP_SYNC}
	e := m.sequence(op, opSize(op))
	m.lastSync, m.syncAt = op.Seq, e.at
}

func (m *Machine) sequence(op *brickpb.Op, size int64) *entry {
	m.lastSeq++
	op.Seq, op.Epoch, op.OriginEpoch = m.lastSeq, m.epoch, m.epoch
	m.seqBytes += size
	m.seqGrow += opGrowth(op, size)
	e := &entry{op: op, at: m.now, size: size, cum: m.seqBytes, cumGrow: m.seqGrow}
	m.entries = append(m.entries, e)
	m.inflight += size
	return e
}

func (m *Machine) entry(seq uint64) *entry {
	if seq <= m.trimSeq || seq > m.lastSeq {
		return nil
	}
	return m.entries[seq-m.trimSeq-1]
}

// durable: every op ≤ seq is fsync'd on every ISR brick, and the ISR is at
// least min-isr strong (promise 1). While a brick is proposed into the ISR
// it counts too: whichever way Raft decides, a Sync completed meanwhile
// holds for the ISR that results.
func (m *Machine) durable(seq uint64) bool {
	if len(m.isr) < m.cfg.MinISR {
		return false
	}
	for _, id := range m.isr {
		if m.bricks[id].synced < seq {
			return false
		}
	}
	if h := m.joiner(); h != nil && h.synced < seq {
		return false
	}
	return true
}

func (m *Machine) checkSyncs() {
	n := 0
	for n < len(m.syncs) && m.durable(m.syncs[n].seq) {
		m.covered = max(m.covered, m.syncs[n].seq)
		m.complete(m.syncs[n].waiter, nil, m.lostBy(m.syncs[n].seq))
		n++
	}
	m.syncs = m.syncs[n:]
}

// flush sends every up stream what it has not been sent yet.
func (m *Machine) flush() {
	for _, id := range m.isr {
		b := m.bricks[id]
		if b.conn != connUp || b.sent >= m.lastSeq {
			continue
		}
		ops := make([]*brickpb.Op, 0, m.lastSeq-b.sent)
		linger := true
		for s := b.sent + 1; s <= m.lastSeq; s++ {
			e := m.entry(s)
			ops = append(ops, e.op)
			linger = linger && e.early
		}
		m.emit(Send{Brick: id, Gen: b.gen, Ops: ops, MayLinger: linger})
		b.sent = m.lastSeq
	}
}

// connect opens streams to ISR bricks that have none and are due.
func (m *Machine) connect() {
	for _, id := range m.isr {
		b := m.bricks[id]
		if b.conn != connDown || b.out != "" || m.now.Before(b.retryAt) {
			continue
		}
		m.nextGen++
		b.gen, b.conn = m.nextGen, connOpening
		m.emit(Reconnect{Brick: id, Gen: b.gen})
	}
}

func (m *Machine) breakStream(b *brick, why string) {
	wasUp := b.conn == connUp
	m.emit(CloseStream{Brick: b.id, Gen: b.gen})
	b.conn, b.lastErr = connDown, why
	if wasUp && b.failures == 0 {
		b.retryAt = m.now // the stream worked: reopen at once
	} else {
		d := m.cfg.ReconnectBackoff << min(b.failures, 20)
		b.retryAt = m.now.Add(min(d, m.cfg.MaxReconnectBackoff))
	}
	b.failures++
	m.log.Warn("replication stream down", "brick", b.id, "applied", b.applied, "err", why)
}

func (m *Machine) streamUp(e StreamUp) {
	b := m.bricks[e.Brick]
	if b == nil || b.gen != e.Gen || b.conn != connOpening {
		m.emit(CloseStream{Brick: e.Brick, Gen: e.Gen})
		return
	}
	var why string
	switch {
	case e.Synced > e.Applied:
		why = fmt.Sprintf("protocol: reports synced seq %d beyond its applied seq %d", e.Synced, e.Applied)
	case e.Applied > m.lastSeq:
		why = fmt.Sprintf("reports applied seq %d beyond this head's last seq %d: it holds ops this head never sequenced", e.Applied, m.lastSeq)
		b.full, b.sticky = why, true
	case e.NeedsFullHeal != "":
		why = "says it needs a full resync: " + e.NeedsFullHeal
		b.full = why
	case b.known && e.Synced < b.synced:
		why = fmt.Sprintf("its synced seq went back from %d to %d: it lost ops it had acknowledged as durable", b.synced, e.Synced)
	case e.Applied < m.trimSeq:
		why = fmt.Sprintf("is at seq %d but this head retains ops only after seq %d; heal must catch it up", e.Applied, m.trimSeq)
	}
	if why != "" {
		b.out = why
		m.log.Error("brick cannot stay in the ISR", "brick", b.id, "why", why)
		m.emit(CloseStream{Brick: b.id, Gen: b.gen})
		b.conn = connDown
		return
	}
	b.conn, b.known, b.lastErr = connUp, true, ""
	b.applied, b.sent = e.Applied, e.Applied
	if e.UsedBytes >= 0 {
		b.used, b.usedAt, b.usedOK = e.UsedBytes, e.Applied, true
	}
	b.synced = max(b.synced, e.Synced)
	if b.id == m.primary {
		m.answerApplied()
	}
	m.log.Info("replication stream up", "brick", b.id, "applied", e.Applied, "synced", e.Synced, "resend_from", e.Applied+1)
	m.rebarrier(b, e.Applied)
	m.trim()
}

// rebarrier: a brick whose stream starts at start, past the pending barrier
// it has not fsync'd (it got there by other means: heal), will never fsync
// that barrier on this stream: sequence a fresh one for the waiters.
func (m *Machine) rebarrier(b *brick, start uint64) {
	if len(m.syncs) > 0 && b.synced < m.lastSync && start >= m.lastSync && m.readOnly == "" {
		m.newBarrier()
		for i := range m.syncs {
			m.syncs[i].seq, m.syncs[i].at = m.lastSync, m.syncAt
		}
	}
}

func (m *Machine) ack(e Ack) {
	b := m.bricks[e.Brick]
	if b == nil || b.gen != e.Gen || b.conn != connUp || e.Ack == nil {
		return
	}
	a := e.Ack
	if a.AppliedSeq < b.applied || a.AppliedSeq > b.sent || a.SyncedSeq > a.AppliedSeq {
		m.breakStream(b, fmt.Sprintf("protocol: ack applied %d synced %d outside what was sent (%d..%d)", a.AppliedSeq, a.SyncedSeq, b.applied, b.sent))
		return
	}
	if a.AppliedSeq > b.applied {
		// The brick applied an op sequenced at e.at, so it was at this
		// epoch after e.at: a proof dated by the op, not by when the ack
		// was read (acks queued before a SIGSTOP prove nothing new).
		if e := m.entry(a.AppliedSeq); e != nil {
			b.heldAt = later(b.heldAt, e.at)
		}
	}
	for _, r := range a.Results {
		if r != nil {
			m.result(b, r)
		}
	}
	if a.AppliedSeq > b.applied || a.SyncedSeq > b.synced {
		b.failures = 0
	}
	b.applied = a.AppliedSeq
	b.synced = max(b.synced, a.SyncedSeq)
	if a.UsedBytes >= 0 {
		b.used, b.usedAt, b.usedOK = a.UsedBytes, a.AppliedSeq, true
	}
	if a.Error != "" {
		if a.Errno == uint32(syscall.ESTALE) {
			m.fence(fmt.Sprintf("brick %s refused epoch %d: %s", b.id, m.epoch, a.Error))
			return
		}
		m.breakStream(b, "brick refused an op: "+a.Error)
	}
	if b.id == m.primary {
		m.answerApplied()
	}
	m.trim()
}

// result records brick b's result for an op, answers the op's waiter when b
// is the primary, and drops bricks whose errno differs from the primary's.
func (m *Machine) result(b *brick, r *brickpb.OpResult) {
	e := m.entry(r.Seq)
	if e == nil {
		return
	}
	if e.results == nil {
		e.results = make(map[string]*brickpb.OpResult, len(m.isr))
	}
	e.results[b.id] = r
	if b.id == m.primary {
		m.answer(e, r)
		m.compare(e)
		if e.early && r.Errno != 0 && !moot(e.op, r.Errno) {
			m.noteLost(e, r.Errno)
		}
	} else if p := e.results[m.primary]; p != nil && p.Errno != r.Errno {
		m.diverged(b.id, e, r.Errno, p.Errno)
	}
}

func (m *Machine) compare(e *entry) {
	p := e.results[m.primary]
	if p == nil {
		return
	}
	for _, id := range m.isr {
		if o := e.results[id]; id != m.primary && o != nil && o.Errno != p.Errno {
			m.diverged(id, e, o.Errno, p.Errno)
		}
	}
}

func (m *Machine) diverged(id string, e *entry, got, want uint32) {
	b := m.bricks[id]
	if b == nil || b.out != "" {
		return
	}
	b.out = fmt.Sprintf("diverged at seq %d (%s): errno %d where the primary %s got errno %d", e.op.Seq, e.op.Type, got, m.primary, want)
	b.full, b.sticky = b.out, true
	m.log.Error("REPLICA DIVERGED from the primary; dropping it from the ISR, heal must repair it",
		"brick", id, "seq", e.op.Seq, "op", e.op.Type.String(), "errno", got, "primary", m.primary, "primary_errno", want)
	if b.conn != connDown {
		m.emit(CloseStream{Brick: id, Gen: b.gen})
		b.conn = connDown
	}
}

func (m *Machine) answer(e *entry, r *brickpb.OpResult) {
	if e.waiter != 0 {
		w := e.waiter
		e.waiter = 0
		m.complete(w, r, nil)
	}
}

// answerApplied answers the waiters of ops the primary applied but whose
// result it never reported (lost with a broken stream) from another ISR
// brick's result: replicas apply one deterministic sequence, so it is the
// same answer. Waiters nobody can answer stay until trim or read-only
// resolves them (fallback).
func (m *Machine) answerApplied() {
	p := m.bricks[m.primary]
	if p == nil || !p.known {
		return
	}
	for i := 0; i < len(m.waiting) && m.waiting[i] <= p.applied; i++ {
		if e := m.entry(m.waiting[i]); e != nil && e.waiter != 0 {
			for _, id := range m.isr {
				if r := e.results[id]; r != nil {
					m.answer(e, r)
					break
				}
			}
		}
	}
	for len(m.waiting) > 0 {
		if e := m.entry(m.waiting[0]); e != nil && e.waiter != 0 {
			return
		}
		m.waiting = m.waiting[1:]
	}
}

// noteLost records that early-answered op e failed on the primary with
// errno: nobody was told yet, so the next Sync covering it reports it.
// Every replica fails an op alike (a brick's own trouble breaks its stream
// instead), so the primary's errno is the op's.
func (m *Machine) noteLost(e *entry, errno uint32) {
	op := e.op
	desc := fmt.Sprintf("op %d (%s of file %d", op.Seq, op.Type, op.Fid)
	if op.Name != "" {
		desc += fmt.Sprintf(", name %q in directory %d", op.Name, op.Parent)
	}
	desc += "): " + syscall.Errno(errno).Error()
	m.log.Error("an op acknowledged before it was applied failed on the primary brick; the next fsync reports EIO",
		"seq", op.Seq, "op", op.Type.String(), "fid", op.Fid, "errno", syscall.Errno(errno).Error())
	if len(m.lost) >= maxLost {
		m.lostN++
		return
	}
	m.lost = append(m.lost, lostOp{seq: op.Seq, desc: desc})
}

// moot: op changed a file by its ID alone and the file no longer exists
// (ENOENT), so nothing it would have changed can be read any more — a
// write or a times update the kernel flushes after the file's last name
// went is not a loss. A create that fails, by contrast, is a lost file.
func moot(op *brickpb.Op, errno uint32) bool {
	if errno != uint32(syscall.ENOENT) || op.Parent != 0 || op.NewParent != 0 {
		return false
	}
	switch op.Type {
	case brickpb.OpType_OP_WRITE, brickpb.OpType_OP_SETATTR, brickpb.OpType_OP_TRUNCATE,
		brickpb.OpType_OP_FALLOCATE, brickpb.OpType_OP_SETXATTR, brickpb.OpType_OP_REMOVEXATTR:
		return true
	}
	return false
}

// lostBy returns the error a Sync covering every op ≤ seq completes with:
// the early-answered ops ≤ seq that failed and no Sync reported yet (and
// the same to every waiter of the barrier that reported them), else nil.
func (m *Machine) lostBy(seq uint64) error {
	var err LostOpsError
	keep := m.lost[:0]
	for _, l := range m.lost {
		if l.seq <= seq {
			err.Ops = append(err.Ops, l.desc)
		} else {
			keep = append(keep, l)
		}
	}
	m.lost = keep
	if len(err.Ops) > 0 {
		err.Dropped, m.lostN = m.lostN, 0
		m.reported = lostReport{seq: seq, err: &err}
		return &err
	}
	if m.reported.err != nil && m.reported.seq == seq {
		return m.reported.err
	}
	return nil
}

// fallback answers a waiter whose op no ISR brick will report a result for
// any more: with any ISR brick's result, else with ErrNoResult.
func (m *Machine) fallback(e *entry, why error) {
	for _, id := range m.isr {
		if r := e.results[id]; r != nil {
			m.answer(e, r)
			return
		}
	}
	w := e.waiter
	e.waiter = 0
	m.complete(w, nil, fmt.Errorf("op seq %d (%s) was applied by primary %s: %w", e.op.Seq, e.op.Type, m.primary, why))
}

// trim drops the ops every ISR brick (and the brick proposed into the ISR)
// applied, freeing window space.
func (m *Machine) trim() {
	low := m.lastSeq
	for _, id := range m.isr {
		low = min(low, m.bricks[id].applied)
	}
	if h := m.joiner(); h != nil {
		low = min(low, h.applied)
	}
	for m.trimSeq < low {
		e := m.entries[0]
		if e.waiter != 0 {
			m.fallback(e, ErrNoResult)
		}
		m.inflight -= e.size
		m.trimGrow = e.cumGrow
		m.entries[0] = nil
		m.entries = m.entries[1:]
		m.trimSeq++
	}
	for len(m.waiting) > 0 && m.waiting[0] <= m.trimSeq {
		m.waiting = m.waiting[1:]
	}
}

func (m *Machine) cancel(c Cancel) {
	err := c.Err
	if err == nil {
		err = errors.New("canceled")
	}
	for i, p := range m.backlog {
		if p.waiter == c.Waiter {
			m.backlog = slices.Delete(m.backlog, i, i+1)
			m.complete(c.Waiter, nil, fmt.Errorf("canceled before it was sequenced: %w", err))
			return
		}
	}
	for i, s := range m.syncs {
		if s.waiter == c.Waiter {
			m.syncs = slices.Delete(m.syncs, i, i+1)
			m.complete(c.Waiter, nil, fmt.Errorf("sync canceled: %w", err))
			return
		}
	}
	for _, s := range m.waiting {
		if e := m.entry(s); e != nil && e.waiter == c.Waiter {
			e.waiter = 0
			m.complete(c.Waiter, nil, fmt.Errorf("canceled while waiting for the result of op seq %d, which will still be applied: %w", s, err))
			return
		}
	}
}

// failAll completes every waiter with err.
func (m *Machine) failAll(err error) {
	for _, p := range m.backlog {
		m.complete(p.waiter, nil, err)
	}
	m.backlog = nil
	for _, s := range m.syncs {
		m.complete(s.waiter, nil, err)
	}
	m.syncs = nil
	for _, s := range m.waiting {
		if e := m.entry(s); e != nil && e.waiter != 0 {
			m.complete(e.waiter, nil, err)
			e.waiter = 0
		}
	}
	m.waiting = nil
}

// closeAll closes every stream and abandons every heal: the machine is
// fenced or stopped.
func (m *Machine) closeAll() {
	for _, id := range m.isr {
		if b := m.bricks[id]; b.conn != connDown {
			m.emit(CloseStream{Brick: id, Gen: b.gen})
			b.conn = connDown
		}
	}
	for _, id := range m.placement {
		if h := m.healers[id]; h != nil {
			m.healStop(h)
			h.conn = connDown
		}
	}
	m.joining = ""
}

func (m *Machine) stop(err error) {
	if m.stopped != nil {
		return
	}
	if err == nil {
		err = ErrClosed
	}
	m.stopped = err
	m.failAll(err)
	m.closeAll()
}

// opSize is what an op costs in the window: its payload plus a fixed
// overhead for the header fields.
func opSize(op *brickpb.Op) int64 {
	return int64(len(op.Data)+len(op.Name)+len(op.NewName)+len(op.Target)+len(op.Xattr)) + 96
}

func errText(err error) string {
	if err == nil {
		return "stream closed"
	}
	return err.Error()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// UsedEstimate is an upper bound of the volume's usage after every op
// sequenced so far: the primary's last reported usage plus the growth
// (opGrowth) of the ops sequenced after the seq it reported at (see
// Head.UsedBytes).
func (m *Machine) UsedEstimate() (int64, bool) {
	b := m.bricks[m.primary]
	if b == nil || !b.usedOK {
		return 0, false
	}
	return b.used + max(m.seqGrow-m.growAt(b.usedAt), 0), true
}

// growAt is seqGrow as it was when seq was sequenced; seq ≥ trimSeq.
func (m *Machine) growAt(seq uint64) int64 {
	if e := m.entry(seq); e != nil {
		return e.cumGrow
	}
	return m.trimGrow
}

// opGrowth is what the usage estimate counts for op: the growth a write
// carries (the mount's quota share of it, 0 for an overwrite), otherwise
// its size in the window, which bounds the data it carries. (A truncate
// or fallocate may grow a file further; the mount's quota holds that
// growth until the primary has answered the op.)
func opGrowth(op *brickpb.Op, size int64) int64 {
	if op.Type == brickpb.OpType_OP_WRITE && op.Growth != nil {
		return max(op.GetGrowth(), 0)
	}
	return size
}
