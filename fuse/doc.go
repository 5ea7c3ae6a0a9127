// Package fuse is the POSIX file system a host mounts for a volume: a
// go-fuse (github.com/hanwen/go-fuse/v2/fs) tree served from a Backend. On
// the head's host the Backend is the head, which orders and replicates every
// operation; elsewhere it forwards to the head; in tests it is one replica
// applied directly (replica.Local).
//
// # What it owns
//
// The translation between the kernel's FUSE requests and brick's data path:
// every mutation becomes one brickpb.Op submitted with Backend.Do (file IDs
// for creates come from Backend.NewFID); every lookup, getattr, readdir,
// readlink, xattr read and statfs is one Backend.Meta call; every read is
// Backend.Read; fsync, fdatasync, directory fsync and O_SYNC/O_DSYNC writes
// on direct-I/O handles are Backend.Sync. It also owns the mount itself
// (options, unmount) and the mapping of backend errors to errno values.
//
// Inode numbers are volume file IDs (StableAttr.Ino = fid), so they survive
// remounts and head moves; hard links share one inode number.
//
// # What it must never do
//
//   - Decide anything about replication, epochs or placement: it submits ops
//     and reports what the backend answers.
//   - Keep file data or metadata of its own beyond the kernel's caches and a
//     node's last known attributes and size (for setgid inheritance, quota
//     growth, and fstat of a directory removed while open), its open-handle
//     count, the cached absence of security.capability (see below), a
//     directory's attributes on a volume this host alone writes
//     (dirattr.go), and,
//     with a Locker, which lock owners may hold locks through which open
//     file (to release them at close).
//   - Do I/O on its own mount (see Deadlocks).
//
// # Semantics chosen here
//
//   - Modes are applied exactly as the kernel gives them: the kernel has
//     already applied the umask (this package does not ask for
//     FUSE_DONT_MASK), and setuid, setgid and sticky bits are passed through
//     on create, mkdir, mknod and chmod. Permission checks are the kernel's
//     (default_permissions). New files belong to the caller's fsuid/fsgid;
//     in a setgid directory they take the directory's group, and new
//     directories inherit the setgid bit (BSD semantics, as ext4 does).
//   - Timestamps come from the backend: the Attr in an OpResult is the truth
//     for the entry or attributes returned to the kernel. UTIME_NOW is
//     resolved to a concrete time here, so every replica stores the same
//     value.
//   - Locks: with a Backend that implements Locker (shared volumes), POSIX
//     (fcntl, including OFD) and BSD (flock) locks are forwarded to it
//     (FUSE_POSIX_LOCKS, FUSE_FLOCK_LOCKS), so every host sees them; the
//     releases close(2) implies are sent from FLUSH and RELEASE, which
//     go-fuse's node API does not report (locks.go). Otherwise they are left
//     to the kernel, which keeps them on this host: correct for a volume
//     mounted on one host (access=single).
//   - Caching: the writeback cache is on (Options.NoWritebackCache turns it
//     off, as shared volumes must), data pages are kept across opens
//     (FOPEN_KEEP_CACHE) unless the writeback cache is off, and attributes,
//     entries and negative entries are cached for Options.AttrTimeout and
//     Options.EntryTimeout (default 1 s; the head is the only writer of a
//     single-host volume). O_DIRECT opens get FOPEN_DIRECT_IO; other opens
//     use the page cache, which shared writable mmap needs.
//   - Appends on several hosts: with Options.AppendAtBackendEOF (shared
//     volumes) an O_APPEND handle bypasses the page cache and each write
//     goes to the end of the file as the backend sees it, asked just
//     before; the kernel's offset, computed from its cached size, is
//     ignored. Appenders on different hosts that hold a lock around each
//     write get whole records in lock order, as on NFS.
//   - Open-unlinked files keep working: the backend keeps a file's data by
//     ID until it receives OP_FORGET. This package sends it for a
//     non-directory that lost its last name (unlink, or a rename over it)
//     at once when no handle is open on it, else when the kernel forgets
//     the inode (OnForget), and at unmount for what the kernel never
//     reported (orphan.go). Files unlinked by another host of a shared
//     volume, or left by a crash, must be reaped by the backend when the
//     volume is attached.
//   - The kernel reads security.capability before every write(2). With the
//     writeback cache, its absence is cached per node until this mount sets
//     or removes it, so writes do not each cost a backend query.
//   - Names are at most 255 bytes (ENAMETOOLONG). An open(O_CREAT) that
//     races another creator of the name opens the existing file, with the
//     permission check and O_TRUNC the kernel then skips done here.
//   - O_TMPFILE is not supported (EOPNOTSUPP): the protocol has no op that
//     creates a file in no directory.
//   - Interrupts are not honoured: every backend call runs to completion,
//     bounded by the backend's own timeouts, because an op that was
//     submitted may already be applied and must report its real result.
//     The exception is a lock wait (F_SETLKW, blocking flock): a signal
//     ends it (the kernel restarts the call when the handler allows).
//
// # Quota
//
// Options.QuotaBytes is the volume's size quota. "Used" is the sum of the
// logical sizes of the volume's regular files (sparse ranges count in full:
// the conservative choice, and the same number on every replica, unlike
// allocated blocks). A Backend that knows this number implements
// UsageReporter; the file system then reports statfs as
//
//	blocks = quota / 4096, bfree = bavail = min(quota - used, brick free) / 4096
//
// and refuses, with ENOSPC, any write, truncate or fallocate that would take
// used past the quota. A growing op is admitted against the backend's count
// plus the growth of the ops admitted but not yet returned from Do, under
// one lock, so concurrent writers cannot overshoot the quota together. An
// op's growth is how far it reaches past the file's size and past the ops
// of the same file already in flight (the kernel writes a file back in
// many concurrent requests, out of order), and a write tells the backend
// its growth (Op.growth; 0 for an overwrite), so a backend that counts ops
// before applying them need not count an overwrite's bytes. With the
// writeback cache a buffered write() lands in the page cache first, so its
// ENOSPC is reported by the write-back: at fsync(2) or close(2), as on NFS;
// O_DIRECT writes and fallocate(2) report it at once. A Backend without
// UsageReporter gets no enforcement here (the mount logs a warning) and
// statfs reports total = quota, free = min(quota, brick free).
//
// # Errors
//
// A syscall.Errno from the backend (the Errno field of an OpResult,
// MetaResponse or ReadResponse, or an error that is or wraps one) is a
// POSIX answer and is returned as is, except transport errnos
// (ECONNREFUSED, ETIMEDOUT, ...), which only say the backend could not be
// reached, and EROFS. An error wrapping EROFS says the volume is read-only
// (below min-isr): it is EROFS for a mutation and EIO for a read or query.
// Any other error is EIO. Every error that is not a POSIX answer is logged
// once, with the operation and the file; repeats of the same message within
// 10 s are counted and reported with the next different one rather than
// logged one by one. A panic in a request handler is logged with its stack
// and answered EIO.
//
// # Deadlocks to avoid
//
// go-fuse's fs package documentation lists its own; these are the ones that
// matter here.
//
//  1. Never do I/O on the mount from the process that serves it. A page
//     fault on an mmap of the mount, or a blocking syscall the Go runtime
//     believes cannot block, can stop the very goroutines that would answer
//     it; a garbage collection waiting for a thread stuck in such a fault
//     stops them all. This is why design.md gives each mount its own
//     process and why brickd never touches a mounted volume. Tests here do
//     I/O in-process (as go-fuse's own tests do) except mmap, which runs in
//     a child process.
//  2. Never fork/exec from the serving process while holding descriptors on
//     the mount, or with a working directory or binary on it: the child's
//     setup (dup3, chdir, exec) issues FUSE requests before it can be served.
//  3. Never call back into the kernel (NotifyEntry, NotifyDelete,
//     NotifyContent) while holding a lock that a FUSE callback needs, or from
//     inside a callback for the same inode: the kernel may wait on that
//     callback before it accepts the notification. This package sends no
//     notifications today; add them only from a goroutine that holds no
//     node lock.
//  4. Never hold a lock across a Backend call that could wait on the
//     kernel. No Backend call touches the mount, and the only lock held
//     across one is the quota lock, around UsageReporter.UsedBytes, so the
//     quota check and the admission of a growing op are atomic; node locks
//     guard a few cached fields and are never held across a Backend call.
//  5. OnForget runs inside FORGET handling, whose reply the kernel does not
//     wait for, but it must not block the request loop: the OP_FORGET for an
//     orphan is sent from its own goroutine, and Server.Wait waits for them.
package fuse
