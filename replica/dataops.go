package replica

import (
	"math"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

// The ops in this file are not exact (see exactOp) except FORGET and
// SETXATTR with flags: re-applying a run of them converges.

func (r *Replica) opWrite(op *brickpb.Op) (*brickpb.Attr, error) {
	if op.Offset < 0 {
		return nil, unix.EINVAL
	}
	if len(op.Data) > 0 && op.Offset > math.MaxInt64-int64(len(op.Data)) {
		return nil, unix.EFBIG
	}
	o, err := r.fileFD(op.Fid)
	if err != nil {
		return nil, err
	}
	defer o.release()
	n, err := r.writeDirect(o, op.Data, op.Offset)
	if err != nil {
		if n > 0 {
			r.dirtyRange(op.Fid, op.Offset, int64(len(op.Data)))
			return nil, localStep("writing", err)
		}
		return nil, err
	}
	data, off := op.Data[n:], op.Offset+int64(n)
	for len(data) > 0 {
		var n int
		err := retry(func() (err error) { n, err = unix.Pwrite(o.fd, data, off); return })
		if err != nil {
			if len(data) < len(op.Data) {
				// Half written: whatever the errno, not the op's fault.
				r.dirtyRange(op.Fid, op.Offset, int64(len(op.Data)))
				return nil, localStep("writing", err)
			}
			return nil, err
		}
		data, off = data[n:], off+int64(n)
	}
	r.dirtyRange(op.Fid, op.Offset, int64(len(op.Data)))
	if err := r.dropBehind(o.fd, op.Fid, op.Offset, int64(len(op.Data))); err != nil {
		return nil, localStep("writing back", err)
	}
	return fdAttr(op.Fid, o.fd)
}

func fdAttr(fid uint64, fd int) (*brickpb.Attr, error) {
	st, err := fstat(fd)
	if err != nil {
		return nil, localStep("stat", err)
	}
	return attrOf(fid, &st), nil
}

func (r *Replica) opTruncate(op *brickpb.Op) (*brickpb.Attr, error) {
	if op.Size < 0 {
		return nil, unix.EINVAL
	}
	o, err := r.fileFD(op.Fid)
	if err != nil {
		return nil, err
	}
	defer o.release()
	if err := retry(func() error { return unix.Ftruncate(o.fd, op.Size) }); err != nil {
		return nil, err
	}
	r.dirtyFrom(op.Fid, op.Size)
	return fdAttr(op.Fid, o.fd)
}

// fallocateModes are the fallocate modes a brick applies. COLLAPSE_RANGE
// and INSERT_RANGE shift data, so applying them twice (crash redo) would
// not converge: EOPNOTSUPP, which the FUSE layer passes on.
var fallocateModes = map[uint32]bool{
	0:                        true,
	unix.FALLOC_FL_KEEP_SIZE: true,
	unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE: true,
	unix.FALLOC_FL_ZERO_RANGE:                            true,
	unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE: true,
}

func (r *Replica) opFallocate(op *brickpb.Op) (*brickpb.Attr, error) {
	if !fallocateModes[op.Flags] {
		return nil, unix.EOPNOTSUPP
	}
	if op.Offset < 0 || op.Size <= 0 {
		return nil, unix.EINVAL
	}
	if op.Offset > math.MaxInt64-op.Size {
		return nil, unix.EFBIG
	}
	o, err := r.fileFD(op.Fid)
	if err != nil {
		return nil, err
	}
	defer o.release()
	if err := retry(func() error { return unix.Fallocate(o.fd, op.Flags, op.Offset, op.Size) }); err != nil {
		return nil, err
	}
	r.dirtyRange(op.Fid, op.Offset, op.Size)
	return fdAttr(op.Fid, o.fd)
}

const setattrAll = uint32(brickpb.SetattrBit_SETATTR_MODE | brickpb.SetattrBit_SETATTR_UID |
	brickpb.SetattrBit_SETATTR_GID | brickpb.SetattrBit_SETATTR_SIZE |
	brickpb.SetattrBit_SETATTR_ATIME | brickpb.SetattrBit_SETATTR_MTIME)

// killSUIDGID is mode without the bits a write, truncate or chown by a
// caller without CAP_FSETID clears: set-user-ID, and set-group-ID when the
// group may execute (without that it marks mandatory locking).
func killSUIDGID(mode uint32) uint32 {
	mode &^= unix.S_ISUID
	if mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		mode &^= unix.S_ISGID
	}
	return mode
}

