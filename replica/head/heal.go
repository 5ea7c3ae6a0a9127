package head

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// healer is the head's view of one placement brick outside the ISR: the
// background heal that catches it up, op by op, and proposes it back into
// the ISR. See the package doc ("Heal") for the steps.
type healer struct {
	id       string
	gen      uint64 // current stream generation
	conn     connState
	retryAt  time.Time // no stream open before
	failures int       // opens or streams that made no progress, in a row
	stalls   int       // streams that timed out without progress, in a row
	lastErr  string
	full     string // why it needs a full resync ("" while the op log may do)
	sticky   bool   // full cannot be cleared by this head (the brick diverged)

	// The current (or last) stream.
	known                 bool   // some stream reported its position
	start                 uint64 // the brick's applied seq when the stream opened
	verify                uint64 // epoch the brick's op start has, still to check against an op log (0: checked or nothing to check)
	applied, synced, sent uint64
	progressAt            time.Time     // last acknowledged progress, or the first send after none was outstanding
	buf                   []*brickpb.Op // read from an op log, contiguous from sent+1
	bufBytes              int64
	fetch                 uint64    // the outstanding HealFetch (0: none)
	fetchAfter            uint64    // and the seq it reads after
	fetchAt               time.Time // no fetch before (after a failed one)
	source                string    // the ISR brick whose op log was read last
	turn                  int       // rotates the source after failed reads
	truncated             map[string]string

	// Throttle, progress and estimates.
	tokens                float64 // bytes that may be sent now (negative: debt)
	tokAt                 time.Time
	sentBytes, ackedBytes int64  // on the current stream
	marks                 []mark // ends of the batches sent and not yet acknowledged
	logOps                uint64 // ops sent from an op log, and their bytes
	logBytes              int64
	rate                  float64 // acknowledged bytes/s, smoothed
	rateAt                time.Time
	rateBytes             int64 // ackedBytes at rateAt
	healBytes             int64 // op bytes sent over every stream of this heal
}

// mark: after the batch ending at seq, sentBytes was cum.
type mark struct {
	seq uint64
	cum int64
}

// healFetchBytes caps one HealFetch: what the head buffers per healing brick.
const healFetchBytes = 4 << 20

// joiner is the healer proposed into the ISR, or nil.
func (m *Machine) joiner() *healer {
	if m.joining == "" {
		return nil
	}
	return m.healers[m.joining]
}

// heal opens streams to the healers that are due and feeds the open ones.
func (m *Machine) heal() {
	for _, id := range m.placement {
		h := m.healers[id]
		if h == nil {
			continue
		}
		switch h.conn {
		case connDown:
			if !h.sticky && !m.now.Before(h.retryAt) {
				m.nextGen++
				h.gen, h.conn = m.nextGen, connOpening
				m.emit(Reconnect{Brick: id, Gen: h.gen})
			}
		case connUp:
			if h.sent > h.applied && !m.now.Before(h.progressAt.Add(m.cfg.ReplicaTimeout)) {
				h.stalls++
				m.healDown(h, fmt.Sprintf("no acknowledgement of seq %d within the replica timeout %s", h.applied+1, m.cfg.ReplicaTimeout), false)
				continue
			}
			if dt := m.now.Sub(h.rateAt); dt >= time.Second {
				inst := float64(h.ackedBytes-h.rateBytes) / dt.Seconds()
				if h.rate == 0 {
					h.rate = inst
				} else {
					h.rate = (h.rate + inst) / 2
				}
				h.rateAt, h.rateBytes = m.now, h.ackedBytes
			}
			m.pump(h)
		}
	}
}

