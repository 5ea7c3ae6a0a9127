package head

import (
	"fmt"
	"slices"
	"strings"
)

// reconcile decides, after every event, which ISR bricks must leave, and
// either proposes the smaller ISR to Raft or — when that would go below
// min-isr — turns read-only. With nothing to drop (or nothing it may drop),
// it proposes a caught-up healing brick back in (heal.go). It never changes
// m.isr itself: only ISRCommitted does.
func (m *Machine) reconcile() {
	m.leaving = m.leaving[:0]
	clear(m.leaveWhy)
	for _, id := range m.isr {
		b := m.bricks[id]
		why := b.out
		if why == "" {
			why = m.overdue(b)
		}
		if why != "" {
			m.leaving = append(m.leaving, id)
			m.leaveWhy[id] = why
		}
	}
	remain := len(m.isr) - len(m.leaving)
	switch {
	case len(m.isr) < m.cfg.MinISR:
		m.setReadOnly(fmt.Sprintf("the ISR %v has %d bricks, fewer than min-isr %d", m.isr, len(m.isr), m.cfg.MinISR))
		m.proposeJoin() // the cure
		return
	case remain < m.cfg.MinISR:
		m.setReadOnly(fmt.Sprintf("%s; dropping them would leave %d bricks in the ISR, fewer than min-isr %d",
			m.describeLeaving(), remain, m.cfg.MinISR))
		m.proposeJoin() // then they can go
		return
	}
	if m.readOnly != "" {
		m.log.Warn("volume writable again", "was", m.readOnly, "isr", m.isr)
		m.readOnly = ""
	}
	if len(m.leaving) == 0 {
		m.proposeJoin()
		return
	}
	if m.proposing || m.now.Before(m.proposeAt) {
		return
	}
	isr := make([]string, 0, remain)
	for _, id := range m.isr {
		if m.leaveWhy[id] == "" {
			isr = append(isr, id)
		}
	}
	m.proposing = true
	m.log.Warn("dropping bricks from the ISR through Raft", "why", m.describeLeaving(), "isr", isr)
	m.emit(ProposeISR{Epoch: m.epoch, ISR: isr})
}

func (m *Machine) describeLeaving() string {
	parts := make([]string, 0, len(m.leaving))
	for _, id := range m.leaving {
		parts = append(parts, "brick "+id+": "+m.leaveWhy[id])
	}
	return strings.Join(parts, "; ")
}

// overdue says why b has kept the head waiting for ReplicaTimeout, or "".
// The clock starts when the op (or barrier) was sequenced, or when b joined
// the ISR if later; a stream that is down or reopening does not stop it.
func (m *Machine) overdue(b *brick) string {
	t := m.cfg.ReplicaTimeout
	if b.applied < m.lastSeq {
		if e := m.entry(b.applied + 1); e != nil && !m.now.Before(later(e.at, b.since).Add(t)) {
			return fmt.Sprintf("no acknowledgement of seq %d within the replica timeout %s", b.applied+1, t)
		}
	}
	for _, s := range m.syncs {
		if b.synced >= s.seq {
			continue
		}
		if !m.now.Before(later(s.at, b.since).Add(t)) {
			return fmt.Sprintf("no fsync acknowledgement of seq %d within the replica timeout %s", s.seq, t)
		}
		break
	}
	return ""
}

// setReadOnly enters (or stays in) read-only; see the package doc for what
// happens to the ops in flight.
func (m *Machine) setReadOnly(why string) {
	if m.readOnly != why {
		m.log.Error("VOLUME READ-ONLY: the ISR cannot shrink below min-isr", "reason", why, "isr", m.isr, "min_isr", m.cfg.MinISR)
	}
	m.readOnly = why
	err := &ReadOnlyError{Reason: why}
	for _, p := range m.backlog {
		m.complete(p.waiter, nil, err)
	}
	m.backlog = nil
	m.checkSyncs()
	for _, s := range m.syncs {
		m.complete(s.waiter, nil, fmt.Errorf("fsync of seq %d not durable on every ISR brick: %w", s.seq, err))
	}
	m.syncs = nil
	// A healthy primary still answers the ops it applies; waiters it can no
	// longer answer (it is leaving, or it applied the op and the result was
	// lost) fail.
	p := m.bricks[m.primary]
	keep := m.waiting[:0]
	for _, s := range m.waiting {
		e := m.entry(s)
		switch {
		case e == nil || e.waiter == 0:
		case p != nil && m.leaveWhy[p.id] == "" && (!p.known || s > p.applied):
			keep = append(keep, s)
		case p != nil && m.leaveWhy[p.id] == "":
			m.fallback(e, ErrNoResult)
		default:
			w := e.waiter
			e.waiter = 0
			m.complete(w, nil, fmt.Errorf("op seq %d was sequenced and may still be applied, but its primary %q cannot answer: %w", s, m.primary, err))
		}
	}
	m.waiting = keep
}

