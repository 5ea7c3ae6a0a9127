// Package locks is the lock table of a shared volume's head: the one place
// that decides which POSIX (fcntl, including OFD) and BSD (flock) locks are
// held on the volume's files. The head's own mount and the mount processes of
// every other host forward their lock requests (FUSE GETLK, SETLK, SETLKW,
// and the releases implied by flush and release) to it; this package answers
// them. Mirror is the other end: a non-head mount's record of the locks it
// was granted, re-asserted on a new head after a failover.
//
// # What it owns
//
// A Table holds, per file ID, the granted locks of each Kind, the goroutines
// blocked in Wait, and nothing else. A lock belongs to an Owner: the client
// session (one per mount process) and the kernel's lock owner id within it
// (FUSE's lock_owner: the file table for POSIX locks, the open file for OFD
// locks and flock). Pids are carried only so Get can report them.
//
// # Semantics chosen here
//
//   - POSIX locks follow fcntl(2): an owner never conflicts with itself; a
//     new lock replaces the part of the owner's locks it overlaps, and the
//     owner's locks of one type that overlap or touch are merged, so an
//     owner's ranges are always disjoint and maximal. Unlocking a sub-range
//     splits a lock in two. End math.MaxUint64 means "to end of file" (also
//     past it). Read locks of different owners coexist; a write lock
//     conflicts with any lock of another owner that overlaps it.
//   - Flock locks follow flock(2) on Linux: one lock per owner per file,
//     always covering the whole file; shared (Read) locks coexist, an
//     exclusive (Write) lock excludes every other owner. A conversion by the
//     same owner is granted when no other owner conflicts; unlike Linux, a
//     conversion that cannot be granted leaves the old lock in place (Linux
//     drops it first), because a refused or interrupted request must change
//     nothing. Two shared holders that both Wait to upgrade therefore wait
//     for each other until one is cancelled; flock has no deadlock detection
//     on Linux either.
//   - The two kinds never conflict with each other, as on Linux.
//   - Set never blocks: it grants or fails with ErrWouldBlock (EAGAIN) and
//     changes nothing. Wait blocks until the lock can be granted. Waiters are
//     not queued: every release of a file wakes that file's waiters, which
//     retry, so there is no FIFO fairness but no lost wakeup either. A Wait
//     that can be granted at once is granted even if its context is already
//     done; one that returns an error has changed nothing.
//   - A POSIX Wait that would close a cycle of owners each waiting for a
//     lock held by the next fails with ErrDeadlock (EDEADLK), as Linux does.
//     Like Linux, the check treats an owner as blocked while any of its
//     requests is: it can report a deadlock that another thread of the same
//     owner would have broken.
//   - ReleaseSession drops a session's locks (its host went away), wakes the
//     waiters of other sessions, and fails the session's own pending Waits
//     with ErrReleased, so a request still in flight from a dead host cannot
//     be granted after its locks were dropped. Requests that arrive after
//     ReleaseSession are not refused here: fencing a released session is the
//     caller's job.
//   - Results are deterministic: Get reports the conflicting lock with the
//     lowest start (ties broken by end, then owner), and Held and
//     Mirror.All list locks in a fixed order.
//
// # What it must never do
//
//   - I/O of any kind, logging, or global state: a Table is a value, safe for
//     concurrent use, and tests build as many as they like.
//   - Look at file data, sizes or permissions: whether the caller may lock a
//     file (read lock on a file opened for writing only, and so on) was
//     decided by the kernel of the host that asked.
//   - Persist anything: after a failover the new head's table is rebuilt from
//     what the clients re-assert (Held on the old side, Mirror on clients).
package locks