func (m *Machine) healStreamUp(h *healer, e StreamUp) {
	if h.gen != e.Gen || h.conn != connOpening {
		m.emit(CloseStream{Brick: e.Brick, Gen: e.Gen})
		return
	}
	h.conn, h.known, h.lastErr = connUp, true, ""
	h.start, h.applied, h.sent, h.synced = e.Applied, e.Applied, e.Applied, e.Synced
	h.buf, h.bufBytes, h.verify, h.truncated, h.fetchAt = nil, 0, 0, nil, time.Time{}
	h.tokens, h.tokAt, h.progressAt = float64(m.cfg.HealBytesPerSec), m.now, m.now // a full bucket
	h.sentBytes, h.ackedBytes, h.marks = 0, 0, nil
	h.rate, h.rateAt, h.rateBytes = 0, m.now, 0
	mismatch := e.AppliedEpoch != 0 && e.AppliedEpoch != m.epoch && e.Applied > 0
	switch {
	case e.Synced > e.Applied:
		m.healDown(h, fmt.Sprintf("protocol: reports synced seq %d beyond its applied seq %d", e.Synced, e.Applied), false)
		return
	case e.NeedsFullHeal != "":
		m.needsFull(h, fmt.Sprintf("brick %s needs a full resync: it says %s", h.id, e.NeedsFullHeal), false)
		return
	case e.Applied > m.lastSeq:
		m.needsFull(h, fmt.Sprintf("brick %s needs a full resync: it is at seq %d, beyond this head's last seq %d: it holds ops the volume never committed",
			h.id, e.Applied, m.lastSeq), true)
		return
	case mismatch && e.Applied > m.trimSeq:
		// Every op after trimSeq was sequenced by this head, at its epoch.
		m.needsFull(h, fmt.Sprintf("brick %s needs a full resync: its op %d is from epoch %d, but this head sequenced op %d at epoch %d: it holds ops the volume never committed",
			h.id, e.Applied, e.AppliedEpoch, e.Applied, m.epoch), true)
		return
	case mismatch:
		h.verify = e.AppliedEpoch // checked against an ISR brick's op log first
	}
	how := "from the ops this head retains"
	if e.Applied < m.trimSeq || h.verify != 0 {
		how = "from an ISR brick's op log"
	}
	m.log.Info("healing brick: catching it up "+how, "brick", h.id, "applied", e.Applied, "synced", e.Synced, "target", m.lastSeq, "retained_after", m.trimSeq)
}

func (m *Machine) healAck(h *healer, e Ack) {
	if h.gen != e.Gen || h.conn != connUp || e.Ack == nil {
		return
	}
	a := e.Ack
	if a.AppliedSeq < h.applied || a.AppliedSeq > h.sent || a.SyncedSeq > a.AppliedSeq {
		m.healDown(h, fmt.Sprintf("protocol: ack applied %d synced %d outside what was sent (%d..%d)", a.AppliedSeq, a.SyncedSeq, h.applied, h.sent), false)
		return
	}
	for _, r := range a.Results {
		en := m.entry(r.GetSeq())
		if en == nil {
			continue // read from an op log: no result to compare with
		}
		if en.results == nil {
			en.results = make(map[string]*brickpb.OpResult, len(m.isr)+1)
		}
		en.results[h.id] = r // answers waiters if the brick joins and becomes the primary
		if p := en.results[m.primary]; p != nil && p.Errno != r.Errno {
			m.needsFull(h, fmt.Sprintf("brick %s needs a full resync: it diverged at seq %d (%s): errno %d where the primary %s got errno %d",
				h.id, r.Seq, en.op.Type, r.Errno, m.primary, p.Errno), true)
			return
		}
	}
	if a.AppliedSeq > h.applied {
		h.failures, h.stalls, h.progressAt = 0, 0, m.now
		for len(h.marks) > 0 && h.marks[0].seq <= a.AppliedSeq {
			h.ackedBytes = h.marks[0].cum
			h.marks = h.marks[1:]
		}
	}
	h.applied = a.AppliedSeq
	h.synced = max(h.synced, a.SyncedSeq)
	if a.Error != "" {
		if a.Errno == uint32(syscall.ESTALE) {
			m.fence(fmt.Sprintf("brick %s refused epoch %d: %s", h.id, m.epoch, a.Error))
			return
		}
		m.healDown(h, "brick refused an op: "+a.Error, false)
		return
	}
	if m.joining == h.id {
		m.trim()
	}
}

