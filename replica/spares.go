package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

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
// is made so before it is moved into spare/, except that emptying a file
// with data is left to a goroutine of its own (clean): freeing its blocks
// is the slow part of a delete, on a file system mounted with discard a
// synchronous discard per file, and the apply path need not wait for it.
// A create that finds no empty spare empties one itself. spare/ is checked
// again when the replica is opened; anything else found there (a spare not
// emptied before a crash) is deleted.

// spareDir is spare/ in a replica's directory.
const spareDir = "spare"

// spares is the pool. fd, max and next are the apply path's (applyMu);
// the lists are shared with the goroutine that empties spares (mu).
type spares struct {
	fd   int    // spare/, -1 when the pool is off
	max  int    // entries kept at most
	next uint64 // the next entry's name

	mu       sync.Mutex
	settle   sync.Cond     // on mu: a full spare was emptied (waitSettled)
	names    []uint64      // empty entries, used last in first out
	full     []fullSpare   // entries still holding data, oldest first
	emptying int           // entries being emptied (taken from full)
	wake     chan struct{} // capacity 1: full has entries
	stop     chan struct{} // closed by close
	done     chan struct{} // closed when the goroutine has returned
}

// fullSpare is a spare still to be emptied, and its open descriptor.
type fullSpare struct {
	n  uint64
	fd int
}

// maxFull bounds the spares waiting to be emptied (each holds a
// descriptor); past it a delete empties its file itself.
const maxFull = 256

// openSpares opens (making it if needed) spare/ and lists its entries,
// deleting what is not a clean spare and what exceeds limit (limit <= 0:
// the pool is off and spare/ is emptied).
func openSpares(dir string, limit int) (*spares, error) {
	s := &spares{fd: -1, max: limit}
	s.settle.L = &s.mu
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
	s.wake, s.stop, s.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go s.clean()
	return s, nil
}

// clean empties the spares recycle left full, oldest first, until close.
// A failure leaves the entry out of the pool (and in spare/ until the next
// open deletes it).
func (s *spares) clean() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
		for s.emptyFull(false) {
		}
	}
}

// emptyFull takes a full spare, the oldest or the newest, empties it and
// puts it with the empty ones, and says whether there was one. The apply
// path (emptyOne) and clean may run it at once: each takes its own.
func (s *spares) emptyFull(newest bool) bool {
	s.mu.Lock()
	if len(s.full) == 0 {
		s.mu.Unlock()
		return false
	}
	var f fullSpare
	if newest {
		f, s.full = s.full[len(s.full)-1], s.full[:len(s.full)-1]
	} else {
		f, s.full = s.full[0], s.full[1:]
	}
	s.emptying++
	s.mu.Unlock()
	err := retry(func() error { return unix.Ftruncate(f.fd, 0) })
	closeFD(f.fd)
	s.mu.Lock()
	s.emptying--
	if err == nil {
		s.names = append(s.names, f.n)
	}
	s.settle.Broadcast()
	s.mu.Unlock()
	return true
}

// count is how many entries the pool holds, empty or not.
func (s *spares) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.names) + len(s.full) + s.emptying
}

// any reports whether a create may find a spare.
func (s *spares) any() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.names)+len(s.full) > 0
}

// waitSettled returns once no spare is waiting to be emptied (tests).
func (s *spares) waitSettled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.full) > 0 || s.emptying > 0 {
		s.settle.Wait()
	}
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

// close stops the goroutine emptying spares; the ones it has not emptied
// stay full in spare/ (the next open deletes them).
func (s *spares) close() {
	if s.stop != nil {
		close(s.stop)
		<-s.done
		s.stop = nil
		s.mu.Lock()
		for _, f := range s.full {
			closeFD(f.fd)
		}
		s.full = nil
		s.settle.Broadcast()
		s.mu.Unlock()
	}
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
	s := r.spares
	if s.fd < 0 || !isReg(st) || st.Nlink != 1 || s.count() >= s.max {
		return false, nil
	}
	name := fidName(fid)
	fd, err := openat(r.fidsFD, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, nil
	}
	keep := false // fd goes to clean
	defer func() {
		if !keep {
			closeFD(fd)
		}
	}()
	var buf [64]byte
	n, err := unix.Flistxattr(fd, buf[:])
	if err != nil || n != len(fidXattr)+1 || string(buf[:n-1]) != fidXattr {
		return false, nil // ERANGE too: more than the tag
	}
	if retry(func() error { return unix.Fremovexattr(fd, fidXattr) }) != nil {
		return false, nil
	}
	s.mu.Lock()
	later := st.Size != 0 && len(s.full) < maxFull
	s.mu.Unlock()
	if st.Size != 0 && !later && retry(func() error { return unix.Ftruncate(fd, 0) }) != nil {
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
	s.mu.Lock()
	if later {
		keep = true
		s.full = append(s.full, fullSpare{n: spare, fd: fd})
	} else {
		s.names = append(s.names, spare)
	}
	s.mu.Unlock()
	if later {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return true, nil
}

// emptyOne empties a spare left full itself, the newest, when the pool has
// no empty one: a create need not wait for the goroutine.
func (s *spares) emptyOne() {
	s.mu.Lock()
	none := len(s.names) == 0
	s.mu.Unlock()
	if none {
		s.emptyFull(true)
	}
}

// takeSpare renames a spare to name in directory dirfd and opens it for a
// CREATE. It returns -1 and no error when there is no spare to take (the
// caller creates the file), and EEXIST when name exists, as O_EXCL would.
func (r *Replica) takeSpare(dirfd int, name string) (int, error) {
	s := r.spares
	for {
		s.emptyOne()
		s.mu.Lock()
		if len(s.names) == 0 {
			s.mu.Unlock()
			return -1, nil
		}
		// Only this goroutine (applyMu) takes from names: the last one is
		// still there after the rename.
		n := s.names[len(s.names)-1]
		s.mu.Unlock()
		err := unix.Renameat2(s.fd, fidName(n), dirfd, name, unix.RENAME_NOREPLACE)
		switch err {
		case nil, unix.ENOENT: // ENOENT: gone from spare/ (an operator?): try the next
			s.mu.Lock()
			s.names = slices.DeleteFunc(s.names, func(x uint64) bool { return x == n })
			s.mu.Unlock()
			if err != nil {
				continue
			}
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
}

// hasDefaultACL says whether directory dirfd has a default ACL, which a
// file made by O_CREAT inherits and a spare would not: such a directory
// gets real creates, so that every replica ends up with the same ACL
// whichever of them had a spare.
func hasDefaultACL(dirfd int) bool {
	_, err := unix.Fgetxattr(dirfd, "system.posix_acl_default", nil)
	return err == nil || err == unix.ERANGE
}