// opSetattr applies, in this order, size, owner, the set-ID kill
// (brickpb.SetattrKillSUIDGID), mode and times (so a mode in the same op
// wins over the set-ID bits a chown or kill clears, and the times over
// those a truncate sets).
func (r *Replica) opSetattr(op *brickpb.Op) (*brickpb.Attr, error) {
	v := op.Valid
	if v&^setattrAll != 0 || op.Flags&^brickpb.SetattrKillSUIDGID != 0 {
		return nil, unix.EINVAL
	}
	has := func(b brickpb.SetattrBit) bool { return v&uint32(b) != 0 }
	if has(brickpb.SetattrBit_SETATTR_SIZE) && op.Size < 0 {
		return nil, unix.EINVAL
	}
	t, err := r.target(op.Fid)
	if err != nil {
		return nil, err
	}
	defer t.release()
	if has(brickpb.SetattrBit_SETATTR_SIZE) {
		switch {
		case t.dir != nil:
			return nil, unix.EISDIR
		case !isReg(&t.st):
			return nil, unix.EINVAL
		}
		o, err := r.fileFD(op.Fid)
		if err != nil {
			return nil, err
		}
		err = retry(func() error { return unix.Ftruncate(o.fd, op.Size) })
		o.release()
		if err != nil {
			return nil, err
		}
		r.dirtyFrom(op.Fid, op.Size)
	}
	if has(brickpb.SetattrBit_SETATTR_UID) || has(brickpb.SetattrBit_SETATTR_GID) {
		uid, gid := -1, -1
		if has(brickpb.SetattrBit_SETATTR_UID) {
			uid = int(op.Uid)
		}
		if has(brickpb.SetattrBit_SETATTR_GID) {
			gid = int(op.Gid)
		}
		if t.dir != nil {
			err = unix.Fchown(t.dir.fd, uid, gid)
		} else {
			err = unix.Fchownat(r.fidsFD, t.name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return nil, err
		}
	}
	if op.Flags&brickpb.SetattrKillSUIDGID != 0 && t.dir == nil && isReg(&t.st) {
		// After the chown above, which may have cleared them already.
		st, err := lstatAt(r.fidsFD, t.name)
		if err != nil {
			return nil, localStep("stat", err)
		}
		if m := killSUIDGID(st.Mode); m != st.Mode {
			if err := unix.Fchmodat(r.fidsFD, t.name, m&0o7777, 0); err != nil {
				return nil, err
			}
		}
	}
	if has(brickpb.SetattrBit_SETATTR_MODE) {
		if t.dir != nil {
			err = unix.Fchmod(t.dir.fd, op.Mode&0o7777)
		} else if !isLink(&t.st) { // a symlink's mode means nothing on Linux
			// Only the apply goroutine changes fids/, and it is not a
			// symlink: fchmodat cannot follow anything.
			err = unix.Fchmodat(r.fidsFD, t.name, op.Mode&0o7777, 0)
		}
		if err != nil {
			return nil, err
		}
	}
	if has(brickpb.SetattrBit_SETATTR_ATIME) || has(brickpb.SetattrBit_SETATTR_MTIME) {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if has(brickpb.SetattrBit_SETATTR_ATIME) {
			ts[0] = unix.NsecToTimespec(op.AtimeNs)
		}
		if has(brickpb.SetattrBit_SETATTR_MTIME) {
			ts[1] = unix.NsecToTimespec(op.MtimeNs)
		}
		if t.dir != nil {
			err = unix.UtimesNanoAt(t.dir.fd, ".", ts, 0)
		} else {
			err = unix.UtimesNanoAt(r.fidsFD, t.name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return nil, err
		}
	}
	var st unix.Stat_t
	if t.dir != nil {
		st, err = fstat(t.dir.fd)
	} else {
		st, err = lstatAt(r.fidsFD, t.name)
	}
	if err != nil {
		return nil, localStep("stat", err)
	}
	return attrOf(op.Fid, &st), nil
}

func (r *Replica) opSetxattr(op *brickpb.Op) error {
	if err := checkXattrName(op.Xattr); err != nil {
		return err
	}
	if len(op.Data) > xattrSizeMax {
		return unix.E2BIG
	}
	if op.Flags&^uint32(unix.XATTR_CREATE|unix.XATTR_REPLACE) != 0 || op.Flags == unix.XATTR_CREATE|unix.XATTR_REPLACE {
		return unix.EINVAL
	}
	t, err := r.target(op.Fid)
	if err != nil {
		return err
	}
	defer t.release()
	return r.setxattr(t, op.Xattr, op.Data, int(op.Flags))
}

func (r *Replica) opRemovexattr(op *brickpb.Op) error {
	if err := checkXattrName(op.Xattr); err != nil {
		return err
	}
	t, err := r.target(op.Fid)
	if err != nil {
		return err
	}
	defer t.release()
	return r.removexattr(t, op.Xattr)
}

// opForget drops the fids/ link of a file no longer in the tree. A file
// already forgotten is success (idempotent); a file still linked in the
// tree is EBUSY; a directory is EINVAL (it has no fids/ link).
func (r *Replica) opForget(op *brickpb.Op) error {
	if op.Fid <= rootFID {
		return unix.EINVAL
	}
	st, err := lstatAt(r.fidsFD, fidName(op.Fid))
	if err == unix.ENOENT {
		if d, err := r.isDirFID(op.Fid); err != nil || d {
			if err == nil {
				err = unix.EINVAL
			}
			return err
		}
		return nil
	}
	if err != nil {
		return localStep("stat in fids/", err)
	}
	if st.Nlink > 1 {
		return unix.EBUSY
	}
	return r.dropFIDLink(op.Fid, &st)
}

// dropFIDLink removes the fids/ link of a file that has no other name left
// (OP_FORGET, OP_UNLINK with UnlinkForget), st its lstat: a regular file
// becomes a spare inode when it can (spares.go).
func (r *Replica) dropFIDLink(fid uint64, st *unix.Stat_t) error {
	recycled, err := r.recycle(fid, st)
	if err != nil {
		return err
	}
	if !recycled {
		if err := unix.Unlinkat(r.fidsFD, fidName(fid), 0); err != nil {
			return localStep("unlinking from fids/", err)
		}
	}
	// After the link (a reader in between hears ENOENT, see walkDir) and
	// before the inode can be another file's (the next create).
	r.fds.evict(fid)
	r.dirtyFrom(fid, 0)
	return nil
}
