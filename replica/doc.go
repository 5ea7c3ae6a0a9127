// Package replica owns a brick's local store: one plain directory tree per
// volume replica under the brick's data directory (Store), the replica
// itself (Replica: applying ordered ops, fencing, the op log, chunk
// checksums), the gRPC service other daemons call (Server), and a Backend
// for package fuse served straight from one replica (Local).
//
// replica must never decide placement or membership (that is Raft's, in
// package control), never follow a symbolic link inside a replica, never
// build a path of more than one component below a directory descriptor,
// and never let a user see or set its own attributes (trusted.brick.*).
//
// # Layout of a replica (<store root>/<volume id>/)
//
//	data/     the volume's files, a plain tree an operator can read; data/ is
//	          the root directory, file ID 1
//	fids/     for every non-directory, a hard link named by its file ID in
//	          decimal: ops address files by ID, and a file unlinked from the
//	          tree stays readable until OP_FORGET removes this link
//	spare/    emptied inodes of deleted files, which creates rename into
//	          place instead of allocating new ones (spares.go)
//	oplog/    the op log: segment files of checksummed records (wal.go)
//	meta.db   bbolt: position, epoch promise, directory map, chunk
//	          checksums (records.go lists the buckets)
//
// Every inode carries its volume-wide file ID in the xattr
// trusted.brick.fid (hard links share it), so LOOKUP and READDIR answer
// file IDs from the tree itself, and a file's ID survives renames with no
// bookkeeping. Directories cannot be hard linked, so meta.db maps each
// directory's ID to its parent's ID and its name; a directory is opened by
// walking down from the root (or the nearest cached ancestor) with
// openat(O_NOFOLLOW|O_DIRECTORY), one component at a time, checking each
// directory's ID tag. Renaming a directory rewrites one record. Attr.nlink
// leaves the fids/ link out.
//
// # Order and fencing
//
// Ops are applied strictly in sequence (Seq == applied+1, else ErrGap) and
// only at an epoch no lower than the promise (else ErrStaleEpoch); reads
// (Meta, Read, OpsSince) are refused below the promise too. Fence raises
// the promise durably (a synced commit) before it returns; applying an op
// raises it to the op's epoch. An op that fails as a POSIX operation is
// applied as a no-op with its errno in the result: every replica fails it
// alike. A failure that is the brick's own (ENOSPC, EIO, ...) is
// ErrLocalFailure: the op is not applied and the stream ends.
//
// # Durability and crashes
//
// meta.db is written with NoSync; OP_SYNC (Sync) runs syncfs on the
// brick's file system, which flushes the tree and meta.db's earlier
// commits together (when both are on one file system, else a synced commit
// follows), and only then is the position reported as synced_seq. When
// only convergent ops on at most two regular files ran since the last
// flush and meta.db took no commit since, the barrier fsyncs those files
// instead: the tree is as durable, and the op log and meta.db, which only
// a recovery reads, are left to the page cache (rules 3 and 5) until the
// next syncfs; Close and a recovery always run one. The
// barrier commits nothing: the synced counter goes to meta.db with the
// next commit and to the disk with the flush after, so on disk it may lag,
// never lead; a recovery on the same boot syncs again and counts
// everything applied as synced. Fence and Close make a synced commit. Between two syncs a crash may leave the tree ahead
// of meta.db. The rules that make that harmless:
//
//  1. Write-ahead: a batch's ops go to the op log (one append) before
//     any of them touches the tree. The log keeps every op after the
//     applied position meta.db holds, which a batch of convergent ops
//     alone does not move (it is committed with the next exact op, sync,
//     or after a quarter of the log's bounds).
//  2. Ops are exact or convergent (exactOp). Convergent ops (WRITE,
//     TRUNCATE, FALLOCATE without COLLAPSE/INSERT, SETATTR, unconditional
//     SETXATTR, REMOVEXATTR) set state regardless of the state before, so
//     applying a run of them again over a tree that already holds some of
//     them gives the same tree. Exact ops (namespace ops, FORGET,
//     SETXATTR with CREATE/REPLACE) are preceded by a commit of the
//     applied position and an intent record naming the op and what stood
//     at its names (file IDs, directory or not). So after a crash at most
//     one exact op, the first after the committed position, can be half
//     done, followed only by convergent ops.
//  3. Recovery (OpenReplica after an unclean shutdown on the same boot)
//     applies every logged op after the committed position; the first,
//     when its intent was recorded, in redo mode, which finishes it
//     idempotently: a create whose entry is already tagged with its file
//     ID (or is untagged and exactly what its first step leaves) is
//     finished rather than EEXIST; an unlink or rmdir whose name is gone is
//     done; a rename is done when the source is gone and the intent's file
//     ID stands at the destination (an exchange: when both IDs stand
//     swapped); a link is done when the name is the same inode; a forget
//     of a gone link is done. Bookkeeping (directory map, checksums, max
//     file ID) is redone either way. The replica then reports every logged
//     op as applied, so it never holds changes its log does not explain.
//  4. A local failure leaves the failed op half done: if the same op comes
//     again it is applied in redo mode; if a different op comes at that
//     seq, the replica is marked suspect.
//  5. After an unclean shutdown across a reboot (a power loss, maybe: the
//     kernel boot ID changed) NoSync commits may be lost or torn and the
//     tree may be anywhere after synced_seq. meta.db is checked, recovery
//     runs as above, checksums are dropped, and the replica is marked
//     suspect (Suspect): only synced_seq is certain, and it must be
//     repaired by a full heal before it rejoins an ISR. Bookkeeping found
//     damaged (ErrCorrupt) is moved aside (meta.db.corrupt-TIME,
//     oplog.corrupt-TIME) and the replica opens as a tree without meta.db:
//     suspect, position 0. When every in-sync replica of a volume is
//     suspect, a new head adopts the most advanced (Adopt): it holds every
//     fsync acknowledged before the power loss.
//
// FALLOCATE COLLAPSE_RANGE and INSERT_RANGE are refused with EOPNOTSUPP:
// they shift data, so applying one twice would not converge. OP_FORGET of
// a file already forgotten succeeds; of a file still linked in the tree it
// is EBUSY. File times come from each brick's clock (except those SETATTR
// sets), so replicas differ in times; digests leave them out.
package replica
