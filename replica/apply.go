package replica

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

var (
	// errTreeMismatch: the tree does not match the directory map (a
	// directory is missing, or something else stands where it should
	// be: tampering, or corruption). Local and fatal; marks the replica
	// suspect.
	errTreeMismatch = errors.New("tree does not match the directory map")
	// errLocalStep wraps a failure after an op's first change to the
	// tree: whatever its errno, it says the brick, not the op, failed.
	errLocalStep = errors.New("failed to finish an op")
)

// ownAndStat gives a new inode the op's owner and exactly its mode (never
// the umask's) and returns its attributes.
func ownAndStat(fd int, op *brickpb.Op) (unix.Stat_t, error) {
	if err := localStep("setting the owner", fchownIfNeeded(fd, op.Uid, op.Gid)); err != nil {
		return unix.Stat_t{}, err
	}
	if err := localStep("setting the mode", unix.Fchmod(fd, op.Mode&0o7777)); err != nil {
		return unix.Stat_t{}, err
	}
	if op.MtimeNs != 0 || op.AtimeNs != 0 {
		// The head stamped the new file's times (it may have answered the
		// create with them already): every replica keeps the same ones.
		ts := [2]unix.Timespec{unix.NsecToTimespec(op.AtimeNs), unix.NsecToTimespec(op.MtimeNs)}
		if err := localStep("setting the times", futimens(fd, &ts)); err != nil {
			return unix.Stat_t{}, err
		}
	}
	return fstat(fd)
}

func localStep(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", errLocalStep, what, err)
}

// Apply applies ops in order. The batch's longest valid prefix is accepted:
// each op must have Seq == applied+1 (else ErrGap) and an epoch no lower
// than the promise (else a *StaleEpochError); the accepted ops are written
// to the op log, then applied. It returns one result per applied op. An
// op that fails as a POSIX operation is still applied (a no-op) with its
// errno in the result, identically on every replica. A non-nil error is
// fatal for the caller's stream: ErrGap or ErrStaleEpoch (for the first
// refused op: nothing after it was applied), ErrLocalFailure (the op at
// applied+1 could not be applied by this brick), or ErrClosed. The
// results returned with an error are those of the ops applied before it.
// Apply keeps no reference to ops after it returns.
func (r *Replica) Apply(ops []*brickpb.Op) ([]*brickpb.OpResult, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	next, promised := r.applied+1, r.promised
	r.mu.Unlock()
	n := 0
	var refused error
	for _, op := range ops {
		if op == nil {
			refused = fmt.Errorf("%w: nil op where op %d belongs", ErrGap, next)
		} else if op.Seq != next {
			refused = fmt.Errorf("%w: got op %d, want %d", ErrGap, op.Seq, next)
		} else if op.Epoch < promised {
			refused = fmt.Errorf("op %d: %w", op.Seq, &StaleEpochError{Epoch: op.Epoch, Promise: promised})
		}
		if refused != nil {
			break
		}
		promised = max(promised, op.Epoch)
		next++
		n++
	}
	if n == 0 {
		return nil, refused
	}
	if err := r.hookAt("log"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLocalFailure, err)
	}
	// The first op's intent is committed by logOps right after the append:
	// nothing is applied in between, so that commit holds exactly what
	// step's own would.
	var intent *intentRec
	if op := ops[0]; exactOp(op) && (r.failed == nil || r.failed.Seq != op.Seq) {
		in := r.intentFor(op)
		intent = &in
	}
	if err := r.logOps(ops[:n], intent); err != nil {
		return nil, err
	}
	results := make([]*brickpb.OpResult, 0, n)
	for i, op := range ops[:n] {
		redo := false
		if r.failed != nil && r.failed.Seq == op.Seq {
			if redo = proto.Equal(r.failed, op); !redo {
				r.setSuspect(fmt.Sprintf("op %d failed half-way and a different op %d replaced it", op.Seq, op.Seq))
			}
		}
		r.failed = nil
		res, err := r.step(op, redo, i == 0 && intent != nil)
		if err != nil {
			r.failed = proto.Clone(op).(*brickpb.Op)
			return results, err
		}
		results = append(results, res)
	}
	// Writes alone commit nothing to meta.db (the log has them), so its
	// applied position can fall behind: commit now and then, so a
	// recovery replays a bounded stretch and the log can be trimmed.
	if r.sinceCommit >= r.opts.MaxLogBytes/4 || r.applied-r.committedApplied >= uint64(max(r.opts.MaxLogOps/4, 1)) {
		if err := r.commit(false, nil); err != nil {
			// Not this batch's failure: the next op that needs a
			// commit fails with it.
			r.log.Warn("could not commit the applied position", "applied", r.applied, "err", err)
		}
	}
	return results, refused
}