// healDown closes h's stream; the next open is at once (a stream that
// worked) or after HealRetry, doubled for every stream in a row that timed
// out without progress (up to 16 times: a brick that opens but does not
// acknowledge costs the ISR an fsync barrier per try).
func (m *Machine) healDown(h *healer, why string, immediate bool) {
	m.healStop(h)
	h.conn = connDown
	h.failures++
	h.retryAt = m.now.Add(m.cfg.HealRetry << min(h.stalls, 4))
	if immediate {
		h.retryAt = m.now
	}
	if why != h.lastErr {
		m.log.Warn("heal stream to brick down; retrying", "brick", h.id, "applied", h.applied, "err", why, "retry_in", h.retryAt.Sub(m.now))
	}
	h.lastErr = why
}

// healStop closes h's stream (if any) and abandons its op log read.
func (m *Machine) healStop(h *healer) {
	if h.conn != connDown {
		m.emit(CloseStream{Brick: h.id, Gen: h.gen})
	}
	if h.fetch != 0 {
		m.emit(CancelFetch{Brick: h.id, Fetch: h.fetch})
		h.fetch = 0
	}
	h.buf, h.bufBytes, h.verify = nil, 0, 0
}

// needsFull records that only a full resync can bring h back, loudly, and
// closes its stream. A sticky one (the brick diverged) is never retried by
// this head; the others are, every HealRetry, in case a log covers it.
func (m *Machine) needsFull(h *healer, why string, sticky bool) {
	if h.full != why {
		m.log.Error("BRICK NEEDS A FULL RESYNC: the op log cannot catch it up, so it stays out of the ISR; "+
			"a checksum resync must repair it (this head does not do one)", "brick", h.id, "why", why, "retrying", !sticky)
	}
	h.full, h.sticky, h.lastErr = why, h.sticky || sticky, why
	m.healDown(h, why, false)
}

// pump sends h what it lacks, throttled, and reads op logs ahead.
func (m *Machine) pump(h *healer) {
	if h.verify != 0 {
		m.fetchMore(h)
		return
	}
	if h.full != "" && !h.sticky && h.sent >= m.trimSeq {
		m.log.Warn("brick no longer needs a full resync: this head retains every op it lacks", "brick", h.id, "applied", h.applied)
		h.full = ""
	}
	rate := m.cfg.HealBytesPerSec
	if rate > 0 {
		h.tokens = min(h.tokens+float64(rate)*m.now.Sub(h.tokAt).Seconds(), float64(rate))
		h.tokAt = m.now
	}
	var ops []*brickpb.Op
	for h.sent < m.lastSeq && (rate == 0 || h.tokens >= 0) && h.sentBytes-h.ackedBytes < m.cfg.MaxInflightBytes {
		next := h.sent + 1
		var op *brickpb.Op
		var size int64
		fromLog := false
		if len(h.buf) > 0 { // buf[0] holds next
			op, size, fromLog = h.buf[0], opSize(h.buf[0]), true
			h.buf[0] = nil
			h.buf = h.buf[1:]
			h.bufBytes -= size
		}
		if e := m.entry(next); e != nil {
			op, size, fromLog = e.op, e.size, false
		}
		if op == nil {
			break // neither retained nor read yet
		}
		if fromLog {
			h.logOps++
			h.logBytes += size
		}
		if h.sent == h.applied {
			h.progressAt = m.now
		}
		ops = append(ops, op)
		h.sent = next
		h.tokens -= float64(size)
		h.sentBytes += size
		h.healBytes += size
	}
	if len(ops) > 0 {
		m.emit(Send{Brick: h.id, Gen: h.gen, Ops: ops})
		h.marks = append(h.marks, mark{seq: h.sent, cum: h.sentBytes})
	}
	m.fetchMore(h)
}

// fetchMore asks for the next slice of an ISR brick's op log when h lacks
// ops the head no longer retains and has little buffered.
func (m *Machine) fetchMore(h *healer) {
	if h.fetch != 0 || m.now.Before(h.fetchAt) {
		return
	}
	after := h.sent + uint64(len(h.buf))
	if h.verify != 0 {
		after = h.start - 1 // read the brick's last op too, to compare epochs
	} else if after >= m.trimSeq || h.bufBytes >= healFetchBytes/2 {
		return
	}
	src := m.healSource(h)
	if src == "" && len(h.truncated) > 0 {
		for _, id := range m.isr { // every ISR brick's log was found short
			m.needsFull(h, h.truncated[id], false)
			return
		}
	}
	if src == "" {
		h.lastErr = fmt.Sprintf("no ISR brick to read ops %d..%d from", after+1, m.trimSeq)
		return
	}
	m.nextFetch++
	h.fetch, h.fetchAfter, h.source = m.nextFetch, after, src
	m.emit(HealFetch{Brick: h.id, Fetch: h.fetch, Source: src, AfterSeq: after, UpTo: max(m.trimSeq, h.start), MaxBytes: healFetchBytes})
}

