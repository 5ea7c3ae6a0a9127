package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

// A full resync (what no op log can do: a wiped, diverged or too-far-behind
// replica) rebuilds the replica as a copy of a source replica at the
// source's applied position S, and the head then heals it from S through
// the op log like any lagging brick:
//
//  1. The source lists its structure at S under its apply lock (Snapshot:
//     names, file IDs, attributes, xattrs, link targets, unlinked files
//     still held by ID). Only metadata is read, so the stall is short.
//  2. Without the lock, the source sends every regular file's chunk
//     checksums, and the target reads the chunks whose checksums differ
//     from its own (Read), possibly newer than S.
//  3. The target builds the copy in a staging replica next to its own:
//     the structure by applying ordinary ops, the data by reusing its own
//     chunks where the checksums match (copy_file_range, no network) and
//     the fetched ones elsewhere; then it rebases the copy to position S
//     (op log empty, synced) and swaps it in.
//
// Data newer than S is harmless: every op after S is replayed on top, in
// order, and data ops converge (doc.go, rule 2), so each byte ends as the
// last op after S that touched it left it, or as it was at S.

// Snapshot returns the replica's structure at its applied position (the
// first SnapshotPart); chunk checksums are read separately (ChunkSums).
func (r *Replica) Snapshot() (*brickpb.SnapshotPart, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	part := &brickpb.SnapshotPart{AppliedSeq: r.applied, AppliedEpoch: r.appliedEpoch, MaxFid: r.maxFID}
	r.mu.Unlock()
	root, _, err := snapEntry(r.dataFD, ".")
	if err != nil {
		return nil, fmt.Errorf("%w: describing the root directory: %w", ErrLocalFailure, err)
	}
	root.Fid, root.Name = rootFID, ""
	part.Entries = append(part.Entries, root)
	seen := map[uint64]bool{rootFID: true}
	type dir struct {
		fid uint64
		fd  int
	}
	queue := []dir{{rootFID, r.dataFD}}
	defer func() { // what an error left in the queue
		for _, d := range queue {
			if d.fd != r.dataFD {
				closeFD(d.fd)
			}
		}
	}()
	// list describes the entries of directory d and queues its
	// subdirectories, then closes d.
	list := func(d dir) error {
		if d.fd != r.dataFD {
			defer closeFD(d.fd)
		}
		ents, err := listDir(d.fd)
		if err != nil {
			return fmt.Errorf("%w: listing directory %d: %w", ErrLocalFailure, d.fid, err)
		}
		slices.SortFunc(ents, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
		for _, e := range ents {
			ent, st, err := snapEntry(d.fd, e.name)
			if err != nil {
				return fmt.Errorf("%w: describing %q in directory %d: %w", ErrLocalFailure, e.name, d.fid, err)
			}
			ent.Parent = d.fid
			part.Entries = append(part.Entries, ent)
			seen[ent.Fid] = true
			if isDir(st) {
				fd, err := openat(d.fd, e.name, oDir, 0)
				if err != nil {
					return fmt.Errorf("%w: opening directory %q: %w", ErrLocalFailure, e.name, err)
				}
				queue = append(queue, dir{ent.Fid, fd})
			}
		}
		return nil
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if err := list(d); err != nil {
			return nil, err
		}
	}
	// Files unlinked from the tree but still open somewhere live on in
	// fids/ until OP_FORGET; later ops may name them.
	ents, err := listDir(r.fidsFD)
	if err != nil {
		return nil, fmt.Errorf("%w: listing fids/: %w", ErrLocalFailure, err)
	}
	for _, e := range ents {
		fid, err := strconv.ParseUint(e.name, 10, 64)
		if err != nil || seen[fid] {
			continue
		}
		ent, _, err := snapEntry(r.fidsFD, e.name)
		if err != nil {
			return nil, fmt.Errorf("%w: describing unlinked file %d: %w", ErrLocalFailure, fid, err)
		}
		ent.Parent, ent.Name = 0, ""
		part.Entries = append(part.Entries, ent)
	}
	return part, nil
}

func snapEntry(dirfd int, name string) (*brickpb.SnapEntry, *unix.Stat_t, error) {
	st, err := lstatAt(dirfd, name)
	if err != nil {
		return nil, nil, err
	}
	fid, err := fidAt(dirfd, name)
	if err != nil {
		return nil, nil, fmt.Errorf("reading its file ID: %w", err)
	}
	e := &brickpb.SnapEntry{Name: name, Fid: fid, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Rdev: st.Rdev,
		Size: st.Size, AtimeNs: st.Atim.Nano(), MtimeNs: st.Mtim.Nano()}
	if isLink(&st) {
		if e.Target, err = readlinkAt(dirfd, name); err != nil {
			return nil, nil, err
		}
	}
	names, err := xattrList(procPath(dirfd, name))
	if err != nil && err != unix.ENOTSUP {
		return nil, nil, err
	}
	slices.Sort(names)
	for _, n := range names {
		v, err := xattrGet(procPath(dirfd, name), n)
		if err != nil {
			return nil, nil, err
		}
		e.Xattrs = append(e.Xattrs, &brickpb.Xattr{Name: n, Value: v})
	}
	return e, &st, nil
}

// ResyncSource is what a full resync reads from the source replica.
type ResyncSource interface {
	// Snapshot is the source's structure (the first SnapshotPart) and a
	// function yielding each regular file's checksums until io.EOF.
	Snapshot(ctx context.Context) (*brickpb.SnapshotPart, func() (*brickpb.FileSums, error), error)
	// Read reads from a file of the source (short at its end; ENOENT if it
	// is gone: it was removed after the snapshot).
	Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error)
}

