package fuse

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// heldLock is one lock in fakeLocker's table.
type heldLock struct {
	owner uint64
	LockSpec
}

// releaseCall is one ReleaseLocks call fakeLocker received.
type releaseCall struct {
	fid, owner uint64
	flock      bool
}

// fakeLocker is a Backend with a Locker: an in-memory lock table. Locks of
// different owners conflict when they are of the same kind (flock or byte
// range), overlap and one of them is a write lock. A waiting SetLock polls
// a broadcast channel until it can be granted or ctx ends (EINTR).
type fakeLocker struct {
	Backend

	mu       sync.Mutex
	locks    map[uint64][]heldLock
	changed  chan struct{} // closed and replaced at every change
	waiting  int           // SetLock calls blocked now
	cut      int           // waits ended by ctx
	releases []releaseCall
	err      error // returned by every Locker call when set
}

func newFakeLocker(b Backend) *fakeLocker {
	return &fakeLocker{Backend: b, locks: map[uint64][]heldLock{}, changed: make(chan struct{})}
}

func (f *fakeLocker) fail(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func overlaps(a, b LockSpec) bool { return a.Start <= b.End && b.Start <= a.End }

// conflict returns the first lock on fid of another owner that lk cannot
// coexist with. f.mu is held.
func (f *fakeLocker) conflict(fid, owner uint64, lk LockSpec) (heldLock, bool) {
	for _, h := range f.locks[fid] {
		if h.owner != owner && h.Flock == lk.Flock && overlaps(h.LockSpec, lk) &&
			(h.Type == syscall.F_WRLCK || lk.Type == syscall.F_WRLCK) {
			return h, true
		}
	}
	return heldLock{}, false
}

// unlock removes owner's locks of lk's kind from lk's range, trimming and
// splitting the ones that stick out. f.mu is held.
func (f *fakeLocker) unlock(fid, owner uint64, lk LockSpec) {
	var kept []heldLock
	for _, h := range f.locks[fid] {
		if h.owner != owner || h.Flock != lk.Flock || !overlaps(h.LockSpec, lk) {
			kept = append(kept, h)
			continue
		}
		if h.Flock {
			continue
		}
		if h.Start < lk.Start {
			left := h
			left.End = lk.Start - 1
			kept = append(kept, left)
		}
		if h.End > lk.End {
			right := h
			right.Start = lk.End + 1
			kept = append(kept, right)
		}
	}
	f.setLocks(fid, kept)
}

func (f *fakeLocker) setLocks(fid uint64, ls []heldLock) {
	if len(ls) == 0 {
		delete(f.locks, fid)
	} else {
		f.locks[fid] = ls
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeLocker) GetLock(ctx context.Context, fid, owner uint64, lk LockSpec) (LockSpec, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return LockSpec{}, false, f.err
	}
	h, found := f.conflict(fid, owner, lk)
	return h.LockSpec, found, nil
}

func (f *fakeLocker) SetLock(ctx context.Context, fid, owner uint64, lk LockSpec, wait bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if lk.Type == syscall.F_UNLCK {
		f.unlock(fid, owner, lk)
		return nil
	}
	for {
		if _, found := f.conflict(fid, owner, lk); !found {
			break
		}
		if !wait {
			return fmt.Errorf("fake lock table: %w", syscall.EAGAIN)
		}
		changed := f.changed
		f.waiting++
		f.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
		}
		f.mu.Lock()
		f.waiting--
		if ctx.Err() != nil {
			f.cut++
			return fmt.Errorf("waiting for a lock: %w", syscall.EINTR)
		}
	}
	f.unlock(fid, owner, lk)
	f.setLocks(fid, append(f.locks[fid], heldLock{owner: owner, LockSpec: lk}))
	return nil
}

