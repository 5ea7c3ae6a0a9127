package fuse

import (
	"context"

	"github.com/brickvol/brick/proto/brickpb"
)

// Backend is what the file system is served from: on the head's host, the
// head (which orders and replicates every op); in tests, a replica applied
// directly (replica.Local). Files are named by volume-wide file IDs (the
// root directory is RootFID), never by paths.
//
// Errors: a POSIX failure of the operation itself is reported as
// syscall.Errno (wrapped or not); anything else (the volume is fenced,
// read-only, unreachable) is an error the file system maps to EIO or EROFS
// as documented on each method.
//
// What the file system relies on (see also the package doc):
//   - Every method is safe for concurrent use and never does I/O on the
//     mount. Calls are not cancelled by the kernel's interrupts: the
//     backend bounds them with its own timeouts. (Locker.SetLock is the
//     exception: its ctx ends when the kernel interrupts a lock wait.)
//   - An error wrapping syscall.EROFS means the volume is read-only.
//   - A file keeps its file ID for life, and its data stays readable by ID
//     (Meta GETATTR reports nlink 0) after its last name is gone, until
//     OP_FORGET; IDs from NewFID are never reused, across remounts too.
//     Files unlinked but never forgotten (a crash, another host of a shared
//     volume) are the backend's to reap when the volume is attached.
//   - OP_SETXATTR and OP_REMOVEXATTR carry the attribute name in both
//     Name and Xattr; OP_SETATTR applies SIZE before ATIME and MTIME.
//   - The Attr of an UNLINK result, when set, describes the unlinked file
//     after the op (its nlink tells whether a name is left).
//   - A backend that knows the volume's usage implements UsageReporter.
type Backend interface {
	// NewFID reserves a fresh file ID for an op that creates a file.
	NewFID() uint64
	// Do submits a mutating op (Seq and Epoch are filled in by the backend)
	// and returns its result: Errno set when the op failed as a POSIX
	// operation, Attr the attributes after it. For OP_WRITE the backend
	// may return before any replica applied the write (page-cache
	// semantics, design.md promise 1), with Attr nil. The backend owns
	// op, including its Data, from the call on: the file system never
	// touches it again.
	Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error)
	// Meta answers lookups, attributes, listings, links, xattrs and statfs,
	// reflecting every op submitted before the call.
	Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error)
	// Read reads file data, reflecting every write submitted before the
	// call. A short result means end of file.
	Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error)
	// Sync returns once every op submitted before it is durable on every
	// in-sync replica (fsync, fdatasync, O_SYNC, directory fsync).
	Sync(ctx context.Context) error
}

// Submitter is a Backend that can also sequence an op and return before
// any replica applied it, as Do may for OP_WRITE. The file system uses it
// only for ops it knows cannot fail as POSIX operations (setattrEarly);
// a failure all the same is reported by the next Sync, with EIO.
type Submitter interface {
	Submit(ctx context.Context, op *brickpb.Op) (seq uint64, err error)
}

// ReaderInto is a Backend that can read into the caller's buffer, as Read
// does but without a buffer of its own: go-fuse's request buffer takes the
// data, with no allocation and no copy per read. n < len(dest) means end
// of file.
type ReaderInto interface {
	ReadInto(ctx context.Context, fid uint64, dest []byte, off int64) (n int, err error)
}

// RootFID is the file ID of a volume's root directory.
const RootFID = 1
