package locks

import (
	"sync"
)

// Mirror is a client's record of the locks its session holds, kept with the
// same merge and split rules as Table, so that after a failover it can
// re-assert exactly what the old head had granted. It checks no conflicts:
// it records what a head decided. Safe for concurrent use.
type Mirror struct {
	mu    sync.Mutex
	files map[uint64]*file
}

// NewMirror returns an empty mirror.
func NewMirror() *Mirror { return &Mirror{files: make(map[uint64]*file)} }

// Apply records a granted Set or Wait (an Unlock too). Invalid requests,
// which a head never grants, are ignored.
func (m *Mirror) Apply(fid uint64, l Lock) {
	if l.Validate() != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[fid]
	if f == nil {
		if l.Type == Unlock {
			return
		}
		f = &file{}
		m.files[fid] = f
	}
	f.apply(l)
	if f.empty() {
		delete(m.files, fid)
	}
}

// ReleaseOwner forgets owner's locks of kind on fid, as Table.ReleaseOwner.
func (m *Mirror) ReleaseOwner(fid uint64, kind Kind, owner Owner) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[fid]
	if f == nil {
		return
	}
	f.release(func(x Lock) bool { return x.Kind == kind && x.Owner == owner })
	if f.empty() {
		delete(m.files, fid)
	}
}

// All lists the recorded locks in Table.Held's order.
func (m *Mirror) All() []Held {
	m.mu.Lock()
	defer m.mu.Unlock()
	return held(m.files, func(Lock) bool { return true })
}

// Len reports the number of recorded locks.
func (m *Mirror) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return count(m.files)
}