func (f *fakeLocker) ReleaseLocks(ctx context.Context, fid, owner uint64, flock bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases = append(f.releases, releaseCall{fid, owner, flock})
	if f.err != nil {
		return f.err
	}
	var kept []heldLock
	for _, h := range f.locks[fid] {
		if h.owner != owner || !flock && h.Flock {
			kept = append(kept, h)
		}
	}
	f.setLocks(fid, kept)
	return nil
}

// held returns the locks on fid.
func (f *fakeLocker) held(fid uint64) []heldLock {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.locks[fid])
}

func (f *fakeLocker) released() []releaseCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.releases)
}

func (f *fakeLocker) waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}

func (f *fakeLocker) interrupted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cut
}

// eventually polls cond for up to 5 s: RELEASE reaches the file system
// after close(2) has returned.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openRW opens (creating) path read-write and returns the descriptor and
// the file, which the test closes or leaves to the cleanup.
func openRW(t *testing.T, path string) (int, *os.File) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd()), f
}

func ofdLock(fd int, cmd int, typ int16, start, length int64) (unix.Flock_t, error) {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
	err := unix.FcntlFlock(uintptr(fd), cmd, &lk)
	return lk, err
}

// lockFile mounts a fakeLocker over a memBackend and creates one file.
func lockFile(t *testing.T) (fake *fakeLocker, srv *Server, path string, fid uint64) {
	fake = newFakeLocker(newMemBackend())
	srv, dir := mount(t, fake, Options{})
	path = filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("some data"), 0o644); err != nil {
		t.Fatal(err)
	}
	return fake, srv, path, stat(t, path).Ino
}

func TestLockSpecMapping(t *testing.T) {
	for _, tc := range []struct {
		in    gofuse.FileLock
		flags uint32
		want  LockSpec
	}{
		{gofuse.FileLock{Start: 10, End: 29, Typ: syscall.F_WRLCK, Pid: 7}, 0,
			LockSpec{Type: syscall.F_WRLCK, Start: 10, End: 29, Pid: 7}},
		{gofuse.FileLock{Start: 5, End: math.MaxInt64, Typ: syscall.F_RDLCK}, 0,
			LockSpec{Type: syscall.F_RDLCK, Start: 5, End: math.MaxUint64}},
		{gofuse.FileLock{Start: 0, End: math.MaxInt64, Typ: syscall.F_WRLCK, Pid: 9}, gofuse.FUSE_LK_FLOCK,
			LockSpec{Flock: true, Type: syscall.F_WRLCK, End: math.MaxUint64, Pid: 9}},
	} {
		got := lockSpec(&tc.in, tc.flags)
		if got != tc.want {
			t.Errorf("lockSpec(%+v, %d) = %+v, want %+v", tc.in, tc.flags, got, tc.want)
		}
		if back := fileLock(got); back != tc.in {
			t.Errorf("fileLock(%+v) = %+v, want %+v", got, back, tc.in)
		}
	}
	// Without a Locker the kernel keeps locks and never asks; if it did,
	// the answer is ENOTSUP.
	n := &node{fsys: &fileSystem{}}
	lk := &gofuse.FileLock{Typ: syscall.F_WRLCK}
	if errno := n.Setlk(t.Context(), nil, 1, lk, 0); errno != syscall.ENOTSUP {
		t.Errorf("Setlk without a Locker: %v", errno)
	}
	if errno := n.Setlkw(t.Context(), nil, 1, lk, 0); errno != syscall.ENOTSUP {
		t.Errorf("Setlkw without a Locker: %v", errno)
	}
	if errno := n.Getlk(t.Context(), nil, 1, lk, 0, &gofuse.FileLock{}); errno != syscall.ENOTSUP {
		t.Errorf("Getlk without a Locker: %v", errno)
	}
}

