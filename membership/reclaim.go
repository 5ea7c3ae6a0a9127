package membership

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// A daemon restarted under its old name at a new address (a container that
// got a new IP, a daemon moved to port 0) announces itself as alive. Until
// its old address has been dead for memberlist's DeadNodeReclaimTime,
// memberlist refuses the announcement as a name conflict, and it does not
// look again until the next periodic state exchange, which may come much
// later or, if the exchange picks other members, not at all for a while.
// So we remember each refused claim and, once our table says the old
// address has been gone long enough, exchange state with the claimant
// ourselves: memberlist then accepts the new address.

// claimTTL is how long a refused claim is followed up after the last time
// it was made: long enough for the old address to be declared dead (up to
// a minute in the LAN profile) and the reclaim time to pass.
const claimTTL = 5 * time.Minute

// claimLogEvery rate-limits the warning about one name.
const claimLogEvery = time.Minute

type claim struct {
	addr   string    // the claimant's gossip address
	last   time.Time // last time memberlist refused it
	logged time.Time
}

// NotifyConflict is memberlist's ConflictDelegate: other claims
// existing.Name from another address. Called with memberlist's node lock
// held.
func (h hooks) NotifyConflict(existing, other *memberlist.Node) {
	h.m.noteClaim(existing.Name, existing.Address(), other.Address(), time.Now())
}

func (m *Membership) noteClaim(name, oldAddr, newAddr string, now time.Time) {
	m.mu.Lock()
	c, ok := m.claims[name]
	if !ok || c.addr != newAddr {
		c = &claim{addr: newAddr}
		m.claims[name] = c
	}
	c.last = now
	logIt := now.Sub(c.logged) >= claimLogEvery
	if logIt {
		c.logged = now
	}
	state := StateUnknown
	if e, ok := m.table.members[name]; ok {
		state = e.State
	}
	m.mu.Unlock()
	if logIt {
		m.log.Warn("member name claimed from a new address; accepting it once the old address has been dead for the reclaim time (if both are running, two daemons share this name)",
			"member", name, "old_addr", oldAddr, "old_state", state.String(), "new_addr", newAddr, "reclaim_after", m.reclaim)
	}
}

// followClaims exchanges state with claimants whose old address has now
// been gone for longer than the reclaim time, and forgets claims that were
// accepted or have expired. Called from the loop.
func (m *Membership) followClaims(now time.Time) {
	var targets []string
	m.mu.Lock()
	for name, c := range m.claims {
		e, ok := m.table.members[name]
		switch {
		case ok && e.Addr == c.addr && !e.State.gone():
			delete(m.claims, name) // accepted
		case now.Sub(c.last) > claimTTL:
			delete(m.claims, name)
		case ok && e.State.gone() && now.Sub(e.Since) > m.reclaim:
			targets = append(targets, c.addr)
		}
	}
	m.mu.Unlock()
	for _, addr := range targets {
		if _, err := m.ml.Join([]string{addr}); err != nil {
			m.log.Debug("could not reach a member that claimed its name from a new address", "addr", addr, "err", err)
		}
	}
}
