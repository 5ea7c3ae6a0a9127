package fuse

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func (m *memBackend) getattrsOf(fid uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.getattrs[fid]
}

func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// On a volume this host alone writes, a directory's attributes after this
// mount's own creates, mkdirs, unlinks and rmdirs are answered without the
// backend and say what those did (times forward, link count); a change not
// followed (a rename) sends the next stat to the backend, whose answer
// they then match.
func TestDirAttrsAnsweredHere(t *testing.T) {
	requireFUSE(t)
	b := &submitBackend{memBackend: newMemBackend()}
	// Every backend change a millisecond after the one before, so that
	// each create moves the directory's times.
	var tick atomic.Int64
	start := time.Now()
	b.now = func() time.Time { return start.Add(time.Duration(tick.Add(1)) * time.Millisecond) }
	_, dir := mount(t, b, Options{})
	d := filepath.Join(dir, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	st := statT(t, d)
	fid, before := st.Ino, b.getattrsOf(st.Ino)
	mtime := st.Mtim.Nano()
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(d, "f"+string(rune('a'+i))), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		st := statT(t, d)
		if st.Mtim.Nano() <= mtime || st.Ctim.Nano() < st.Mtim.Nano() {
			t.Fatalf("after create %d: mtime %d ctime %d, want mtime after %d and ctime no earlier", i, st.Mtim.Nano(), st.Ctim.Nano(), mtime)
		}
		mtime = st.Mtim.Nano()
	}
	if err := os.Mkdir(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if st := statT(t, d); st.Nlink != 3 {
		t.Errorf("nlink %d after a mkdir inside, want 3", st.Nlink)
	}
	for i := range 20 {
		p := filepath.Join(d, "f"+string(rune('a'+i)))
		f := statT(t, p).Ino
		b.memBackend.mu.Lock()
		ops := b.opsOn[f]
		b.memBackend.mu.Unlock()
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		// The unlink forgets the file; the kernel's push of its ctime
		// after it must not reach the backend as another op.
		b.memBackend.mu.Lock()
		ops = b.opsOn[f] - ops
		b.memBackend.mu.Unlock()
		if ops != 1 {
			t.Errorf("unlink of %s: %d ops named the file, want the unlink alone", p, ops)
		}
	}
	if err := os.Remove(filepath.Join(d, "sub")); err != nil {
		t.Fatal(err)
	}
	st = statT(t, d)
	if st.Nlink != 2 || st.Mtim.Nano() < mtime {
		t.Errorf("after the removals: nlink %d mtime %d, want 2 and no earlier than %d", st.Nlink, st.Mtim.Nano(), mtime)
	}
	if n := b.getattrsOf(fid) - before; n > 2 {
		t.Errorf("%d GETATTRs of the directory reached the backend across 42 changes in it, want (nearly) none", n)
	}

	// A rename is not followed: the next stat asks and matches the backend.
	if err := os.WriteFile(filepath.Join(d, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(d, "x"), filepath.Join(dir, "x")); err != nil {
		t.Fatal(err)
	}
	asked := b.getattrsOf(fid)
	st = statT(t, d)
	if b.getattrsOf(fid) == asked {
		t.Errorf("stat after a rename out of the directory did not reach the backend")
	}
	b.memBackend.mu.Lock()
	want := clone(b.files[fid].attr)
	b.memBackend.mu.Unlock()
	if st.Nlink != uint64(want.Nlink) || st.Mode != want.Mode || st.Mtim.Nano() != want.MtimeNs {
		t.Errorf("stat after the rename: nlink %d mode %o mtime %d, backend has %d %o %d", st.Nlink, st.Mode, st.Mtim.Nano(),
			want.Nlink, want.Mode, want.MtimeNs)
	}
	// A chmod of the directory shows at once.
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if st := statT(t, d); st.Mode&0o777 != 0o700 {
		t.Errorf("mode %o after chmod 700", st.Mode&0o777)
	}
}

// Where other hosts may write (no writeback cache), every GETATTR of a
// directory asks the backend.
func TestDirAttrsAskedWhenShared(t *testing.T) {
	requireFUSE(t)
	b := &submitBackend{memBackend: newMemBackend()}
	_, dir := mount(t, b, Options{NoWritebackCache: true})
	d := filepath.Join(dir, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	fid := statT(t, d).Ino
	before := b.getattrsOf(fid)
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(d, "f"+string(rune('a'+i))), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		statT(t, d)
	}
	if n := b.getattrsOf(fid) - before; n < 5 {
		t.Errorf("only %d of 5 stats after creates reached the backend on a shared mount", n)
	}
}

// A directory this mount made starts with the attributes mkdir answered:
// neither the kernel's GETATTR before each create in it nor a stat reaches
// the backend, and the stat says what the creates did.
func TestNewDirAttrsFromMkdir(t *testing.T) {
	requireFUSE(t)
	b := &submitBackend{memBackend: newMemBackend()}
	_, dir := mount(t, b, Options{})
	d := filepath.Join(dir, "new")
	if err := os.Mkdir(d, 0o750); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(d, "f"+string(rune('a'+i))), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	st := statT(t, d)
	if n := b.getattrsOf(st.Ino); n != 0 {
		t.Errorf("%d GETATTRs of a directory made here reached the backend, want none", n)
	}
	b.memBackend.mu.Lock()
	want := clone(b.files[st.Ino].attr)
	b.memBackend.mu.Unlock()
	if st.Mode != want.Mode || st.Nlink != uint64(want.Nlink) || st.Uid != want.Uid {
		t.Errorf("stat: mode %o nlink %d uid %d; backend has %o %d %d", st.Mode, st.Nlink, st.Uid, want.Mode, want.Nlink, want.Uid)
	}
}