// sizeOp reports whether op may change the size of a regular file, or
// remove one (Replica.used follows it).
func sizeOp(op *brickpb.Op) bool {
	switch op.Type {
	case brickpb.OpType_OP_WRITE, brickpb.OpType_OP_TRUNCATE, brickpb.OpType_OP_FALLOCATE, brickpb.OpType_OP_FORGET:
		return true
	case brickpb.OpType_OP_SETATTR:
		return op.Valid&uint32(brickpb.SetattrBit_SETATTR_SIZE) != 0
	case brickpb.OpType_OP_UNLINK:
		return op.Flags&brickpb.UnlinkForget != 0 && op.Fid > rootFID
	}
	return false
}

// exactOp reports whether re-applying op over a tree that already holds
// its effect (and that of later ops) could give a different tree. Such
// ops are bracketed by an intent commit (see step); the others (writes,
// truncates, setattrs, unconditional xattr changes) converge when a run
// of them is applied again.
func exactOp(op *brickpb.Op) bool {
	switch op.Type {
	case brickpb.OpType_OP_CREATE, brickpb.OpType_OP_MKDIR, brickpb.OpType_OP_MKNOD,
		brickpb.OpType_OP_SYMLINK, brickpb.OpType_OP_LINK, brickpb.OpType_OP_UNLINK,
		brickpb.OpType_OP_RMDIR, brickpb.OpType_OP_RENAME, brickpb.OpType_OP_FORGET:
		return true
	case brickpb.OpType_OP_SETXATTR:
		return op.Flags != 0 // XATTR_CREATE/REPLACE depend on the state
	}
	return false
}

// step applies one accepted op and publishes it as applied. An exact op is
// preceded by a commit of everything applied so far plus its intent, so
// that after a crash at most this one op is half done (redo mode finishes
// it); intentLogged says logOps committed that intent already (Apply).
// Caller holds applyMu.
func (r *Replica) step(op *brickpb.Op, redo, intentLogged bool) (*brickpb.OpResult, error) {
	if exactOp(op) && !redo && !intentLogged {
		r.intent = r.intentFor(op)
		err := r.hookAt("pre-commit")
		if err == nil {
			err = r.commit(false, func(tx *boltTx) error {
				return tx.Bucket(bucketMeta).Put(keyIntent, encodeIntent(r.intent))
			})
		}
		if err != nil {
			return nil, fmt.Errorf("%w: op %d: %w", ErrLocalFailure, op.Seq, err)
		}
	}
	res := &brickpb.OpResult{Seq: op.Seq}
	if op.Type == brickpb.OpType_OP_SYNC {
		r.publish(op)
		if _, err := r.syncLocked(false); err != nil {
			return nil, err
		}
		return res, nil
	}
	r.noteFlush(op)
	before := int64(-1)
	if sizeOp(op) {
		before = r.fidSize(op.Fid)
	}
	attr, err := r.applyOp(op, redo)
	if before >= 0 && err == nil {
		after := int64(0) // gone after a FORGET
		switch {
		case op.Type == brickpb.OpType_OP_FORGET:
		case op.Type == brickpb.OpType_OP_UNLINK: // forgotten or not
			after = max(r.fidSize(op.Fid), 0)
		case attr != nil && attr.Fid == op.Fid:
			after = attr.Size // what the op reports: no second stat on the write path
		default:
			after = max(r.fidSize(op.Fid), 0)
		}
		r.mu.Lock()
		r.used += after - before
		r.mu.Unlock()
	}
	if herr := r.hookAt("applied"); herr != nil {
		return nil, fmt.Errorf("%w: op %d: %w", ErrLocalFailure, op.Seq, herr)
	}
	if err != nil {
		if errors.Is(err, errTreeMismatch) {
			r.setSuspect(fmt.Sprintf("op %d: %v", op.Seq, err))
		}
		e, ok := errnoOf(err)
		if ok && e == unix.ENOSPC && op.Type == brickpb.OpType_OP_SETXATTR && r.hasRoom() {
			// The file system's limit on xattr size, not a full disk:
			// every replica on the same kind of file system fails alike.
		} else if !ok || localErrno(e) || errors.Is(err, errLocalStep) || errors.Is(err, errTreeMismatch) {
			return nil, fmt.Errorf("%w: op %d (%s): %w", ErrLocalFailure, op.Seq, op.Type, err)
		}
		res.Errno = uint32(e)
	} else {
		res.Attr = attr
	}
	r.publish(op)
	return res, nil
}

