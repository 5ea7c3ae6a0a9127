package replica

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

type boltTx = bolt.Tx

// maxDepth bounds a walk up the directory map (a cycle would be
// corruption). PATH_MAX-long paths of one-byte names are 2048 deep.
const maxDepth = 1 << 16

// errRaced: a walk met a directory renamed or removed under it (readers
// run concurrently with Apply); walk again.
var errRaced = errors.New("directory moved during a walk")

// lookupDir returns where directory fid (not the root) is, from the
// pending changes or meta.db.
func (r *Replica) lookupDir(fid uint64) (dirRec, bool, error) {
	r.mu.Lock()
	d, pending := r.pendDirs[fid]
	r.mu.Unlock()
	if pending {
		if d == nil {
			return dirRec{}, false, nil
		}
		return *d, true, nil
	}
	var rec dirRec
	found := false
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDirs).Get(u64Key(fid))
		if v == nil {
			return nil
		}
		var err error
		rec, err = decodeDirRec(v)
		found = err == nil
		return err
	})
	if err != nil {
		return dirRec{}, false, fmt.Errorf("%w: directory %d: %w", ErrCorrupt, fid, err)
	}
	return rec, found, nil
}

func (r *Replica) isDirFID(fid uint64) (bool, error) {
	if fid == rootFID {
		return true, nil
	}
	_, ok, err := r.lookupDir(fid)
	return ok, err
}

// fidExists reports whether fid names a file or directory of the replica.
func (r *Replica) fidExists(fid uint64) (bool, error) {
	if _, err := lstatAt(r.fidsFD, fidName(fid)); err == nil {
		return true, nil
	} else if err != unix.ENOENT {
		return false, localStep("stat in fids/", err)
	}
	return r.isDirFID(fid)
}

// rootFD is the root directory's descriptor, never cached nor closed by
// a release.
func (r *Replica) rootFD() *openFD { return &openFD{fid: rootFID, fd: r.dataFD, dir: true, refs: 1} }

// dirFD returns an open descriptor of directory fid; release it. POSIX
// errors: ENOENT (no such file), ENOTDIR (fid is not a directory). A tree
// that does not match the directory map gives errTreeMismatch.
func (r *Replica) dirFD(fid uint64) (*openFD, error) {
	if fid == rootFID {
		return r.rootFD(), nil
	}
	for attempt := 0; ; attempt++ {
		o, err := r.walkDir(fid)
		if err != errRaced {
			return o, err
		}
		if attempt == 3 {
			return nil, fmt.Errorf("%w: directory %d: the walk keeps failing", errTreeMismatch, fid)
		}
	}
}

// walkDir opens directory fid by walking down from its nearest open
// ancestor, one component at a time, never following a symlink, checking
// each directory's file ID tag.
func (r *Replica) walkDir(fid uint64) (*openFD, error) {
	if o := r.fds.get(fid); o != nil {
		if o.dir {
			return o, nil
		}
		o.release()
		// A file, but it may be one being forgotten: its fids/ link is
		// gone before its cached descriptor (dropFIDLink), and a reader
		// in between must hear ENOENT, as after.
		if _, err := lstatAt(r.fidsFD, fidName(fid)); err == unix.ENOENT {
			return nil, unix.ENOENT
		}
		return nil, unix.ENOTDIR
	}
	gen := r.fds.generation()
	type step struct {
		fid  uint64
		name string
	}
	var chain []step
	base := r.rootFD()
	for cur := fid; cur != rootFID; {
		if o := r.fds.get(cur); o != nil && o.dir {
			base = o
			break
		} else if o != nil {
			o.release()
		}
		d, ok, err := r.lookupDir(cur)
		if err != nil {
			return nil, err
		}
		if !ok {
			if len(chain) > 0 {
				return nil, errRaced // an ancestor vanished meanwhile
			}
			if _, err := lstatAt(r.fidsFD, fidName(fid)); err == nil {
				return nil, unix.ENOTDIR
			}
			return nil, unix.ENOENT
		}
		chain = append(chain, step{cur, d.name})
		if len(chain) > maxDepth {
			return nil, fmt.Errorf("%w: directory %d: the map has a cycle", errTreeMismatch, fid)
		}
		cur = d.parent
	}
	defer base.release()
	fd, owned := base.fd, false
	for i := len(chain) - 1; i >= 0; i-- {
		nfd, err := openat(fd, chain[i].name, oDir, 0)
		if owned {
			closeFD(fd)
		}
		if err != nil {
			if err == unix.ENOENT {
				return nil, errRaced
			}
			return nil, fmt.Errorf("%w: opening directory %d (%q): %w", errTreeMismatch, chain[i].fid, chain[i].name, err)
		}
		fd, owned = nfd, true
		if got, err := fidOfFD(fd); err != nil || got != chain[i].fid {
			closeFD(fd)
			return nil, errRaced
		}
	}
	return r.fds.put(fid, fd, true, gen), nil
}

