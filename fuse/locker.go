package fuse

import "context"

// Locker is an optional Backend extension. A Backend that implements it
// gets the kernel's POSIX (fcntl, OFD) and BSD (flock) locks forwarded
// (FUSE_POSIX_LOCKS, FUSE_FLOCK_LOCKS) instead of the kernel keeping them
// on this host: what a volume mounted on several hosts at once needs, so a
// lock taken on one host is seen by all. Without it the kernel handles
// locks locally, which is right for a volume mounted on one host.
type Locker interface {
	// GetLock is F_GETLK: the first lock held by another owner that
	// conflicts with lk, if any.
	GetLock(ctx context.Context, fid, owner uint64, lk LockSpec) (conflict LockSpec, found bool, err error)
	// SetLock is F_SETLK (wait false) or F_SETLKW (wait true), and flock(2)
	// with lk.Flock. A conflict without wait is an error wrapping
	// syscall.EAGAIN; a wait ended by ctx (the kernel's interrupt) wraps
	// syscall.EINTR and leaves nothing granted.
	SetLock(ctx context.Context, fid, owner uint64, lk LockSpec, wait bool) error
	// ReleaseLocks drops owner's locks on fid: its POSIX locks when a file
	// descriptor of the file is closed (flush), its flock and OFD locks
	// when the open file is released (flock true). With flock true every
	// lock owner holds on fid goes, byte ranges included: an OFD lock is
	// a byte-range lock whose owner is the open file.
	ReleaseLocks(ctx context.Context, fid, owner uint64, flock bool) error
}

// LockSpec is one lock request or held lock.
type LockSpec struct {
	Flock bool   // BSD flock (whole file) rather than a POSIX byte range
	Type  uint32 // syscall.F_RDLCK, F_WRLCK or F_UNLCK
	Start uint64 // first byte
	End   uint64 // last byte, inclusive; math.MaxUint64 = to end of file
	Pid   uint32 // the holder's pid, as F_GETLK reports it
}