// hasRoom reports whether the brick's file system has space left (1 MiB).
func (r *Replica) hasRoom() bool {
	var s unix.Statfs_t
	if err := unix.Fstatfs(r.dataFD, &s); err != nil {
		return false
	}
	return s.Bavail*uint64(s.Bsize) >= 1<<20
}

func (r *Replica) hookAt(point string) error {
	if r.hook == nil {
		return nil
	}
	return r.hook(point)
}

// publish makes op applied and wakes readers waiting for it.
func (r *Replica) publish(op *brickpb.Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied, r.appliedEpoch = op.Seq, op.Epoch
	if op.OriginEpoch != 0 {
		r.appliedEpoch = op.OriginEpoch // the op's identity, not its last forwarder
	}
	r.promised = max(r.promised, op.Epoch)
	if r.progress != nil {
		close(r.progress)
		r.progress = nil
	}
}

func (r *Replica) noteFID(fid uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxFID = max(r.maxFID, fid)
}

// setDir records directory fid at d, or its removal (d nil).
func (r *Replica) setDir(fid uint64, d *dirRec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pendDirs[fid] = d
}

// intentFor records what stands at the names an exact op touches.
func (r *Replica) intentFor(op *brickpb.Op) intentRec {
	in := intentRec{seq: op.Seq}
	switch op.Type {
	case brickpb.OpType_OP_RENAME:
		in.src, in.srcDir = r.entryInfo(op.Parent, op.Name)
		in.dst, in.dstDir = r.entryInfo(op.NewParent, op.NewName)
	case brickpb.OpType_OP_RMDIR:
		in.src, in.srcDir = r.entryInfo(op.Parent, op.Name)
	case brickpb.OpType_OP_UNLINK:
		if op.Flags&brickpb.UnlinkForget != 0 {
			in.src, in.srcDir = r.entryInfo(op.Parent, op.Name)
		}
	}
	return in
}

// entryInfo returns the file ID at (parent, name) and whether it is a
// directory; zero values when there is nothing (readable) there.
func (r *Replica) entryInfo(parent uint64, name string) (uint64, bool) {
	if checkName(name) != nil {
		return 0, false
	}
	p, err := r.dirFD(parent)
	if err != nil {
		return 0, false
	}
	defer p.release()
	st, err := lstatAt(p.fd, name)
	if err != nil {
		return 0, false
	}
	fid, _ := fidAt(p.fd, name)
	return fid, isDir(&st)
}

func (r *Replica) applyOp(op *brickpb.Op, redo bool) (*brickpb.Attr, error) {
	switch op.Type {
	case brickpb.OpType_OP_CREATE:
		return r.opCreate(op, redo)
	case brickpb.OpType_OP_MKNOD:
		switch typ := op.Mode & unix.S_IFMT; typ {
		case 0, unix.S_IFREG:
			return r.opCreate(op, redo)
		case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK:
			return r.opMknod(op, typ, redo)
		}
		return nil, unix.EINVAL
	case brickpb.OpType_OP_MKDIR:
		return r.opMkdir(op, redo)
	case brickpb.OpType_OP_SYMLINK:
		return r.opSymlink(op, redo)
	case brickpb.OpType_OP_LINK:
		return r.opLink(op, redo)
	case brickpb.OpType_OP_UNLINK:
		return r.opUnlink(op, redo)
	case brickpb.OpType_OP_RMDIR:
		return r.opRmdir(op, redo)
	case brickpb.OpType_OP_RENAME:
		return r.opRename(op, redo)
	case brickpb.OpType_OP_WRITE:
		return r.opWrite(op)
	case brickpb.OpType_OP_TRUNCATE:
		return r.opTruncate(op)
	case brickpb.OpType_OP_FALLOCATE:
		return r.opFallocate(op)
	case brickpb.OpType_OP_SETATTR:
		return r.opSetattr(op)
	case brickpb.OpType_OP_SETXATTR:
		return nil, r.opSetxattr(op)
	case brickpb.OpType_OP_REMOVEXATTR:
		return nil, r.opRemovexattr(op)
	case brickpb.OpType_OP_FORGET:
		return nil, r.opForget(op)
	}
	return nil, unix.EINVAL
}

