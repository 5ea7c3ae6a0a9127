package membership

import (
	"fmt"
	"sort"
	"time"
)

// State is a member's state as observed by this member.
type State int

const (
	// StateUnknown is the zero State. It is never a member's State; as
	// Event.Prev it means the member is new to us.
	StateUnknown State = iota
	// StateAlive: the member answers probes.
	StateAlive
	// StateSuspect: our own probe of the member failed; memberlist will
	// declare it dead unless it refutes in time.
	StateSuspect
	// StateDead: the failure detector declared the member dead.
	StateDead
	// StateLeft: the member left gracefully (Leave).
	StateLeft
)

// String returns "alive", "suspect", "dead", "left" or "unknown".
func (s State) String() string {
	switch s {
	case StateUnknown:
		return "unknown"
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// gone reports whether s is StateDead or StateLeft.
func (s State) gone() bool { return s == StateDead || s == StateLeft }

// Member is one member as observed locally. It is a value; callers own it.
type Member struct {
	Name  string
	Addr  string // gossip host:port
	Meta  Meta
	State State
	// Since is the local time the member entered State (for a member first
	// seen already alive, when we first saw it).
	Since time.Time
}

// Event reports a change to one member:
//
//   - Prev == StateUnknown: the member is new to us (Member.State says in
//     which state we first saw it, normally alive);
//   - Prev != Member.State: a state change (alive→suspect, suspect→dead,
//     dead→alive after a restart, ...);
//   - Prev == Member.State: its Meta or Addr changed.
type Event struct {
	Member Member
	Prev   State
}

// observation is what a memberlist callback tells us about a member.
type observation struct {
	Name    string
	Addr    string
	Meta    Meta
	Leaving bool
}

type entry struct {
	Member
	leaving bool
}

// table is the member table as a deterministic state machine: callbacks
// feed it observations with the current time, and it answers with the Event
// to publish, if any. It does no I/O and is not safe for concurrent use.
type table struct {
	self      string
	retention time.Duration
	members   map[string]*entry
}

func newTable(self string, retention time.Duration) *table {
	return &table{self: self, retention: retention, members: make(map[string]*entry)}
}

// alive records that memberlist accepted an alive message: a join, a rejoin
// or a metadata update. All of them mean the member is alive.
func (t *table) alive(o observation, now time.Time) (Event, bool) {
	return t.set(o, StateAlive, now)
}

// gone records memberlist's NotifyLeave: left if the member announced it was
// leaving, dead otherwise.
func (t *table) gone(o observation, now time.Time) (Event, bool) {
	st := StateDead
	if o.Leaving {
		st = StateLeft
	}
	return t.set(o, st, now)
}

func (t *table) set(o observation, st State, now time.Time) (Event, bool) {
	e, ok := t.members[o.Name]
	if !ok {
		e = &entry{Member: Member{Name: o.Name, Addr: o.Addr, Meta: o.Meta, State: st, Since: now}, leaving: o.Leaving}
		t.members[o.Name] = e
		return Event{Member: e.Member, Prev: StateUnknown}, true
	}
	prev := e.State
	changed := e.Addr != o.Addr || e.Meta != o.Meta
	e.Addr, e.Meta, e.leaving = o.Addr, o.Meta, o.Leaving
	if prev != st {
		e.State, e.Since = st, now
		return Event{Member: e.Member, Prev: prev}, true
	}
	if changed {
		return Event{Member: e.Member, Prev: prev}, true
	}
	return Event{}, false
}

// suspect records that our probe of name failed. Only an alive member can
// become suspect; a dead one stays dead.
func (t *table) suspect(name string, now time.Time) (Event, bool) {
	return t.move(name, StateAlive, StateSuspect, now)
}

// acked records that our probe of name succeeded, which clears suspicion.
func (t *table) acked(name string, now time.Time) (Event, bool) {
	return t.move(name, StateSuspect, StateAlive, now)
}

func (t *table) move(name string, from, to State, now time.Time) (Event, bool) {
	e, ok := t.members[name]
	if !ok || e.State != from || name == t.self {
		return Event{}, false
	}
	e.State, e.Since = to, now
	return Event{Member: e.Member, Prev: from}, true
}

// expired reports whether e has been dead or left for longer than the
// retention.
func (t *table) expired(e *entry, now time.Time) bool {
	return e.State.gone() && e.Name != t.self && now.Sub(e.Since) > t.retention
}

// prune forgets members dead or left for longer than the retention.
func (t *table) prune(now time.Time) {
	for name, e := range t.members {
		if t.expired(e, now) {
			delete(t.members, name)
		}
	}
}

// get returns one member, unless it has expired.
func (t *table) get(name string, now time.Time) (Member, bool) {
	e, ok := t.members[name]
	if !ok || t.expired(e, now) {
		return Member{}, false
	}
	return e.Member, true
}

// list returns all unexpired members sorted by name.
func (t *table) list(now time.Time) []Member {
	out := make([]Member, 0, len(t.members))
	for _, e := range t.members {
		if !t.expired(e, now) {
			out = append(out, e.Member)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