func TestLocksForwardedOFD(t *testing.T) {
	fake, _, path, fid := lockFile(t)
	fd1, f1 := openRW(t, path)
	fd2, _ := openRW(t, path)

	if _, err := ofdLock(fd1, unix.F_OFD_SETLK, unix.F_WRLCK, 10, 20); err != nil {
		t.Fatalf("F_OFD_SETLK write [10,30) on fd1: %v", err)
	}
	held := fake.held(fid)
	if len(held) != 1 || held[0].Flock || held[0].Type != syscall.F_WRLCK || held[0].Start != 10 || held[0].End != 29 ||
		held[0].Pid != uint32(os.Getpid()) {
		t.Fatalf("backend holds %+v, want one write lock [10,29] of pid %d", held, os.Getpid())
	}
	owner1 := held[0].owner

	if _, err := ofdLock(fd2, unix.F_OFD_SETLK, unix.F_WRLCK, 25, 10); err != unix.EAGAIN {
		t.Errorf("conflicting F_OFD_SETLK on fd2: %v, want EAGAIN", err)
	}
	if _, err := ofdLock(fd2, unix.F_OFD_SETLK, unix.F_RDLCK, 0, 5); err != nil {
		t.Errorf("F_OFD_SETLK read [0,5) on fd2 (no overlap): %v", err)
	}
	got, err := ofdLock(fd2, unix.F_OFD_GETLK, unix.F_WRLCK, 0, 0)
	if err != nil || got.Type != unix.F_WRLCK || got.Start != 10 || got.Len != 20 {
		t.Errorf("F_OFD_GETLK on fd2: %+v, %v; want the write lock [10,30)", got, err)
	}
	got, err = ofdLock(fd1, unix.F_OFD_GETLK, unix.F_WRLCK, 10, 20)
	if err != nil || got.Type != unix.F_UNLCK {
		t.Errorf("F_OFD_GETLK on fd1 over its own lock: %+v, %v; want F_UNLCK", got, err)
	}
	// A lock to end of file is End = MaxUint64 in the backend and Len 0
	// back in the kernel.
	if _, err := ofdLock(fd1, unix.F_OFD_SETLK, unix.F_RDLCK, 100, 0); err != nil {
		t.Fatalf("F_OFD_SETLK read [100,EOF) on fd1: %v", err)
	}
	if !slices.ContainsFunc(fake.held(fid), func(h heldLock) bool { return h.Start == 100 && h.End == math.MaxUint64 }) {
		t.Errorf("backend holds %+v, want a lock [100, MaxUint64]", fake.held(fid))
	}
	got, err = ofdLock(fd2, unix.F_OFD_GETLK, unix.F_WRLCK, 200, 1)
	if err != nil || got.Type != unix.F_RDLCK || got.Start != 100 || got.Len != 0 {
		t.Errorf("F_OFD_GETLK at 200 on fd2: %+v, %v; want the read lock [100,EOF)", got, err)
	}
	// Unlocking part of a range goes to the backend too.
	if _, err := ofdLock(fd1, unix.F_OFD_SETLK, unix.F_UNLCK, 100, 0); err != nil {
		t.Fatalf("F_OFD_SETLK unlock on fd1: %v", err)
	}

	// Closing the holder releases its locks (RELEASE, after close returns).
	f1.Close()
	eventually(t, "ReleaseLocks for fd1's open file", func() bool {
		return slices.Contains(fake.released(), releaseCall{fid, owner1, true})
	})
	if _, err := ofdLock(fd2, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Errorf("F_OFD_SETLK write on fd2 after fd1 closed: %v", err)
	}
	if held := fake.held(fid); len(held) != 1 || held[0].owner == owner1 || held[0].Start != 0 || held[0].End != math.MaxUint64 {
		t.Errorf("backend holds %+v, want fd2's whole-file lock only", held)
	}
}

