package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Spare inodes. A regular file whose last link goes (UNLINK with
// UnlinkForget, FORGET) is emptied and moved to spare/ instead of being
// deleted, and the next CREATE renames it into place instead of allocating
// an inode. Why: on ext4 without a journal (this project's test machines)
// the inode allocator skips every inode freed in the last 60 to 300
// seconds, testing each one's inode table block, so after a large delete
// every create scanned thousands of them: half of a brick's CPU under a
// create loop, a quarter of the whole machine's during an untar that
// followed an rm -rf (perf, session 10). Any file system saves the inode's
// allocation and freeing too.
//
// A spare is exactly what a create's first step leaves (see resumeNonDir):
// a regular file with one link, empty, mode 0600, no extended attribute, so
// a crash between the rename and the tagging is redone like any create. It
// is made so before it is moved into spare/, and checked again when the
// replica is opened; anything else found there is deleted.

// spareDir is spare/ in a replica's directory.
const spareDir = "spare"

// spares is the pool, guarded by applyMu (only the apply path uses it).
type spares struct {
	fd    int      // spare/, -1 when the pool is off
	max   int      // entries kept at most
	names []uint64 // the entries, used last in first out
	next  uint64   // the next entry's name
}

// openSpares opens (making it if needed) spare/ and lists its entries,
// deleting what is not a clean spare and what exceeds limit (limit <= 0:
// the pool is off and spare/ is emptied).
func openSpares(dir string, limit int) (spares, error) {
	s := spares{fd: -1, max: limit}
	path := filepath.Join(dir, spareDir)
	if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return s, fmt.Errorf("making %s: %w", path, err)
	}
	fd, err := openat(unix.AT_FDCWD, path, oDir, 0)
	if err != nil {
		return s, fmt.Errorf("opening %s: %w", path, err)
	}
	ents, err := listDir(fd)
	if err != nil {
		closeFD(fd)
		return s, fmt.Errorf("listing %s: %w", path, err)
	}
	for _, e := range ents {
		n, perr := strconv.ParseUint(e.name, 10, 64)
		if perr == nil && len(s.names) < limit && cleanSpare(fd, e.name) {
			s.names = append(s.names, n)
			s.next = max(s.next, n+1)
			continue
		}
		if err := unix.Unlinkat(fd, e.name, 0); err != nil && err != unix.ENOENT {
			if err == unix.EISDIR || err == unix.EPERM {
				err = unix.Unlinkat(fd, e.name, unix.AT_REMOVEDIR)
			}
			if err != nil && err != unix.ENOENT {
				closeFD(fd)
				return s, fmt.Errorf("removing %s/%s: %w", path, e.name, err)
			}
		}
	}
	s.fd = fd
	return s, nil
}

// cleanSpare says whether entry name of spare/ is what a create's first
// step leaves.
func cleanSpare(dirfd int, name string) bool {
	st, err := lstatAt(dirfd, name)
	if err != nil || !isReg(&st) || st.Nlink != 1 || st.Size != 0 || st.Mode&0o7777 != 0o600 {
		return false
	}
	n, err := unix.Llistxattr(procPath(dirfd, name), nil)
	return err == nil && n == 0
}

func (s *spares) close() {
	if s.fd >= 0 {
		closeFD(s.fd)
		s.fd = -1
	}
}

// recycle moves fids/<fid> (a regular file with no other link, st its
// lstat) to spare/, emptied and stripped, and says whether it did; when it
// did not, the link is still there (maybe emptied: the file is going
// anyway) and the caller deletes it. Its only error is a test's crash. A file with extended attributes of
// its own is not recycled: the check for them costs what stripping them
// would, and a file system that labels every inode (an LSM) has them all.
func (r *Replica) recycle(fid uint64, st *unix.Stat_t) (bool, error) {
	s := &r.spares
	if s.fd < 0 || len(s.names) >= s.max || !isReg(st) || st.Nlink != 1 {
		return false, nil
	}
	name := fidName(fid)
	fd, err := openat(r.fidsFD, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, nil
	}
	defer closeFD(fd)
	var buf [64]byte
	n, err := unix.Flistxattr(fd, buf[:])
	if err != nil || n != len(fidXattr)+1 || string(buf[:n-1]) != fidXattr {
		return false, nil // ERANGE too: more than the tag
	}
	if retry(func() error { return unix.Fremovexattr(fd, fidXattr) }) != nil {
		return false, nil
	}
	if st.Size != 0 && retry(func() error { return unix.Ftruncate(fd, 0) }) != nil {
		return false, nil
	}
	if st.Mode&0o7777 != 0o600 && unix.Fchmod(fd, 0o600) != nil {
		return false, nil
	}
	if err := r.hookAt("recycle"); err != nil {
		return false, err
	}
	spare := s.next
	if unix.Renameat2(r.fidsFD, name, s.fd, fidName(spare), unix.RENAME_NOREPLACE) != nil {
		return false, nil
	}
	s.next++
	s.names = append(s.names, spare)
	return true, nil
}

// takeSpare renames a spare to name in directory dirfd and opens it for a
// CREATE. It returns -1 and no error when there is no spare to take (the
// caller creates the file), and EEXIST when name exists, as O_EXCL would.
func (r *Replica) takeSpare(dirfd int, name string) (int, error) {
	s := &r.spares
	for len(s.names) > 0 {
		spare := fidName(s.names[len(s.names)-1])
		err := unix.Renameat2(s.fd, spare, dirfd, name, unix.RENAME_NOREPLACE)
		switch err {
		case nil:
			s.names = s.names[:len(s.names)-1]
		case unix.ENOENT: // gone from spare/ (an operator?): try the next
			s.names = s.names[:len(s.names)-1]
			continue
		case unix.EEXIST:
			return -1, err
		default:
			return -1, nil // let a real create meet (and report) whatever it is
		}
		fd, err := openat(dirfd, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, localStep("opening a spare inode", err)
		}
		return fd, nil
	}
	return -1, nil
}

// hasDefaultACL says whether directory dirfd has a default ACL, which a
// file made by O_CREAT inherits and a spare would not: such a directory
// gets real creates, so that every replica ends up with the same ACL
// whichever of them had a spare.
func hasDefaultACL(dirfd int) bool {
	_, err := unix.Fgetxattr(dirfd, "system.posix_acl_default", nil)
	return err == nil || err == unix.ERANGE
}