// newEntry checks what every creating op shares and opens the parent.
func (r *Replica) newEntry(op *brickpb.Op, redo bool) (*openFD, error) {
	if err := checkName(op.Name); err != nil {
		return nil, err
	}
	if op.Fid <= rootFID {
		return nil, unix.EINVAL
	}
	p, err := r.dirFD(op.Parent)
	if err != nil {
		return nil, err
	}
	if !redo {
		if exists, err := r.fidExists(op.Fid); err != nil || exists {
			p.release()
			if err == nil {
				err = unix.EEXIST // the head reused a file ID
			}
			return nil, err
		}
	}
	return p, nil
}

func (r *Replica) opCreate(op *brickpb.Op, redo bool) (*brickpb.Attr, error) {
	if t := op.Mode & unix.S_IFMT; t != 0 && t != unix.S_IFREG {
		return nil, unix.EINVAL
	}
	p, err := r.newEntry(op, redo)
	if err != nil {
		return nil, err
	}
	defer p.release()
	gen := r.fds.generation()
	fd, spare := -1, false
	if !redo && r.spares.any() && !hasDefaultACL(p.fd) {
		if fd, err = r.takeSpare(p.fd, op.Name); err != nil {
			return nil, err
		}
		spare = fd >= 0
	}
	if fd < 0 {
		fd, err = openat(p.fd, op.Name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	}
	if err == unix.EEXIST && redo {
		return r.resumeNonDir(op, p, unix.S_IFREG)
	}
	if err != nil {
		return nil, err
	}
	if spare && op.MtimeNs == 0 && op.AtimeNs == 0 {
		// A new file's times are now (ownAndStat sets stamped ones).
		now := [2]unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
		if err := futimens(fd, &now); err != nil {
			closeFD(fd)
			return nil, localStep("setting a spare's times", err)
		}
	}
	err = r.hookAt("create")
	if err == nil {
		err = localStep("tagging the file", setFIDFD(fd, op.Fid))
	}
	if err == nil {
		err = r.hookAt("create-tagged")
	}
	if err == nil {
		err = localStep("linking into fids/", unix.Linkat(p.fd, op.Name, r.fidsFD, fidName(op.Fid), 0))
	}
	var st unix.Stat_t
	if err == nil {
		st, err = ownAndStat(fd, op)
	}
	if err != nil {
		closeFD(fd)
		return nil, err
	}
	r.noteFID(op.Fid)
	r.fds.put(op.Fid, fd, false, gen).release()
	return attrOf(op.Fid, &st), nil
}

func fchownIfNeeded(fd int, uid, gid uint32) error {
	st, err := fstat(fd)
	if err != nil || (st.Uid == uid && st.Gid == gid) {
		return err
	}
	return unix.Fchown(fd, int(uid), int(gid))
}

func (r *Replica) opMknod(op *brickpb.Op, typ uint32, redo bool) (*brickpb.Attr, error) {
	p, err := r.newEntry(op, redo)
	if err != nil {
		return nil, err
	}
	defer p.release()
	err = unix.Mknodat(p.fd, op.Name, typ|0o600, int(op.Rdev))
	if err == unix.EEXIST && redo {
		return r.resumeNonDir(op, p, typ)
	}
	if err != nil {
		return nil, err
	}
	return r.finishNonDir(op, p, typ, false)
}

func (r *Replica) opSymlink(op *brickpb.Op, redo bool) (*brickpb.Attr, error) {
	switch {
	case op.Target == "" || len(op.Target) >= pathMax:
		if op.Target == "" {
			return nil, unix.ENOENT
		}
		return nil, unix.ENAMETOOLONG
	case containsNUL(op.Target):
		return nil, unix.EINVAL
	}
	p, err := r.newEntry(op, redo)
	if err != nil {
		return nil, err
	}
	defer p.release()
	err = unix.Symlinkat(op.Target, p.fd, op.Name)
	if err == unix.EEXIST && redo {
		return r.resumeNonDir(op, p, unix.S_IFLNK)
	}
	if err != nil {
		return nil, err
	}
	return r.finishNonDir(op, p, unix.S_IFLNK, false)
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// resumeNonDir finishes, in redo mode, a create whose entry exists: if the
// entry is this op's (tagged with its file ID, or untagged and exactly what
// the op's first step leaves) the remaining steps are done again; anything
// else is EEXIST, as it was the first time.
func (r *Replica) resumeNonDir(op *brickpb.Op, p *openFD, typ uint32) (*brickpb.Attr, error) {
	st, err := lstatAt(p.fd, op.Name)
	if err != nil {
		return nil, localStep("resuming a create", err)
	}
	ours := false
	if fst, err := lstatAt(r.fidsFD, fidName(op.Fid)); err == nil {
		ours = fst.Ino == st.Ino && fst.Dev == st.Dev
	} else if fid, err := fidAt(p.fd, op.Name); err == nil {
		ours = fid == op.Fid
	} else if err == unix.ENODATA {
		ours = st.Mode&unix.S_IFMT == typ && st.Nlink == 1 && (typ != unix.S_IFREG || st.Size == 0)
		if ours && typ == unix.S_IFLNK {
			t, err := readlinkAt(p.fd, op.Name)
			ours = err == nil && t == op.Target
		}
	}
	if !ours || st.Mode&unix.S_IFMT != typ {
		return nil, unix.EEXIST
	}
	if typ == unix.S_IFREG {
		// The times the op stamped, or now: the entry may be a spare,
		// whose times are its last file's (spares.go).
		ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
		if op.MtimeNs != 0 || op.AtimeNs != 0 {
			ts[0], ts[1] = unix.NsecToTimespec(op.AtimeNs), unix.NsecToTimespec(op.MtimeNs)
		}
		if err := unix.UtimesNanoAt(p.fd, op.Name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, localStep("setting a resumed create's times", err)
		}
	}
	return r.finishNonDir(op, p, typ, true)
}

// finishNonDir tags, links into fids/, owns and modes a new non-directory
// entry, by name (it may be a device node: never opened).
func (r *Replica) finishNonDir(op *brickpb.Op, p *openFD, typ uint32, redo bool) (*brickpb.Attr, error) {
	err := r.hookAt("create")
	if err == nil {
		err = localStep("tagging the file", setFIDAt(p.fd, op.Name, op.Fid))
	}
	if err == nil {
		err = r.hookAt("create-tagged")
	}
	if err == nil {
		err = unix.Linkat(p.fd, op.Name, r.fidsFD, fidName(op.Fid), 0)
		if err == unix.EEXIST && redo {
			err = nil // checked by resumeNonDir: the same inode
		}
		err = localStep("linking into fids/", err)
	}
	if err == nil {
		err = localStep("setting the owner",
			unix.Fchownat(r.fidsFD, fidName(op.Fid), int(op.Uid), int(op.Gid), unix.AT_SYMLINK_NOFOLLOW))
	}
	if err == nil && typ != unix.S_IFLNK {
		// Not a symlink (just made, and only this goroutine changes the
		// tree), so fchmodat cannot follow anything.
		err = localStep("setting the mode", unix.Fchmodat(r.fidsFD, fidName(op.Fid), op.Mode&0o7777, 0))
	}
	if err != nil {
		return nil, err
	}
	st, err := lstatAt(r.fidsFD, fidName(op.Fid))
	if err != nil {
		return nil, localStep("stat", err)
	}
	r.noteFID(op.Fid)
	return attrOf(op.Fid, &st), nil
}

func readlinkAt(dirfd int, name string) (string, error) {
	buf := make([]byte, pathMax)
	var n int
	err := retry(func() (err error) { n, err = unix.Readlinkat(dirfd, name, buf); return })
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func (r *Replica) opMkdir(op *brickpb.Op, redo bool) (*brickpb.Attr, error) {
	if t := op.Mode & unix.S_IFMT; t != 0 && t != unix.S_IFDIR {
		return nil, unix.EINVAL
	}
	p, err := r.newEntry(op, redo)
	if err != nil {
		return nil, err
	}
	defer p.release()
	gen := r.fds.generation()
	err = unix.Mkdirat(p.fd, op.Name, 0o700)
	resumed := false
	if err == unix.EEXIST && redo {
		resumed = true
	} else if err != nil {
		return nil, err
	}
	fd, err := openat(p.fd, op.Name, oDir, 0)
	if err != nil {
		if resumed {
			return nil, unix.EEXIST // not a directory: not ours
		}
		return nil, localStep("opening the new directory", err)
	}
	if resumed {
		fid, ferr := fidOfFD(fd)
		ents, derr := readDirents(fd)
		if !(ferr == nil && fid == op.Fid) && !(ferr == unix.ENODATA && derr == nil && len(ents) == 0) {
			closeFD(fd)
			return nil, unix.EEXIST
		}
	}
	err = r.hookAt("create")
	if err == nil {
		err = localStep("tagging the directory", setFIDFD(fd, op.Fid))
	}
	if err == nil {
		err = r.hookAt("create-tagged")
	}
	var st unix.Stat_t
	if err == nil {
		st, err = ownAndStat(fd, op)
	}
	if err != nil {
		closeFD(fd)
		return nil, err
	}
	r.setDir(op.Fid, &dirRec{parent: op.Parent, name: op.Name})
	r.noteFID(op.Fid)
	r.fds.put(op.Fid, fd, true, gen).release()
	return attrOf(op.Fid, &st), nil
}

func (r *Replica) opLink(op *brickpb.Op, redo bool) (*brickpb.Attr, error) {
	if err := checkName(op.Name); err != nil {
		return nil, err
	}
	if d, err := r.isDirFID(op.Fid); err != nil || d {
		if err == nil {
			err = unix.EPERM
		}
		return nil, err
	}
	p, err := r.dirFD(op.Parent)
	if err != nil {
		return nil, err
	}
	defer p.release()
	err = unix.Linkat(r.fidsFD, fidName(op.Fid), p.fd, op.Name, 0)
	if err == unix.EEXIST && redo {
		a, aerr := lstatAt(p.fd, op.Name)
		b, berr := lstatAt(r.fidsFD, fidName(op.Fid))
		if aerr == nil && berr == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			err = nil
		}
	}
	if err != nil {
		return nil, err
	}
	st, err := lstatAt(r.fidsFD, fidName(op.Fid))
	if err != nil {
		return nil, localStep("stat", err)
	}
	return attrOf(op.Fid, &st), nil
}

func (r *Replica) opUnlink(op *brickpb.Op, redo bool) (*brickpb.Attr, error) {
	if err := checkName(op.Name); err != nil {
		return nil, err
	}
	p, err := r.dirFD(op.Parent)
	if err != nil {
		return nil, err
	}
	defer p.release()
	forget := op.Flags&brickpb.UnlinkForget != 0 && op.Fid > rootFID
	if fid, ok := r.intentAt(op, redo); ok {
		if err := unix.Unlinkat(p.fd, op.Name, 0); err != nil {
			return nil, err
		}
		return r.unlinked(op, fid, forget)
	}
	st, err := lstatAt(p.fd, op.Name)
	if err == unix.ENOENT && redo {
		// Done before the crash, maybe up to the forget (if the name
		// was op.Fid's when the op began: the intent says).
		if forget && r.intent.src == op.Fid {
			if st, err := lstatAt(r.fidsFD, fidName(op.Fid)); err == nil && st.Nlink == 1 {
				return nil, r.dropFIDLink(op.Fid, &st)
			}
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if isDir(&st) {
		return nil, unix.EISDIR
	}
	fid, _ := fidAt(p.fd, op.Name)
	if err := unix.Unlinkat(p.fd, op.Name, 0); err != nil {
		return nil, err
	}
	return r.unlinked(op, fid, forget)
}

// intentAt returns the file ID at an UNLINK's or RMDIR's name when the
// op's intent, read just before it (step, logOps) with nothing applied in
// between, says what stands there: an entry of the kind the op removes,
// tagged. Then the op need not look again (7 % of the bricks' CPU under
// rm -rf). ok is false in redo mode, and when the intent does not know (no
// entry, an untagged one, an UNLINK without its forget) or saw the other
// kind of entry: the op looks itself and fails as it should.
func (r *Replica) intentAt(op *brickpb.Op, redo bool) (fid uint64, ok bool) {
	in := &r.intent
	if redo || in.seq != op.Seq || in.src == 0 || in.srcDir != (op.Type == brickpb.OpType_OP_RMDIR) {
		return 0, false
	}
	return in.src, true
}

// unlinked finishes an UNLINK of file fid's name (0: untagged): its
// attributes after, and its forget when that was its last name.
func (r *Replica) unlinked(op *brickpb.Op, fid uint64, forget bool) (*brickpb.Attr, error) {
	if fid == 0 {
		return nil, nil
	}
	st, err := lstatAt(r.fidsFD, fidName(fid))
	if err != nil {
		return nil, nil
	}
	a := attrOf(fid, &st)
	if forget && fid == op.Fid && st.Nlink == 1 {
		// Its last name: only the fids/ link is left.
		if err := r.hookAt("unlink-forget"); err != nil {
			return nil, err
		}
		if err := r.dropFIDLink(fid, &st); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (r *Replica) opRmdir(op *brickpb.Op, redo bool) (*brickpb.Attr, error) {
	if err := checkName(op.Name); err != nil {
		return nil, err
	}
	p, err := r.dirFD(op.Parent)
	if err != nil {
		return nil, err
	}
	defer p.release()
	if fid, ok := r.intentAt(op, redo); ok {
		if err := unix.Unlinkat(p.fd, op.Name, unix.AT_REMOVEDIR); err != nil {
			return nil, err
		}
		r.dropDir(fid)
		return nil, nil
	}
	st, err := lstatAt(p.fd, op.Name)
	if err == unix.ENOENT && redo {
		if r.intent.srcDir && r.intent.src != 0 {
			r.dropDir(r.intent.src)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !isDir(&st) {
		return nil, unix.ENOTDIR
	}
	fid, _ := fidAt(p.fd, op.Name)
	if err := unix.Unlinkat(p.fd, op.Name, unix.AT_REMOVEDIR); err != nil {
		return nil, err
	}
	if fid != 0 {
		r.dropDir(fid)
	}
	return nil, nil
}

func (r *Replica) dropDir(fid uint64) {
	r.setDir(fid, nil)
	r.fds.evict(fid)
}

func (r *Replica) opRename(op *brickpb.Op, redo bool) (*brickpb.Attr, error) {
	if err := checkName(op.Name); err != nil {
		return nil, err
	}
	if err := checkName(op.NewName); err != nil {
		return nil, err
	}
	exchange := op.Flags&unix.RENAME_EXCHANGE != 0
	if op.Flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 || (exchange && op.Flags&unix.RENAME_NOREPLACE != 0) {
		return nil, unix.EINVAL
	}
	p, err := r.dirFD(op.Parent)
	if err != nil {
		return nil, err
	}
	defer p.release()
	np, err := r.dirFD(op.NewParent)
	if err != nil {
		return nil, err
	}
	defer np.release()
	in := r.intent // what stood at both names just before this op
	done := false
	if redo && in.src != 0 {
		a, aerr := fidAt(p.fd, op.Name)
		b, berr := fidAt(np.fd, op.NewName)
		if exchange {
			done = aerr == nil && berr == nil && a == in.dst && b == in.src
		} else {
			_, serr := lstatAt(p.fd, op.Name)
			done = serr == unix.ENOENT && berr == nil && b == in.src
		}
	}
	if !done {
		if err := unix.Renameat2(p.fd, op.Name, np.fd, op.NewName, uint(op.Flags)); err != nil {
			return nil, err
		}
	}
	if in.src != 0 && in.src != in.dst {
		if in.srcDir {
			r.setDir(in.src, &dirRec{parent: op.NewParent, name: op.NewName})
		}
		if in.dst != 0 && in.dstDir {
			if exchange {
				r.setDir(in.dst, &dirRec{parent: op.Parent, name: op.Name})
			} else {
				r.dropDir(in.dst)
			}
		}
	}
	a, err := entryAttr(np.fd, op.NewName)
	if err != nil {
		return nil, localStep("stat", err)
	}
	return a, nil
}

// entryAttr returns the attributes of entry name in directory dirfd.
func entryAttr(dirfd int, name string) (*brickpb.Attr, error) {
	st, err := lstatAt(dirfd, name)
	if err != nil {
		return nil, err
	}
	fid, err := fidAt(dirfd, name)
	if err != nil {
		if err == unix.ENODATA {
			return nil, unix.ENOENT // not the volume's: invisible
		}
		return nil, err
	}
	return attrOf(fid, &st), nil
}