// ResyncStats says what a resync copied.
type ResyncStats struct {
	AppliedSeq   uint64
	Files        uint64
	BytesFetched uint64 // over the network
	BytesReused  uint64 // chunks this replica already had
}

// BuildResync builds, in staging (a directory that must not exist), a
// replica that is a copy of src at its snapshot position, reusing the data
// of old (this brick's current replica of the volume; nil if it has none)
// where the chunk checksums match. promise is the epoch promise the copy
// starts with (at least the caller's stream epoch). The caller swaps the
// copy in (SwapReplica) once it is built.
func BuildResync(ctx context.Context, staging string, old *Replica, src ResyncSource, promise uint64, opts ReplicaOptions) (*ResyncStats, error) {
	snap, nextSums, err := src.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the source's snapshot: %w", err)
	}
	if _, err := os.Stat(staging); err == nil {
		return nil, fmt.Errorf("staging directory %s already exists", staging)
	}
	nr, err := OpenReplica(staging, opts)
	if err != nil {
		return nil, fmt.Errorf("creating the staging replica: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			nr.Close()
			os.RemoveAll(staging)
		}
	}()
	st := &ResyncStats{AppliedSeq: snap.AppliedSeq}
	b := &builder{r: nr, epoch: max(promise, 1)}
	// Structure first, parents before children; hard links second.
	created := map[uint64]bool{rootFID: true}
	var orphans []*brickpb.SnapEntry
	for _, e := range snap.Entries {
		if e.Fid == rootFID {
			continue
		}
		if e.Parent == 0 {
			orphans = append(orphans, e)
			continue
		}
		if created[e.Fid] {
			b.add(&brickpb.Op{Type: brickpb.OpType_OP_LINK, Fid: e.Fid, Parent: e.Parent, Name: e.Name})
			continue
		}
		created[e.Fid] = true
		b.create(e, e.Parent, e.Name)
	}
	// Unlinked-but-held files: created under the root and unlinked again,
	// which leaves them in fids/ only, as on the source.
	for _, e := range orphans {
		if created[e.Fid] {
			continue
		}
		created[e.Fid] = true
		tmp := fmt.Sprintf(".brick-resync-%d", e.Fid)
		b.create(e, rootFID, tmp)
		b.add(&brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: rootFID, Name: tmp})
	}
	if err := b.flush(); err != nil {
		return nil, err
	}
	// Data: chunk by chunk, reused or fetched.
	byFID := map[uint64]*brickpb.SnapEntry{}
	for _, e := range snap.Entries {
		byFID[e.Fid] = e
	}
	for {
		fs, err := nextSums()
		if errors.Is(err, errEndOfSums) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the source's checksums: %w", err)
		}
		e := byFID[fs.Fid]
		if e == nil || e.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		if err := copyFile(ctx, nr, old, src, e, fs, st); err != nil {
			return nil, err
		}
		st.Files++
	}
	// Attributes and xattrs last: writes move mtime, and a mode without
	// write permission must not stop them.
	for _, e := range snap.Entries {
		b.attrs(e)
	}
	if err := b.flush(); err != nil {
		return nil, err
	}
	if err := nr.rebase(snap.AppliedSeq, snap.AppliedEpoch, max(snap.MaxFid, b.maxFID), promise); err != nil {
		return nil, err
	}
	if err := nr.Close(); err != nil {
		return nil, fmt.Errorf("closing the staging replica: %w", err)
	}
	ok = true
	return st, nil
}

