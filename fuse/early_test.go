package fuse

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// submitBackend is a memBackend that also takes ops without answering
// them (Submitter); it applies them at once and remembers which came that
// way and how each would have failed.
type submitBackend struct {
	*memBackend
	mu        sync.Mutex
	submitted []*brickpb.Op
	failed    []syscall.Errno
}

func (s *submitBackend) Submit(ctx context.Context, op *brickpb.Op) (uint64, error) {
	res, err := s.memBackend.Do(ctx, op)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.submitted = append(s.submitted, op)
	if res.Errno != 0 {
		s.failed = append(s.failed, syscall.Errno(res.Errno))
	}
	return 0, nil
}

func (s *submitBackend) counts() (submitted, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.submitted), len(s.failed)
}

// The POSIX suite passes with setattrs answered early wherever they may be.
func TestPosixMemSubmitter(t *testing.T) {
	runPosix(t, func(t *testing.T) Backend { return &submitBackend{memBackend: newMemBackend()} })
}

// Mode, times and owners unchanged are answered without waiting, with what
// the backend then holds; a real change of owner, a set-ID file's chown, a
// truncate and a directory wait for the backend's answer.
func TestSetattrEarly(t *testing.T) {
	requireFUSE(t)
	b := &submitBackend{memBackend: newMemBackend()}
	_, dir := mount(t, b, Options{})
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(1_500_000_000, 123456789)
	steps := []struct {
		what  string
		do    func() error
		early bool
	}{
		{"chmod", func() error { return os.Chmod(p, 0o600) }, true},
		{"utimes", func() error { return os.Chtimes(p, mt, mt) }, true},
		{"chown to the same owner", func() error { return os.Chown(p, 0, 0) }, true},
		{"chown to another", func() error { return os.Chown(p, 1000, 1000) }, false},
		{"chmod setuid", func() error { return syscall.Chmod(p, 0o4755) }, true},
		{"chown of a setuid file", func() error { return os.Chown(p, 1000, 1000) }, false},
		{"truncate", func() error { return os.Truncate(p, 2) }, false},
		{"chmod of a directory", func() error { return os.Chmod(dir, 0o711) }, false},
	}
	for _, s := range steps {
		before, _ := b.counts()
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		after, failed := b.counts()
		if got := after > before; got != s.early {
			t.Errorf("%s: answered early %v, want %v", s.what, got, s.early)
		}
		if failed != 0 {
			t.Fatalf("%s: an early op failed in the backend", s.what)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		b.memBackend.mu.Lock()
		want := clone(b.memBackend.files[2].attr)
		b.memBackend.mu.Unlock()
		if st.Mode != want.Mode || st.Uid != want.Uid || st.Gid != want.Gid || st.Mtim.Nano() != want.MtimeNs {
			t.Errorf("%s: stat says mode %o %d:%d mtime %d, the backend %o %d:%d %d", s.what,
				st.Mode, st.Uid, st.Gid, st.Mtim.Nano(), want.Mode, want.Uid, want.Gid, want.MtimeNs)
		}
	}
}

// An early setattr of a file nothing has written since its create answers
// what a brick would (node.exact), so the kernel keeps the answer: the
// write(2) after SQLite's create and fchown of its journal sends no
// GETATTR, which would wait at a brick for every op before it. Once the
// file was written its answer is valid for no time again.
func TestSetattrEarlyOfNewFileKept(t *testing.T) {
	requireFUSE(t)
	b := &submitBackend{memBackend: newMemBackend()}
	_, dir := mount(t, b, Options{})
	f, err := os.OpenFile(filepath.Join(dir, "journal"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	getattrs := func() int {
		b.memBackend.mu.Lock()
		defer b.memBackend.mu.Unlock()
		return b.memBackend.getattrs[st.Ino]
	}
	before, _ := b.counts()
	if err := f.Chown(0, 0); err != nil {
		t.Fatal(err)
	}
	if after, _ := b.counts(); after == before {
		t.Fatal("fchown to the same owner was not answered early")
	}
	g := getattrs()
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if n := getattrs() - g; n != 0 {
		t.Errorf("the write and stat after an early fchown of a new file asked the backend for its attributes %d times, want 0", n)
	}
	if st.Size != 4096 || st.Uid != 0 || st.Mode != syscall.S_IFREG|0o644 {
		t.Errorf("stat says size %d uid %d mode %o, want 4096 0 %o", st.Size, st.Uid, st.Mode, syscall.S_IFREG|0o644)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Written now: a brick's block count is no longer what the node knows.
	if err := f.Chown(0, 0); err != nil {
		t.Fatal(err)
	}
	g = getattrs()
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if getattrs() == g {
		t.Error("a stat after the early fchown of a written file was answered from the kernel's cache, want a GETATTR")
	}
}

// Removing a file's only name is answered without waiting: when nothing
// holds it open the op forgets it too, else the close does. A file with a
// second name waits for the backend's answer; once that second name is
// its last, it goes early too.
func TestUnlinkEarly(t *testing.T) {
	requireFUSE(t)
	b := &submitBackend{memBackend: newMemBackend()}
	_, dir := mount(t, b, Options{})
	for _, n := range []string{"a", "b", "c"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(dir, "b"), filepath.Join(dir, "b2")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "c"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cst syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &cst); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		name  string
		early bool
	}{{"a", true}, {"b", false}, {"b2", true}, {"c", true}} {
		before, _ := b.counts()
		if err := os.Remove(filepath.Join(dir, s.name)); err != nil {
			t.Fatal(err)
		}
		after, failed := b.counts()
		if got := after > before; got != s.early {
			t.Errorf("unlink %s: answered early %v, want %v", s.name, got, s.early)
		}
		if failed != 0 {
			t.Fatalf("unlink %s: an early op failed in the backend: %v %v", s.name, b.failed, b.submitted)
		}
		if _, err := os.Lstat(filepath.Join(dir, s.name)); !os.IsNotExist(err) {
			t.Errorf("%s after unlink: %v", s.name, err)
		}
	}
	left := func() (fids []uint64) {
		b.memBackend.mu.Lock()
		defer b.memBackend.mu.Unlock()
		for fid, mf := range b.memBackend.files {
			if mf.attr.Mode&syscall.S_IFMT == syscall.S_IFREG && mf.attr.Nlink == 0 {
				fids = append(fids, fid)
			}
		}
		return fids
	}
	if l := left(); len(l) != 1 || l[0] != cst.Ino {
		t.Errorf("unlinked files the backend still keeps: %v, want only c (%d), still open", l, cst.Ino)
	}
	f.Close() // the kernel forgets c now; so must the backend
	for deadline := time.Now().Add(10 * time.Second); len(left()) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("c not forgotten after its close: %v", left())
		}
	}
}