// healSource picks the ISR brick whose op log h reads: the primary first,
// rotating after failures, skipping logs that do not cover h.
func (m *Machine) healSource(h *healer) string {
	var cands []string
	if slices.Contains(m.isr, m.primary) && h.truncated[m.primary] == "" {
		cands = append(cands, m.primary)
	}
	for _, id := range m.isr {
		if id != m.primary && h.truncated[id] == "" {
			cands = append(cands, id)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	return cands[h.turn%len(cands)]
}

func (m *Machine) healFetched(h *healer, e HealFetched) {
	if e.Fetch == 0 || e.Fetch != h.fetch {
		return // cancelled, or from an older stream
	}
	h.fetch = 0
	src, ops, err := h.source, e.Ops, e.Err
	if want := h.sent + uint64(len(h.buf)); h.verify == 0 && h.fetchAfter != want { // cannot happen: fetchMore
		ops, err = nil, fmt.Errorf("internal: read the log after %d, but the brick needs the ops after %d", h.fetchAfter, want)
	}
	for i, op := range ops {
		if op == nil || op.Seq != h.fetchAfter+1+uint64(i) || op.Epoch > m.epoch {
			err = fmt.Errorf("protocol: the op log of %s sent op %d (epoch %d) where op %d (epoch ≤ %d) belongs",
				src, op.GetSeq(), op.GetEpoch(), h.fetchAfter+1+uint64(i), m.epoch)
			ops = ops[:i]
			break
		}
	}
	if h.verify != 0 && len(ops) > 0 {
		if OriginEpoch(ops[0]) != h.verify {
			m.needsFull(h, fmt.Sprintf("brick %s needs a full resync: its op %d is from epoch %d, but the op log of %s has it from epoch %d: it holds ops the volume never committed",
				h.id, h.start, h.verify, src, OriginEpoch(ops[0])), true)
			return
		}
		m.log.Info("healing brick: its last op matches the op log", "brick", h.id, "seq", h.start, "epoch", h.verify, "source", src)
		h.verify = 0
		ops = ops[1:]
	}
	for _, op := range ops {
		op.OriginEpoch = OriginEpoch(op)
		op.Epoch = m.epoch // the brick takes ops at the stream's epoch only
		h.buf = append(h.buf, op)
		h.bufBytes += opSize(op)
	}
	if len(ops) > 0 && h.full != "" && !h.sticky {
		m.log.Warn("brick no longer needs a full resync: an op log covers it", "brick", h.id, "source", src)
		h.full = ""
	}
	var te *LogTruncatedError
	switch {
	case err == nil && len(e.Ops) > 0:
	case errors.Is(err, ErrStaleEpoch):
		m.fence(fmt.Sprintf("brick %s refused epoch %d for its op log: %v", src, m.epoch, err))
	case errors.Is(err, ErrLogTruncated):
		msg := fmt.Sprintf("brick %s needs a full resync: the op log of %s no longer holds op %d, the brick is at %d", h.id, src, h.fetchAfter+1, h.applied)
		if errors.As(err, &te) && te.FirstSeq != 0 {
			msg = fmt.Sprintf("brick %s needs a full resync: the op log of %s starts at %d, the brick is at %d", h.id, src, te.FirstSeq, h.applied)
		}
		if h.truncated == nil {
			h.truncated = map[string]string{}
		}
		h.truncated[src] = msg
		if m.healSource(h) == "" {
			m.needsFull(h, msg, false)
			return
		}
		m.log.Warn("an op log does not cover the healing brick; trying another ISR brick's", "brick", h.id, "why", msg)
	default:
		why := fmt.Sprintf("the op log of %s had no op after %d", src, h.fetchAfter)
		if err != nil {
			why = fmt.Sprintf("reading the op log of %s after %d: %v", src, h.fetchAfter, err)
		}
		if why != h.lastErr {
			m.log.Warn("heal could not read an op log; retrying", "brick", h.id, "err", why, "retry_in", m.cfg.HealRetry)
		}
		h.lastErr = why
		h.turn++
		h.fetchAt = m.now.Add(m.cfg.HealRetry)
	}
}

// caughtUp: h applied everything the head does not retain, and lacks
// little enough that it can follow the live stream as an ISR brick.
func (m *Machine) caughtUp(h *healer) bool {
	if h.conn != connUp || h.full != "" || h.verify != 0 || h.applied < m.trimSeq {
		return false
	}
	return m.seqBytes-m.cumAt(h.applied) <= m.cfg.MaxInflightBytes/4
}

// cumAt is seqBytes as it was when seq was sequenced; seq ≥ trimSeq.
func (m *Machine) cumAt(seq uint64) int64 {
	if e := m.entry(seq); e != nil {
		return e.cum
	}
	return m.seqBytes - m.inflight
}

// proposeJoin proposes the first caught-up healer into the ISR, at this
// head's epoch, once its synced seq covers every Sync completed or pending
// and it acknowledged an op on its stream (it sequences an fsync barrier for
// that when no pending op will do).
// From the proposal on, the brick holds the retained window (trim) and
// counts for fsync, so whatever Raft decides, it joins with every op a
// completed Sync covered durable on it.
func (m *Machine) proposeJoin() {
	if m.proposing || m.now.Before(m.proposeAt) {
		return
	}
	for _, id := range m.placement {
		h := m.healers[id]
		if h == nil || !m.caughtUp(h) {
			continue
		}
		need := m.covered
		if n := len(m.syncs); n > 0 {
			need = max(need, m.syncs[n-1].seq)
		}
		if h.synced < need || h.applied == h.start {
			// It must fsync what Syncs covered, and prove it is alive by
			// acknowledging something on this stream: sequence a barrier
			// unless one it will apply (or a pending op) does that.
			noBarrier := h.synced < need && (m.lastSync < need || m.lastSync <= h.start)
			idle := h.applied == h.start && h.sent == m.lastSeq
			if noBarrier || idle {
				m.newBarrier()
				m.log.Info("fsync barrier for a brick about to rejoin the ISR", "brick", id, "synced", h.synced, "needs", need, "barrier", m.lastSync)
			}
			continue
		}
		isr := m.inPlacement(append(slices.Clone(m.isr), id))
		m.proposing, m.joining = true, id
		m.log.Warn("healed brick caught up; adding it to the ISR through Raft", "brick", id, "applied", h.applied, "synced", h.synced,
			"last_seq", m.lastSeq, "isr", isr, "heal_bytes", h.healBytes, "heal_ops_from_log", h.logOps)
		m.emit(ProposeISR{Epoch: m.epoch, ISR: isr})
		return
	}
}

// admitBrick turns the healer of id (if any) into an ISR brick that Raft
// just added. ours: the head proposed it; then it keeps the heal stream
// when it can resume from it (everything after what it was sent is
// retained), and what the brick acknowledged. Added by someone else (an
// external full heal), the brick is taken as new: its stream reports
// where it stands.
func (m *Machine) admitBrick(id string, ours bool) *brick {
	b := &brick{id: id, applied: m.trimSeq, sent: m.trimSeq, since: m.now}
	h := m.healers[id]
	if h == nil {
		return b
	}
	delete(m.healers, id)
	if h.fetch != 0 {
		m.emit(CancelFetch{Brick: id, Fetch: h.fetch})
	}
	if !ours {
		if h.conn != connDown {
			m.emit(CloseStream{Brick: id, Gen: h.gen})
		}
		return b
	}
	ok := h.known && h.full == "" && h.verify == 0 && h.applied >= m.trimSeq
	switch {
	case h.conn == connUp && ok && h.sent >= m.trimSeq:
		b.gen, b.conn, b.known = h.gen, connUp, true
		b.applied, b.sent, b.synced = h.applied, h.sent, h.synced
		m.rebarrier(b, h.start)
		return b
	case h.conn == connOpening:
		b.gen, b.conn = h.gen, connOpening // its StreamUp decides
	case h.conn == connUp:
		m.emit(CloseStream{Brick: id, Gen: h.gen})
	}
	if ok {
		b.applied, b.sent, b.synced, b.known = h.applied, h.applied, h.synced, true
	}
	if h.full != "" {
		b.out, b.full, b.sticky = h.full, h.full, h.sticky
	}
	return b
}

// leftISR starts healing a brick Raft just removed from the ISR.
func (m *Machine) leftISR(b *brick) {
	h := &healer{id: b.id, retryAt: m.now, lastErr: b.lastErr}
	if b.full != "" {
		h.full, h.sticky = fmt.Sprintf("brick %s needs a full resync: it %s", b.id, b.full), b.sticky
		m.log.Error("BRICK NEEDS A FULL RESYNC: it left the ISR with a replica that differs from the others; "+
			"a checksum resync must repair it (this head does not do one)", "brick", b.id, "why", b.full)
	}
	m.healers[b.id] = h
}

func (m *Machine) healState(h *healer) string {
	switch {
	case h.full != "":
		return HealNeedsFull
	case h.conn == connUp:
		return HealHealing
	}
	return HealUnreachable
}

// healReasons describes the healers for the state reason (stable words:
// no counters, so the reason changes only with a heal's phase).
func (m *Machine) healReasons() (rs []string, healing bool) {
	for _, id := range m.placement {
		h := m.healers[id]
		if h == nil {
			continue
		}
		switch m.healState(h) {
		case HealHealing:
			healing = true
			if m.joining == id {
				rs = append(rs, "brick "+id+" is joining the ISR")
			} else {
				rs = append(rs, "brick "+id+" is catching up")
			}
		case HealNeedsFull:
			rs = append(rs, h.full)
		default:
			rs = append(rs, "brick "+id+" is unreachable")
		}
	}
	return rs, healing
}

func (m *Machine) healStatus(h *healer) HealStatus {
	s := HealStatus{ID: h.id, State: m.healState(h), Stream: h.conn.String(), Applied: h.applied, Synced: h.synced, Target: m.lastSeq,
		BytesRemaining: -1, ETA: -1, Rate: h.rate, Reason: h.full}
	if s.Reason == "" {
		s.Reason = h.lastErr
	}
	if !h.known {
		return s
	}
	if h.applied < m.lastSeq {
		s.OpsRemaining = m.lastSeq - h.applied
	}
	if s.State == HealHealing {
		switch {
		case m.joining == h.id:
			s.Phase = "joining"
		case h.verify != 0:
			s.Phase, s.Source = "verifying", h.source
		case h.sent < m.trimSeq || len(h.buf) > 0 || h.fetch != 0:
			s.Phase, s.Source = "op-log", h.source
		default:
			s.Phase = "retained"
		}
	}
	switch {
	case h.applied >= m.trimSeq:
		s.BytesRemaining = m.seqBytes - m.cumAt(min(h.applied, m.lastSeq))
	case h.logOps > 0:
		s.BytesRemaining = m.inflight + int64(m.trimSeq-h.applied)*(h.logBytes/int64(h.logOps))
	}
	if s.Rate < 1 {
		s.Rate = 0
	}
	if s.BytesRemaining >= 0 && s.Rate > 0 {
		s.ETA = time.Duration(min(float64(s.BytesRemaining)/s.Rate, 1e6) * float64(time.Second))
	}
	return s
}

// OriginEpoch is the epoch of the head that sequenced op: its identity
// together with its seq, whatever head forwarded it last.
func OriginEpoch(op *brickpb.Op) uint64 {
	if op.GetOriginEpoch() != 0 {
		return op.GetOriginEpoch()
	}
	return op.GetEpoch()
}

// resynced forgets why h needed a full resync and reopens its stream at
// once: the brick holds a fresh copy (Resynced), checked from scratch.
func (m *Machine) resynced(h *healer) {
	m.log.Warn("brick was resynced in full: healing it from its new position", "brick", h.id, "was", h.full)
	h.full, h.sticky, h.stalls = "", false, 0
	if h.conn == connDown {
		h.retryAt = m.now
		return
	}
	m.healDown(h, "resynced", true)
}