// errEndOfSums ends a ResyncSource's checksum sequence.
var errEndOfSums = errors.New("end of checksums")

// EndOfSums is what a ResyncSource's checksum function returns when done.
func EndOfSums() error { return errEndOfSums }

// builder applies synthesized ops to the staging replica in batches.
type builder struct {
	r      *Replica
	epoch  uint64
	seq    uint64
	ops    []*brickpb.Op
	maxFID uint64
	err    error
}

func (b *builder) add(op *brickpb.Op) {
	b.seq++
	op.Seq, op.Epoch = b.seq, b.epoch
	b.ops = append(b.ops, op)
	if op.Fid > b.maxFID {
		b.maxFID = op.Fid
	}
	if len(b.ops) >= 256 {
		b.flush()
	}
}

func (b *builder) flush() error {
	if b.err != nil || len(b.ops) == 0 {
		return b.err
	}
	res, err := b.r.Apply(b.ops)
	if err == nil {
		for i, r := range res {
			if r.Errno != 0 {
				err = fmt.Errorf("rebuilding op %v on the staging replica: %w", b.ops[i].Type, unix.Errno(r.Errno))
				break
			}
		}
	}
	b.ops = b.ops[:0]
	if err != nil {
		b.err = fmt.Errorf("%w: resync: %w", ErrLocalFailure, err)
	}
	return b.err
}

// create adds the op that makes e at parent/name, owned as on the source
// (modes are set again at the end).
func (b *builder) create(e *brickpb.SnapEntry, parent uint64, name string) {
	op := &brickpb.Op{Parent: parent, Name: name, Fid: e.Fid, Uid: e.Uid, Gid: e.Gid, Mode: e.Mode}
	switch e.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		op.Type, op.Mode = brickpb.OpType_OP_MKDIR, 0o700
	case unix.S_IFREG:
		op.Type, op.Mode = brickpb.OpType_OP_CREATE, 0o600
	case unix.S_IFLNK:
		op.Type, op.Target, op.Mode = brickpb.OpType_OP_SYMLINK, e.Target, 0
	default:
		op.Type, op.Rdev = brickpb.OpType_OP_MKNOD, e.Rdev
	}
	b.add(op)
}

// attrs adds the ops that give e its xattrs, mode, owner, size and times.
func (b *builder) attrs(e *brickpb.SnapEntry) {
	for _, x := range e.Xattrs {
		b.add(&brickpb.Op{Type: brickpb.OpType_OP_SETXATTR, Fid: e.Fid, Xattr: x.Name, Data: x.Value})
	}
	valid := uint32(brickpb.SetattrBit_SETATTR_UID | brickpb.SetattrBit_SETATTR_GID)
	if e.Mode&unix.S_IFMT != unix.S_IFLNK { // a link's mode and times are not its own to set
		valid |= uint32(brickpb.SetattrBit_SETATTR_MODE | brickpb.SetattrBit_SETATTR_ATIME | brickpb.SetattrBit_SETATTR_MTIME)
	}
	b.add(&brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: e.Fid, Valid: valid, Mode: e.Mode & 0o7777,
		Uid: e.Uid, Gid: e.Gid, AtimeNs: e.AtimeNs, MtimeNs: e.MtimeNs})
}