func TestLocksForwardedPOSIXReleasedByAnyClose(t *testing.T) {
	fake, _, path, fid := lockFile(t)
	fd1, _ := openRW(t, path)
	other, otherFile := openRW(t, path)

	// A process's record lock, and an OFD view of it from another open
	// file (a different owner).
	if _, err := ofdLock(fd1, unix.F_SETLK, unix.F_WRLCK, 0, 10); err != nil {
		t.Fatalf("F_SETLK on fd1: %v", err)
	}
	held := fake.held(fid)
	if len(held) != 1 || held[0].Flock || held[0].End != 9 {
		t.Fatalf("backend holds %+v, want one record lock [0,9]", held)
	}
	owner := held[0].owner
	if got, err := ofdLock(other, unix.F_OFD_GETLK, unix.F_RDLCK, 0, 0); err != nil || got.Type != unix.F_WRLCK {
		t.Errorf("F_OFD_GETLK from another open file: %+v, %v; want the record lock", got, err)
	}
	if got, err := ofdLock(other, unix.F_GETLK, unix.F_WRLCK, 0, 0); err != nil || got.Type != unix.F_UNLCK {
		t.Errorf("F_GETLK by the holding process: %+v, %v; want F_UNLCK (its own lock)", got, err)
	}
	// POSIX: closing any descriptor of the file drops the process's locks
	// (FLUSH, before close returns).
	_, f3 := openRW(t, path)
	if err := f3.Close(); err != nil {
		t.Fatal(err)
	}
	if held := fake.held(fid); len(held) != 0 {
		t.Errorf("backend holds %+v after the process closed another descriptor, want none", held)
	}
	if !slices.Contains(fake.released(), releaseCall{fid, owner, false}) {
		t.Errorf("releases %+v, want the process's POSIX locks released", fake.released())
	}
	if got, err := ofdLock(other, unix.F_OFD_GETLK, unix.F_WRLCK, 0, 0); err != nil || got.Type != unix.F_UNLCK {
		t.Errorf("F_OFD_GETLK after the close: %+v, %v; want F_UNLCK", got, err)
	}
	// A file that took no lock costs no release at close.
	n := len(fake.released())
	otherFile.Close()
	p2 := filepath.Join(filepath.Dir(path), "g")
	if err := os.WriteFile(p2, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let RELEASE of other arrive
	if got := fake.released(); len(got) != n {
		t.Errorf("releases %+v after closing files that held no lock, want %d", got, n)
	}
}

func TestLocksForwardedFlock(t *testing.T) {
	fake, _, path, fid := lockFile(t)
	fd1, f1 := openRW(t, path)
	fd2, _ := openRW(t, path)

	if err := syscall.Flock(fd1, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("flock LOCK_EX on fd1: %v", err)
	}
	held := fake.held(fid)
	if len(held) != 1 || !held[0].Flock || held[0].Type != syscall.F_WRLCK {
		t.Fatalf("backend holds %+v, want one exclusive flock", held)
	}
	owner1 := held[0].owner
	if err := syscall.Flock(fd2, syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Errorf("flock LOCK_EX on fd2: %v, want EWOULDBLOCK", err)
	}
	if err := syscall.Flock(fd2, syscall.LOCK_SH|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Errorf("flock LOCK_SH on fd2: %v, want EWOULDBLOCK", err)
	}
	// flock and record locks are separate kinds.
	if _, err := ofdLock(fd2, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Errorf("F_OFD_SETLK while another open file holds a flock: %v", err)
	}
	// Explicit unlock and relock.
	if err := syscall.Flock(fd1, syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(fd2, syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		t.Errorf("flock LOCK_SH on fd2 after LOCK_UN on fd1: %v", err)
	}
	if err := syscall.Flock(fd1, syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		t.Errorf("second shared flock on fd1: %v", err)
	}
	if err := syscall.Flock(fd2, syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(fd1, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("upgrade to LOCK_EX on fd1: %v", err)
	}
	// Closing fd1 releases its flock (RELEASE with FUSE_RELEASE_FLOCK_UNLOCK).
	f1.Close()
	eventually(t, "ReleaseLocks for fd1's flock", func() bool {
		return slices.Contains(fake.released(), releaseCall{fid, owner1, true})
	})
	if err := syscall.Flock(fd2, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Errorf("flock LOCK_EX on fd2 after fd1 closed: %v", err)
	}
}

// blockedLock runs lock in a goroutine and returns its result channel once
// the backend has the request waiting.
func blockedLock(t *testing.T, fake *fakeLocker, lock func() error) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- lock() }()
	eventually(t, "the lock request to wait in the backend", func() bool { return fake.waiters() == 1 })
	select {
	case err := <-done:
		t.Fatalf("the blocking lock returned while the lock was held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	return done
}

func waitResult(t *testing.T, what string, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

func TestLocksForwardedWait(t *testing.T) {
	t.Run("ofd", func(t *testing.T) {
		fake, _, path, fid := lockFile(t)
		fd1, f1 := openRW(t, path)
		fd2, _ := openRW(t, path)
		if _, err := ofdLock(fd1, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		done := blockedLock(t, fake, func() error {
			_, err := ofdLock(fd2, unix.F_OFD_SETLKW, unix.F_WRLCK, 0, 100)
			return err
		})
		f1.Close()
		if err := waitResult(t, "F_OFD_SETLKW", done); err != nil {
			t.Fatalf("F_OFD_SETLKW after the holder closed: %v", err)
		}
		if held := fake.held(fid); len(held) != 1 || held[0].End != 99 {
			t.Errorf("backend holds %+v, want fd2's lock [0,99]", held)
		}
	})
	t.Run("flock", func(t *testing.T) {
		fake, _, path, fid := lockFile(t)
		fd1, f1 := openRW(t, path)
		fd2, _ := openRW(t, path)
		if err := syscall.Flock(fd1, syscall.LOCK_SH); err != nil {
			t.Fatal(err)
		}
		done := blockedLock(t, fake, func() error { return syscall.Flock(fd2, syscall.LOCK_EX) })
		f1.Close()
		if err := waitResult(t, "flock LOCK_EX", done); err != nil {
			t.Fatalf("flock LOCK_EX after the holder closed: %v", err)
		}
		if held := fake.held(fid); len(held) != 1 || !held[0].Flock || held[0].Type != syscall.F_WRLCK {
			t.Errorf("backend holds %+v, want fd2's exclusive flock", held)
		}
	})
}

// TestLockWaitInterrupted: a signal to a thread blocked in F_OFD_SETLKW
// makes the kernel send INTERRUPT, which must end the backend's wait with
// nothing granted. The kernel turns the EINTR into ERESTARTSYS (lock waits
// are restartable) and Go's signal handlers are SA_RESTART, so fcntl asks
// again and gets the lock once the holder closes.
func TestLockWaitInterrupted(t *testing.T) {
	fake, _, path, fid := lockFile(t)
	fd1, f1 := openRW(t, path)
	fd2, _ := openRW(t, path)
	if _, err := ofdLock(fd1, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	tids := make(chan int, 1)
	done := blockedLock(t, fake, func() error {
		runtime.LockOSThread() // the thread is dropped with the goroutine
		tids <- unix.Gettid()
		_, err := ofdLock(fd2, unix.F_OFD_SETLKW, unix.F_WRLCK, 0, 0)
		return err
	})
	tid := <-tids
	// SIGURG is the Go runtime's own preemption signal: harmless to it,
	// but it interrupts the system call.
	if err := unix.Tgkill(os.Getpid(), tid, unix.SIGURG); err != nil {
		t.Fatalf("tgkill: %v", err)
	}
	eventually(t, "the backend's wait to be interrupted", func() bool { return fake.interrupted() >= 1 })
	held := fake.held(fid)
	if len(held) != 1 || held[0].Start != 0 || held[0].End != math.MaxUint64 {
		t.Errorf("backend holds %+v after the interrupt, want fd1's lock only", held)
	}
	select {
	case err := <-done:
		// A kernel that reports EINTR instead of restarting.
		if err != unix.EINTR {
			t.Fatalf("interrupted F_OFD_SETLKW: %v, want EINTR or a restart", err)
		}
		return
	case <-time.After(50 * time.Millisecond):
	}
	eventually(t, "the restarted request to wait again", func() bool { return fake.waiters() == 1 })
	f1.Close()
	if err := waitResult(t, "the restarted F_OFD_SETLKW", done); err != nil {
		t.Fatalf("restarted F_OFD_SETLKW after the holder closed: %v", err)
	}
}

func TestLockErrors(t *testing.T) {
	fake, _, path, _ := lockFile(t)
	fd, _ := openRW(t, path)
	fake.fail(fmt.Errorf("lock service: %w", syscall.EDEADLK))
	if _, err := ofdLock(fd, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != unix.EDEADLK {
		t.Errorf("F_OFD_SETLK with the backend answering EDEADLK: %v", err)
	}
	fake.fail(errors.New("lock service unreachable"))
	if _, err := ofdLock(fd, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != unix.EIO {
		t.Errorf("F_OFD_SETLK with the backend failing: %v, want EIO", err)
	}
	if _, err := ofdLock(fd, unix.F_OFD_GETLK, unix.F_WRLCK, 0, 0); err != unix.EIO {
		t.Errorf("F_OFD_GETLK with the backend failing: %v, want EIO", err)
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EIO {
		t.Errorf("flock with the backend failing: %v, want EIO", err)
	}
	fake.fail(nil)
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Errorf("flock once the backend recovered: %v", err)
	}
}

// TestLocksUnmountReleases: locks still recorded when the server stops
// (the connection was aborted, so no RELEASE came) are released.
func TestLocksUnmountReleases(t *testing.T) {
	fake, srv, path, fid := lockFile(t)
	fd, _ := openRW(t, path)
	if _, err := ofdLock(fd, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	owner := fake.held(fid)[0].owner
	srv.fsys.lockFS.stop() // what Server.done does after the server stopped
	if held := fake.held(fid); len(held) != 0 {
		t.Errorf("backend holds %+v after stop, want none", held)
	}
	if !slices.Contains(fake.released(), releaseCall{fid, owner, true}) {
		t.Errorf("releases %+v, want fd's owner released", fake.released())
	}
}

// TestLocksKernelLocalWithoutLocker: without a Locker the kernel keeps the
// locks, exactly as before Locker existed.
func TestLocksKernelLocalWithoutLocker(t *testing.T) {
	srv, dir := mount(t, newMemBackend(), Options{})
	if srv.fsys.locker != nil || srv.fsys.lockFS != nil {
		t.Fatal("a backend without Locker got lock forwarding")
	}
	path := filepath.Join(dir, "f")
	fd1, f1 := openRW(t, path)
	fd2, _ := openRW(t, path)
	if _, err := ofdLock(fd1, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 10); err != nil {
		t.Fatalf("F_OFD_SETLK: %v", err)
	}
	if _, err := ofdLock(fd2, unix.F_OFD_SETLK, unix.F_WRLCK, 5, 1); err != unix.EAGAIN {
		t.Errorf("conflicting F_OFD_SETLK: %v, want EAGAIN", err)
	}
	if got, err := ofdLock(fd2, unix.F_OFD_GETLK, unix.F_WRLCK, 0, 0); err != nil || got.Type != unix.F_WRLCK || got.Len != 10 {
		t.Errorf("F_OFD_GETLK: %+v, %v", got, err)
	}
	if err := syscall.Flock(fd1, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("flock: %v", err)
	}
	if err := syscall.Flock(fd2, syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Errorf("conflicting flock: %v, want EWOULDBLOCK", err)
	}
	f1.Close()
	if _, err := ofdLock(fd2, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Errorf("F_OFD_SETLK after the holder closed: %v", err)
	}
	if err := syscall.Flock(fd2, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Errorf("flock after the holder closed: %v", err)
	}
}

// TestPosixLocker runs go-fuse's POSIX suite with locks forwarded.
func TestPosixLocker(t *testing.T) {
	runPosix(t, func(t *testing.T) Backend { return newFakeLocker(newMemBackend()) })
}