// fileFD returns a read-write descriptor of regular file fid; release it.
// POSIX errors: ENOENT, EISDIR, EINVAL (not a regular file).
func (r *Replica) fileFD(fid uint64) (*openFD, error) {
	if o := r.fds.get(fid); o != nil {
		if !o.dir {
			return o, nil
		}
		o.release()
		return nil, unix.EISDIR
	}
	gen := r.fds.generation()
	pfd, err := openat(r.fidsFD, fidName(fid), oPath, 0)
	if err == unix.ENOENT {
		if d, derr := r.isDirFID(fid); derr != nil {
			return nil, derr
		} else if d {
			return nil, unix.EISDIR
		}
		return nil, unix.ENOENT
	}
	if err != nil {
		return nil, localStep("opening in fids/", err)
	}
	defer closeFD(pfd)
	st, err := fstat(pfd)
	if err != nil {
		return nil, localStep("stat", err)
	}
	if !isReg(&st) {
		return nil, unix.EINVAL
	}
	// Reopen the very inode through its O_PATH descriptor: a device
	// node is never opened, and nothing is resolved by name again.
	fd, err := openat(unix.AT_FDCWD, procPath(pfd, ""), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, localStep("opening", err)
	}
	return r.fds.put(fid, fd, false, gen), nil
}

// target is a file named by ID for attribute and xattr changes: a
// directory (open) or an entry of fids/.
type target struct {
	dir  *openFD // directories
	name string  // non-directories: the name in fids/
	st   unix.Stat_t
}

func (t *target) release() {
	if t.dir != nil {
		t.dir.release()
	}
}

// target finds fid. POSIX errors: ENOENT.
func (r *Replica) target(fid uint64) (*target, error) {
	if fid == 0 {
		return nil, unix.ENOENT
	}
	if fid != rootFID {
		st, err := lstatAt(r.fidsFD, fidName(fid))
		if err == nil {
			return &target{name: fidName(fid), st: st}, nil
		}
		if err != unix.ENOENT {
			return nil, localStep("stat in fids/", err)
		}
	}
	o, err := r.dirFD(fid)
	if err != nil {
		return nil, err
	}
	st, err := fstat(o.fd)
	if err != nil {
		o.release()
		return nil, localStep("stat", err)
	}
	return &target{dir: o, st: st}, nil
}

func (r *Replica) xattrPath(t *target) string { return procPath(r.fidsFD, t.name) }

func (r *Replica) getxattr(t *target, name string) ([]byte, error) {
	if t.dir == nil {
		return xattrGet(r.xattrPath(t), name)
	}
	buf := make([]byte, 256)
	for {
		n, err := unix.Fgetxattr(t.dir.fd, name, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ERANGE && len(buf) < xattrSizeMax:
			buf = make([]byte, xattrSizeMax)
			continue
		case err != nil:
			return nil, err
		}
		return buf[:n:n], nil
	}
}

func (r *Replica) listxattr(t *target) ([]string, error) {
	if t.dir == nil {
		return xattrList(r.xattrPath(t))
	}
	return xattrList(procPath(t.dir.fd, ".")) // "." below the magic link: the directory itself
}

func (r *Replica) setxattr(t *target, name string, val []byte, flags int) error {
	if t.dir == nil {
		p := r.xattrPath(t)
		return retry(func() error { return unix.Lsetxattr(p, name, val, flags) })
	}
	return retry(func() error { return unix.Fsetxattr(t.dir.fd, name, val, flags) })
}

func (r *Replica) removexattr(t *target, name string) error {
	if t.dir == nil {
		p := r.xattrPath(t)
		return retry(func() error { return unix.Lremovexattr(p, name) })
	}
	return retry(func() error { return unix.Fremovexattr(t.dir.fd, name) })
}