// copyFile fills the staging file e (already created, empty) chunk by chunk.
func copyFile(ctx context.Context, nr, old *Replica, src ResyncSource, e *brickpb.SnapEntry, fs *brickpb.FileSums, st *ResyncStats) error {
	dst, err := nr.fileFD(e.Fid)
	if err != nil {
		return fmt.Errorf("%w: resync: opening staging file %d: %w", ErrLocalFailure, e.Fid, err)
	}
	defer dst.release()
	size := e.Size // the snapshot's size; later changes are replayed
	if err := unix.Ftruncate(dst.fd, size); err != nil {
		return fmt.Errorf("%w: resync: sizing file %d: %w", ErrLocalFailure, e.Fid, err)
	}
	var mine []uint32
	var mineSize int64
	var oldFD *openFD
	if old != nil {
		if sums, sz, err := old.ChunkSums(e.Fid); err == nil {
			if o, err := old.fileFD(e.Fid); err == nil {
				mine, mineSize, oldFD = sums, sz, o
				defer o.release()
			}
		}
	}
	for i := int64(0); i*ChunkSize < size; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		off := i * ChunkSize
		n := min(ChunkSize, size-off)
		if oldFD != nil && i < int64(len(fs.Chunks)) && i < int64(len(mine)) && mine[i] == fs.Chunks[i] &&
			min(ChunkSize, mineSize-off) == n && min(ChunkSize, fs.Size-off) == n {
			if err := copyRange(oldFD.fd, dst.fd, off, n); err == nil {
				st.BytesReused += uint64(n)
				continue
			}
		}
		data, err := src.Read(ctx, e.Fid, off, int(n))
		if errors.Is(err, unix.ENOENT) {
			return nil // removed at the source after the snapshot: the replay removes it here too
		}
		if err != nil {
			return fmt.Errorf("resync: reading file %d at %d from the source: %w", e.Fid, off, err)
		}
		if len(data) > 0 {
			if _, err := unix.Pwrite(dst.fd, data, off); err != nil {
				return fmt.Errorf("%w: resync: writing file %d: %w", ErrLocalFailure, e.Fid, err)
			}
		}
		st.BytesFetched += uint64(len(data))
	}
	return nil
}

// copyRange copies n bytes at off from one file to another in the kernel.
func copyRange(from, to int, off, n int64) error {
	for n > 0 {
		roff, woff := off, off
		c, err := unix.CopyFileRange(from, &roff, to, &woff, int(n), 0)
		if err != nil {
			return err
		}
		if c == 0 {
			return unix.EIO // the source file is shorter than its checksums said
		}
		off += int64(c)
		n -= int64(c)
	}
	return nil
}

// rebase makes the replica report position seq (origin epoch
// appliedEpoch), durably, with an empty op log: it holds the volume's
// history up to seq, as a copy, not as ops. Caller owns the replica.
func (r *Replica) rebase(seq, appliedEpoch, maxFID, promise uint64) error {
	if err := retry(func() error { return unix.Syncfs(r.dataFD) }); err != nil {
		return fmt.Errorf("%w: syncfs: %w", ErrLocalFailure, err)
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.Lock()
	r.applied, r.appliedEpoch, r.synced = seq, appliedEpoch, seq
	r.promised = max(r.promised, promise)
	r.maxFID = max(r.maxFID, maxFID)
	r.logFirst, r.logLast, r.logBytes = 0, 0, 0
	r.suspect = ""
	r.failed = nil
	r.mu.Unlock()
	if err := r.wal.Reset(); err != nil {
		return err
	}
	return r.commit(true, nil)
}

// SwapReplica replaces the replica directory dir (closed by the caller)
// with the built staging directory, keeping the old one aside until the
// swap is done.
func SwapReplica(dir, staging string) error {
	aside := dir + ".replaced"
	os.RemoveAll(aside)
	if err := os.Rename(dir, aside); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("moving the old replica aside: %w", err)
	}
	if err := os.Rename(staging, dir); err != nil {
		os.Rename(aside, dir)
		return fmt.Errorf("moving the resynced replica in: %w", err)
	}
	if d, err := os.Open(filepath.Dir(dir)); err == nil {
		d.Sync()
		d.Close()
	}
	return os.RemoveAll(aside)
}
