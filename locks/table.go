package locks

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Table is a volume's lock table. The zero value is not usable; call New.
type Table struct {
	mu    sync.Mutex
	files map[uint64]*file // only files with locks
	// waiters are the Waits blocked now, by owner: for deadlock detection
	// and so ReleaseSession can fail its own session's.
	waiters map[Owner][]*waiter
}

type waiter struct {
	fid      uint64
	l        Lock
	released bool // set by ReleaseSession; the Wait returns ErrReleased
}

// New returns an empty table.
func New() *Table {
	return &Table{files: make(map[uint64]*file), waiters: make(map[Owner][]*waiter)}
}

// Get is F_GETLK: the first lock held by another owner that conflicts with
// l, or ok=false. A Type of Unlock is EINVAL (as on Linux); err wraps
// ErrInvalid only for bad input.
func (t *Table) Get(fid uint64, l Lock) (conflict Lock, ok bool, err error) {
	if err := validateGet(l); err != nil {
		return Lock{}, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.files[fid]; f != nil {
		conflict, ok = f.conflict(l)
	}
	return conflict, ok, nil
}

// Set is F_SETLK and non-blocking flock: it grants l, or returns
// ErrWouldBlock (wrapping syscall.EAGAIN) and changes nothing. A Type of
// Unlock removes the owner's locks in the range, splitting them as needed.
func (t *Table) Set(fid uint64, l Lock) error {
	if err := l.Validate(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.set(fid, l)
}

// set is Set under t.mu, after validation.
func (t *Table) set(fid uint64, l Lock) error {
	f := t.files[fid]
	if f == nil {
		if l.Type == Unlock {
			return nil
		}
		f = &file{}
		t.files[fid] = f
	} else if _, ok := f.conflict(l); ok {
		return ErrWouldBlock
	}
	if f.apply(l) {
		f.signal()
	}
	t.gc(fid, f)
	return nil
}

// gc forgets an empty file; its waiters were woken by the release that
// emptied it, and are woken again here to be sure none sleeps on a channel
// that nothing would ever close.
func (t *Table) gc(fid uint64, f *file) {
	if f.empty() {
		f.signal()
		delete(t.files, fid)
	}
}

// Wait is F_SETLKW and blocking flock: it blocks until l is granted, ctx is
// done (ErrInterrupted, wrapping syscall.EINTR and the context's cause), the
// owner's session is released (ErrReleased, also EINTR), or, for POSIX
// locks, granting would have to wait for a cycle of owners (ErrDeadlock,
// wrapping syscall.EDEADLK). On any error nothing has changed.
func (t *Table) Wait(ctx context.Context, fid uint64, l Lock) error {
	if err := l.Validate(); err != nil {
		return err
	}
	var w *waiter
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if w != nil && w.released {
			t.unwait(w)
			return ErrReleased
		}
		if err := t.set(fid, l); err == nil {
			if w != nil {
				t.unwait(w)
			}
			return nil
		}
		if l.Kind == Posix && t.deadlocked(fid, l) {
			if w != nil {
				t.unwait(w)
			}
			return ErrDeadlock
		}
		if w == nil {
			w = &waiter{fid: fid, l: l}
			t.waiters[l.Owner] = append(t.waiters[l.Owner], w)
		}
		f := t.files[fid] // exists: set found a conflict in it
		if f.wake == nil {
			f.wake = make(chan struct{})
		}
		wake := f.wake
		t.mu.Unlock()
		select {
		case <-wake:
			t.mu.Lock()
		case <-ctx.Done():
			t.mu.Lock()
			t.unwait(w)
			return fmt.Errorf("%w (%w)", ErrInterrupted, context.Cause(ctx))
		}
	}
}

func (t *Table) unwait(w *waiter) {
	ws := t.waiters[w.l.Owner]
	if i := slices.Index(ws, w); i >= 0 {
		ws = slices.Delete(ws, i, i+1)
	}
	if len(ws) == 0 {
		delete(t.waiters, w.l.Owner)
	} else {
		t.waiters[w.l.Owner] = ws
	}
}

// deadlocked reports whether the owners holding locks that block l are,
// transitively through their own blocked POSIX Waits, waiting for l's owner.
func (t *Table) deadlocked(fid uint64, l Lock) bool {
	seen := make(map[Owner]bool)
	var stack []Owner
	blockers := func(fid uint64, l Lock) {
		f := t.files[fid]
		if f == nil {
			return
		}
		for _, x := range f.posix {
			if conflicts(x, l) && !seen[x.Owner] {
				seen[x.Owner] = true
				stack = append(stack, x.Owner)
			}
		}
	}
	blockers(fid, l)
	for len(stack) > 0 {
		o := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if o == l.Owner {
			return true
		}
		for _, w := range t.waiters[o] {
			if w.l.Kind == Posix && !w.released {
				blockers(w.fid, w.l)
			}
		}
	}
	return false
}

// ReleaseOwner drops every lock of kind that owner holds on fid: for POSIX,
// what closing any descriptor of the file does; for flock, the last close of
// the open file.
func (t *Table) ReleaseOwner(fid uint64, kind Kind, owner Owner) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.files[fid]
	if f == nil {
		return
	}
	if f.release(func(x Lock) bool { return x.Kind == kind && x.Owner == owner }) > 0 {
		f.signal()
	}
	t.gc(fid, f)
}

// ReleaseSession drops every lock of session (its host went away), wakes the
// waiters this frees, fails the session's own pending Waits with
// ErrReleased, and returns how many locks it dropped.
func (t *Table) ReleaseSession(session string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for fid, f := range t.files {
		if d := f.release(func(x Lock) bool { return x.Owner.Session == session }); d > 0 {
			n += d
			f.signal()
		}
		t.gc(fid, f)
	}
	for o, ws := range t.waiters {
		if o.Session != session {
			continue
		}
		for _, w := range ws {
			w.released = true
			if f := t.files[w.fid]; f != nil {
				f.signal()
			} // else the file's last release already woke it
		}
	}
	return n
}

// Held lists session's locks ordered by file, kind, owner and start: what
// the session re-asserts to a new head after a failover.
func (t *Table) Held(session string) []Held {
	t.mu.Lock()
	defer t.mu.Unlock()
	return held(t.files, func(l Lock) bool { return l.Owner.Session == session })
}

// held lists the locks of files that keep passes, sorted (cmpHeld).
func held(files map[uint64]*file, keep func(Lock) bool) []Held {
	var out []Held
	for fid, f := range files {
		for _, ls := range [][]Lock{f.posix, f.flock} {
			for _, x := range ls {
				if keep(x) {
					out = append(out, Held{Fid: fid, Lock: x})
				}
			}
		}
	}
	slices.SortFunc(out, cmpHeld)
	return out
}

// count is the number of locks in files.
func count(files map[uint64]*file) int {
	n := 0
	for _, f := range files {
		n += len(f.posix) + len(f.flock)
	}
	return n
}

// Len reports the number of held locks (each POSIX range counts once).
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return count(t.files)
}