func (m *Machine) isrCommitted(e ISRCommitted) {
	join := ""
	if e.Proposed {
		m.proposing, m.propErr = false, ""
		join, m.joining = m.joining, ""
	}
	switch {
	case e.Epoch > m.epoch:
		m.fence(fmt.Sprintf("Raft committed an ISR at epoch %d", e.Epoch))
		return
	case e.Epoch < m.epoch, e.Index != 0 && e.Index < m.isrIndex:
		return
	}
	m.isrIndex = max(m.isrIndex, e.Index)
	next := m.inPlacement(e.ISR)
	if slices.Equal(next, m.isr) {
		return
	}
	for _, id := range m.isr {
		if !slices.Contains(next, id) {
			b := m.bricks[id]
			if b.conn != connDown {
				m.emit(CloseStream{Brick: id, Gen: b.gen})
			}
			delete(m.bricks, id)
			m.log.Warn("brick left the ISR; healing it in the background", "brick", id, "why", m.leaveWhy[id], "applied", b.applied, "synced", b.synced)
			m.leftISR(b)
		}
	}
	for _, id := range next {
		if m.bricks[id] == nil {
			b := m.admitBrick(id, id == join)
			m.bricks[id] = b
			m.log.Info("brick joined the ISR", "brick", id, "applied", b.applied, "synced", b.synced, "stream", b.conn.String(), "proposed_here", id == join)
		}
	}
	m.isr = next
	m.choosePrimary()
	m.emit(ISRChanged{Epoch: m.epoch, ISR: slices.Clone(m.isr), Primary: m.primary})
	m.trim()
}

func (m *Machine) inPlacement(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range m.placement {
		if slices.Contains(ids, id) {
			out = append(out, id)
		}
	}
	if len(out) != len(ids) {
		m.log.Warn("ignoring ISR bricks outside the placement (or listed twice)", "isr", ids, "placement", m.placement)
	}
	return out
}

func (m *Machine) preferredPrimary() string {
	if m.cfg.Primary != "" && slices.Contains(m.isr, m.cfg.Primary) {
		return m.cfg.Primary
	}
	if len(m.isr) > 0 {
		return m.isr[0]
	}
	return ""
}

// choosePrimary moves the primary after an ISR change: waiting ops are
// answered from the new primary's results (already received, or when they
// arrive), each exactly once, and results are compared against it.
func (m *Machine) choosePrimary() {
	p := m.preferredPrimary()
	if p == m.primary {
		return
	}
	m.log.Warn("primary changed", "from", m.primary, "to", p)
	m.primary = p
	if p == "" {
		return
	}
	for s := m.trimSeq + 1; s <= m.lastSeq; s++ {
		e := m.entry(s)
		if r := e.results[p]; r != nil {
			m.answer(e, r)
			m.compare(e)
		}
	}
	m.answerApplied()
}

func (m *Machine) proposalFailed(e ISRProposalFailed) {
	if !m.proposing {
		return
	}
	m.proposing = false
	if m.joining != "" {
		m.log.Warn("adding a healed brick to the ISR was not committed; it keeps following, retrying", "brick", m.joining)
		m.joining = ""
	}
	if e.Stale {
		m.fence(fmt.Sprintf("Raft refused its ISR change as stale: %v", e.Err))
		return
	}
	m.propErr = errText(e.Err)
	m.proposeAt = m.now.Add(m.cfg.ProposalRetry)
	m.log.Warn("ISR change not committed; ops keep waiting, retrying", "err", e.Err, "retry_in", m.cfg.ProposalRetry)
}

// fence ends this head's writing life: every waiter fails with the
// FencedError, every stream closes, nothing more is sent or proposed.
func (m *Machine) fence(reason string) {
	if m.fenced != nil || m.stopped != nil {
		return
	}
	m.fenced = &FencedError{Epoch: m.epoch, Reason: reason}
	m.log.Error("HEAD FENCED: a newer epoch exists, every further op fails", "reason", reason)
	m.failAll(m.fenced)
	m.closeAll()
	m.proposing = false
}

func (m *Machine) updateState() {
	st, why := StateHealthy, ""
	switch {
	case m.fenced != nil:
		st, why = StateFenced, m.fenced.Error()
	case m.readOnly != "":
		st, why = StateReadOnly, m.readOnly
	default:
		var rs []string
		if len(m.leaving) > 0 {
			rs = append(rs, "dropping from the ISR: "+m.describeLeaving())
			if m.propErr != "" {
				rs = append(rs, "Raft has not committed the change ("+m.propErr+"); retrying")
			}
		}
		if len(m.isr) < len(m.placement) {
			rs = append(rs, fmt.Sprintf("ISR %v is smaller than the placement %v", m.isr, m.placement))
		}
		hs, healing := m.healReasons()
		rs = append(rs, hs...)
		switch {
		case healing:
			st, why = StateHealing, strings.Join(rs, "; ")
		case len(rs) > 0:
			st, why = StateDegraded, strings.Join(rs, "; ")
		}
	}
	if st == m.state && why == m.reason {
		return
	}
	m.state, m.reason = st, why
	m.emit(StateChanged{State: st, Reason: why})
	m.log.Info("volume state", "state", st, "reason", why)
}

// Status is a snapshot of the machine; the slices are the caller's.
func (m *Machine) Status() Status {
	s := Status{
		Volume: m.cfg.Volume, State: m.state, Reason: m.reason, Epoch: m.epoch,
		Placement: slices.Clone(m.placement), ISR: slices.Clone(m.isr), MinISR: m.cfg.MinISR,
		Primary: m.primary, LastSeq: m.lastSeq, TrimSeq: m.trimSeq, InflightBytes: m.inflight,
		Queued: len(m.backlog), PendingSyncs: len(m.syncs),
	}
	for _, id := range m.isr {
		b := m.bricks[id]
		s.Bricks = append(s.Bricks, BrickStatus{
			ID: id, Stream: b.conn.String(), Applied: b.applied, Synced: b.synced,
			Lag: m.lastSeq - b.applied, Leaving: m.leaveWhy[id], LastErr: b.lastErr,
		})
	}
	for _, id := range m.placement {
		if h := m.healers[id]; h != nil {
			s.Heals = append(s.Heals, m.healStatus(h))
		}
	}
	return s
}
