package locks

import (
	"cmp"
	"fmt"
	"math"
	"syscall"
)

// Kind is the lock family; locks of different kinds never conflict.
type Kind uint8

const (
	Posix Kind = iota // fcntl and OFD byte-range locks
	Flock             // BSD whole-file locks
)

func (k Kind) String() string {
	switch k {
	case Posix:
		return "posix"
	case Flock:
		return "flock"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Type is the lock type. The values equal Linux's F_RDLCK, F_WRLCK and
// F_UNLCK, but callers should convert explicitly.
type Type uint8

const (
	Read   Type = iota // shared
	Write              // exclusive
	Unlock             // remove
)

func (t Type) String() string {
	switch t {
	case Read:
		return "read"
	case Write:
		return "write"
	case Unlock:
		return "unlock"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Owner identifies who holds a lock: the client session (one per mount
// process of a host) and the kernel's lock owner id within it.
type Owner struct {
	Session string
	ID      uint64
}

func (o Owner) String() string { return fmt.Sprintf("%s/%#x", o.Session, o.ID) }

// Lock is a lock request or a held lock.
type Lock struct {
	Kind  Kind
	Type  Type
	Owner Owner
	Pid   uint32 // reported by Get for the conflicting lock
	Start uint64 // first byte
	End   uint64 // last byte, inclusive; math.MaxUint64 = to end of file
}

func (l Lock) String() string {
	end := fmt.Sprint(l.End)
	if l.End == math.MaxUint64 {
		end = "EOF"
	}
	return fmt.Sprintf("%s %s %s pid %d [%d,%s]", l.Kind, l.Type, l.Owner, l.Pid, l.Start, end)
}

// Held is one held lock and the file it is on.
type Held struct {
	Fid  uint64
	Lock Lock
}

var (
	// ErrWouldBlock: another owner holds a conflicting lock.
	ErrWouldBlock = fmt.Errorf("locks: conflicting lock held: %w", syscall.EAGAIN)
	// ErrDeadlock: a POSIX Wait would close a cycle of waiting owners.
	ErrDeadlock = fmt.Errorf("locks: wait would deadlock: %w", syscall.EDEADLK)
	// ErrInterrupted: a Wait's context was done first. The returned error
	// also wraps the context's cause.
	ErrInterrupted = fmt.Errorf("locks: wait interrupted: %w", syscall.EINTR)
	// ErrReleased: the waiter's session was released while it waited.
	ErrReleased = fmt.Errorf("locks: session released while waiting: %w", syscall.EINTR)
	// ErrInvalid: a malformed request; the returned error says what.
	ErrInvalid = fmt.Errorf("locks: invalid lock: %w", syscall.EINVAL)
)

// Validate reports whether l is a well-formed Set or Wait request: a known
// Kind and Type, Start <= End, and a Flock lock covering the whole file. The
// error wraps ErrInvalid (and so syscall.EINVAL).
func (l Lock) Validate() error {
	switch {
	case l.Kind > Flock:
		return fmt.Errorf("%w: unknown kind %d", ErrInvalid, uint8(l.Kind))
	case l.Type > Unlock:
		return fmt.Errorf("%w: unknown type %d", ErrInvalid, uint8(l.Type))
	case l.Start > l.End:
		return fmt.Errorf("%w: start %d after end %d", ErrInvalid, l.Start, l.End)
	case l.Kind == Flock && (l.Start != 0 || l.End != math.MaxUint64):
		return fmt.Errorf("%w: flock range [%d,%d] is not the whole file", ErrInvalid, l.Start, l.End)
	}
	return nil
}

// validateGet adds F_GETLK's rule: asking about an unlock is EINVAL on Linux.
func validateGet(l Lock) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if l.Type == Unlock {
		return fmt.Errorf("%w: get of an unlock", ErrInvalid)
	}
	return nil
}

// file is the locks of one file. Both lists are kept sorted by cmpLock; an
// owner's POSIX ranges are disjoint and no two of one type touch, and an
// owner has at most one flock.
type file struct {
	posix []Lock
	flock []Lock
	// wake is closed (and cleared) when a lock on the file is released or
	// downgraded; nil until a waiter needs it.
	wake chan struct{}
}

func (f *file) list(k Kind) []Lock {
	if k == Flock {
		return f.flock
	}
	return f.posix
}

func (f *file) empty() bool { return len(f.posix) == 0 && len(f.flock) == 0 }

func (f *file) signal() {
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
}

func overlaps(a, b Lock) bool { return a.Start <= b.End && b.Start <= a.End }

// touches is overlaps or adjacent; Start-1 wraps only when Start is 0, and
// then the first comparison already holds.
func touches(a, b Lock) bool {
	return (a.Start <= b.End || a.Start-1 == b.End) && (b.Start <= a.End || b.Start-1 == a.End)
}

// conflicts assumes a and b are of the same kind.
func conflicts(a, b Lock) bool {
	return a.Owner != b.Owner && overlaps(a, b) && (a.Type == Write || b.Type == Write)
}

func cmpOwner(a, b Owner) int {
	return cmp.Or(cmp.Compare(a.Session, b.Session), cmp.Compare(a.ID, b.ID))
}

func cmpLock(a, b Lock) int {
	return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.End, b.End), cmpOwner(a.Owner, b.Owner))
}

func cmpHeld(a, b Held) int {
	return cmp.Or(cmp.Compare(a.Fid, b.Fid), cmp.Compare(a.Lock.Kind, b.Lock.Kind),
		cmpOwner(a.Lock.Owner, b.Lock.Owner), cmp.Compare(a.Lock.Start, b.Lock.Start))
}

// conflict returns the first lock (in cmpLock order) that conflicts with l.
func (f *file) conflict(l Lock) (Lock, bool) {
	if l.Type == Unlock {
		return Lock{}, false
	}
	for _, x := range f.list(l.Kind) {
		if l.Kind == Posix && x.Start > l.End {
			break // sorted by Start: nothing further overlaps
		}
		if conflicts(x, l) {
			return x, true
		}
	}
	return Lock{}, false
}

// apply records l (already validated, conflicts already checked) for its
// owner. It reports whether any lock was removed or changed type, i.e.
// whether a waiter may now succeed.
func (f *file) apply(l Lock) (released bool) {
	if l.Kind == Flock {
		out := make([]Lock, 0, len(f.flock)+1)
		for _, x := range f.flock {
			if x.Owner == l.Owner {
				released = x.Type != l.Type
				continue
			}
			out = append(out, x)
		}
		if l.Type != Unlock {
			out = insertSorted(out, l)
		}
		f.flock = out
		return released
	}
	merged := l // grows over the owner's same-type locks it touches
	out := make([]Lock, 0, len(f.posix)+2)
	for _, x := range f.posix {
		switch {
		case x.Owner != l.Owner:
		case l.Type != Unlock && x.Type == l.Type && touches(x, l):
			// The owner's same-type ranges never touch each other, so
			// checking against l (not merged) finds all of them.
			merged.Start = min(merged.Start, x.Start)
			merged.End = max(merged.End, x.End)
			continue
		case overlaps(x, l):
			released = true // a different type (or an unlock) replaces it here
			if x.Start < l.Start {
				left := x
				left.End = l.Start - 1
				out = append(out, left)
			}
			if x.End > l.End {
				right := x
				right.Start = l.End + 1
				out = append(out, right)
			}
			continue
		}
		out = append(out, x)
	}
	if l.Type != Unlock {
		out = append(out, merged)
	}
	sortLocks(out)
	f.posix = out
	return released
}

// release drops the locks drop selects and returns how many it dropped.
func (f *file) release(drop func(Lock) bool) int {
	n := 0
	filter := func(ls []Lock) []Lock {
		out := ls[:0]
		for _, x := range ls {
			if drop(x) {
				n++
				continue
			}
			out = append(out, x)
		}
		clear(ls[len(out):]) // no stale copies past the end
		return out
	}
	f.posix = filter(f.posix)
	f.flock = filter(f.flock)
	return n
}

func insertSorted(ls []Lock, l Lock) []Lock {
	i := 0
	for i < len(ls) && cmpLock(ls[i], l) < 0 {
		i++
	}
	ls = append(ls, Lock{})
	copy(ls[i+1:], ls[i:])
	ls[i] = l
	return ls
}

// sortLocks is an insertion sort: apply's output is sorted but for the few
// pieces it moved, and the lists are short.
func sortLocks(ls []Lock) {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && cmpLock(ls[j-1], ls[j]) > 0; j-- {
			ls[j-1], ls[j] = ls[j], ls[j-1]
		}
	}
}
