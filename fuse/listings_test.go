package fuse

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

func dirEnt(name string, fid uint64, mode uint32) *brickpb.DirEntry {
	return &brickpb.DirEntry{Name: name, Fid: fid, Mode: mode & syscall.S_IFMT,
		Attr: &brickpb.Attr{Fid: fid, Mode: mode, Nlink: 1}}
}

func TestListingsKeepLookupTouch(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newListings(time.Second, 100)
	l.now = func() time.Time { return now }
	// Directory 1 holds a (fid 10), b (fid 11) and sub (fid 12); sub holds
	// c and a second name of a.
	s := l.begin()
	l.keep(1, s, []*brickpb.DirEntry{dirEnt("a", 10, syscall.S_IFREG|0o644), dirEnt("b", 11, syscall.S_IFREG|0o600),
		dirEnt("sub", 12, syscall.S_IFDIR|0o755)})
	s = l.begin()
	l.keep(12, s, []*brickpb.DirEntry{dirEnt("c", 13, syscall.S_IFREG|0o644), dirEnt("a2", 10, syscall.S_IFREG|0o644)})
	if a := l.lookup(1, "b"); a == nil || a.Fid != 11 {
		t.Fatalf("lookup b: %v", a)
	}
	if a := l.lookup(1, "missing"); a != nil {
		t.Fatalf("a name the listing lacks is not answered: %v", a)
	}
	// A write to a drops both of its names, nothing else.
	l.touch(&brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 10})
	if l.lookup(1, "a") != nil || l.lookup(12, "a2") != nil || l.lookup(1, "b") == nil || l.lookup(12, "c") == nil {
		t.Fatal("a write dropped the wrong entries")
	}
	// A create in sub changes sub (its entry in 1), not its other names.
	l.touch(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 12, Name: "new", Fid: 14})
	if l.lookup(1, "sub") != nil || l.lookup(12, "c") == nil {
		t.Fatal("a create in sub should drop sub's own entry only")
	}
	// An unlink by name drops what stood there.
	l.touch(&brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: 12, Name: "c"})
	if l.lookup(12, "c") != nil {
		t.Fatal("unlinked name still answered")
	}
	// A rename drops what stood at both names.
	l.touch(&brickpb.Op{Type: brickpb.OpType_OP_RENAME, Parent: 7, Name: "x", NewParent: 1, NewName: "b"})
	if l.lookup(1, "b") != nil {
		t.Fatal("name replaced by a rename still answered")
	}
	// A change between begin and keep: not kept.
	s = l.begin()
	l.touch(&brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: 99})
	l.keep(20, s, []*brickpb.DirEntry{dirEnt("z", 30, syscall.S_IFREG)})
	if l.lookup(20, "z") != nil {
		t.Fatal("a listing that raced a change was kept")
	}
	// Kept no longer than the time to live.
	s = l.begin()
	l.keep(21, s, []*brickpb.DirEntry{dirEnt("y", 31, syscall.S_IFREG)})
	now = now.Add(time.Second)
	if l.lookup(21, "y") != nil {
		t.Fatal("an expired listing answered")
	}
	// Bounded: a listing longer than a quarter of the bound is not kept.
	var big []*brickpb.DirEntry
	for i := range 30 {
		big = append(big, dirEnt(string(rune('A'+i)), uint64(100+i), syscall.S_IFREG))
	}
	s = l.begin()
	l.keep(22, s, big)
	if l.lookup(22, "A") != nil {
		t.Fatal("an oversized listing was kept")
	}
	if l.held < 0 || l.held > l.max {
		t.Fatalf("held %d", l.held)
	}
}

// After a listing, the kernel's lookup of every entry (ls -l, find, du)
// is answered from it; a change through the mount is seen at once.
func TestListingAnswersLookups(t *testing.T) {
	b, sub := mountWithFiles(t, "a", "b", "c", "e", "f")
	// Drop the kernel's dentries, so that what follows must look up.
	if err := os.Rename(sub, sub+"2"); err != nil {
		t.Fatal(err)
	}
	sub += "2"
	b.mu.Lock()
	before := b.lookups
	b.mu.Unlock()
	ents, err := os.ReadDir(sub)
	if err != nil || len(ents) != 5 {
		t.Fatalf("readdir: %v %v", ents, err)
	}
	for _, e := range ents {
		if _, err := os.Lstat(filepath.Join(sub, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Lock()
	asked := b.lookups - before
	b.mu.Unlock()
	if asked != 0 {
		t.Errorf("%d lookups reached the backend after a listing of 5 names, want 0", asked)
	}
	if err := os.Chmod(filepath.Join(sub, "c"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(sub, "e"), filepath.Join(sub, "e2")); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(sub, "c"), &st); err != nil || st.Mode&0o777 != 0o600 {
		t.Errorf("after chmod: mode %o %v", st.Mode, err)
	}
	if err := syscall.Lstat(filepath.Join(sub, "e"), &st); err != nil || st.Nlink != 2 {
		t.Errorf("after link: nlink %d %v", st.Nlink, err)
	}
}

// A directory walked name by name (stat after a dropped cache) is listed
// once at its second lookup of an existing name the listings could not
// answer, and the rest are answered from that listing; lookups of names
// that do not exist (before each create) never list it.
func TestLookupsListAhead(t *testing.T) {
	names := []string{"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"}
	b, sub := mountWithFiles(t, names...)
	// Drop the kernel's dentries (unused ones, on the whole machine), as
	// the workload's stat phase does.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Skipf("SKIPPED: cannot drop the kernel's dentries: %v", err)
	}
	b.mu.Lock()
	before := b.lookups
	b.mu.Unlock()
	for _, n := range names {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(sub, n), &st); err != nil || st.Size != int64(len(n)) {
			t.Fatalf("%s: size %d, %v", n, st.Size, err)
		}
	}
	b.mu.Lock()
	asked := b.lookups - before
	b.mu.Unlock()
	// d itself, f0 and f1 (whose lookup lists d) at most.
	if asked > 3 {
		t.Errorf("%d lookups reached the backend for 10 names of one directory, want at most 3", asked)
	}
}

func TestCreatesDoNotListAhead(t *testing.T) {
	requireFUSE(t)
	b := newMemBackend()
	_, dir := mount(t, b, Options{})
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lists != 0 {
		t.Errorf("20 creates listed %d entries; the lookups before creates must not list", b.lists)
	}
}

// mountWithFiles mounts a fresh memBackend and makes directory d in it
// holding files of the given names (each containing its name).
func mountWithFiles(t *testing.T, names ...string) (*memBackend, string) {
	t.Helper()
	requireFUSE(t)
	b := newMemBackend()
	_, dir := mount(t, b, Options{})
	sub := filepath.Join(dir, "d")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(sub, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return b, sub
}

// A kept listing answers another listing of its directory only while it is
// the directory's whole listing: not after a name was added or removed or
// an entry dropped, nor once expired; a removed directory's goes at once.
func TestListingsWhole(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newListings(time.Second, 100)
	l.now = func() time.Time { return now }
	keep := func(dir uint64, entries ...*brickpb.DirEntry) {
		t.Helper()
		l.keep(dir, l.begin(), entries)
	}
	whole := func(dir uint64) bool {
		_, ok := l.list(dir)
		return ok
	}
	keep(1, dirEnt("b", 11, syscall.S_IFREG|0o644), dirEnt("a", 10, syscall.S_IFDIR|0o755))
	got, ok := l.list(1)
	if !ok || len(got) != 2 || got[0].Name != "a" || got[0].Fid != 10 || got[0].Mode != syscall.S_IFDIR ||
		got[1].Name != "b" || got[1].Attr.GetMode() != syscall.S_IFREG|0o644 {
		t.Fatalf("list = %v, %v; want a (dir 10) and b (file 11), sorted", got, ok)
	}
	// A change of the directory's own attributes leaves its names alone.
	l.touch(&brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: 1})
	if !whole(1) {
		t.Error("a setattr of the directory itself made its listing partial")
	}
	for _, tc := range []struct {
		what string
		op   *brickpb.Op
	}{
		{"a create in it", &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: "c", Fid: 12}},
		{"an unlink in it", &brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: 1, Name: "b"}},
		{"a rename into it", &brickpb.Op{Type: brickpb.OpType_OP_RENAME, Parent: 5, Name: "x", NewParent: 1, NewName: "y"}},
		{"a write to an entry", &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 11}},
	} {
		keep(1, dirEnt("b", 11, syscall.S_IFREG|0o644), dirEnt("a", 10, syscall.S_IFDIR|0o755))
		l.touch(tc.op)
		if whole(1) {
			t.Errorf("after %s the listing still answered", tc.what)
		}
	}
	// A removed directory's listing goes, whether named by its fid or
	// found at the name removed.
	keep(10, dirEnt("x", 20, syscall.S_IFREG))
	l.touch(&brickpb.Op{Type: brickpb.OpType_OP_RMDIR, Parent: 7, Name: "gone", Fid: 10})
	if whole(10) || l.lookup(10, "x") != nil {
		t.Error("the listing of a removed directory survived")
	}
	keep(1, dirEnt("a", 10, syscall.S_IFDIR|0o755))
	keep(10, dirEnt("x", 20, syscall.S_IFREG))
	l.touch(&brickpb.Op{Type: brickpb.OpType_OP_RMDIR, Parent: 1, Name: "a"})
	if whole(10) {
		t.Error("the listing of a directory removed by name survived")
	}
	// An entry without attributes: never whole.
	keep(2, dirEnt("p", 30, syscall.S_IFREG), &brickpb.DirEntry{Name: "q", Fid: 31, Mode: syscall.S_IFREG})
	if whole(2) {
		t.Error("a listing missing an entry's attributes answered a listing")
	}
	// Expired.
	keep(3, dirEnt("r", 40, syscall.S_IFREG))
	now = now.Add(time.Second)
	if whole(3) {
		t.Error("an expired listing answered")
	}
}

// On the mount: opening a directory again right after listing it (rm -r
// does) asks the backend nothing, nor does the stat after either listing;
// a change in it sends the next listing to the backend, which shows it.
func TestListingAnsweredAgain(t *testing.T) {
	requireFUSE(t)
	b := &submitBackend{memBackend: newMemBackend()}
	_, dir := mount(t, b, Options{})
	d := filepath.Join(dir, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(d, fmt.Sprint("f", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	readdirs := func() int {
		b.memBackend.mu.Lock()
		defer b.memBackend.mu.Unlock()
		return b.readdirs
	}
	names := func() []string {
		t.Helper()
		f, err := os.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		ns, err := f.Readdirnames(-1)
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	fid := statT(t, d).Ino
	names()
	r0, g0 := readdirs(), b.getattrsOf(fid)
	if got := names(); len(got) != 3 {
		t.Fatalf("second listing: %v, want 3 names", got)
	}
	if r, g := readdirs()-r0, b.getattrsOf(fid)-g0; r != 0 || g != 0 {
		t.Errorf("listing again asked the backend %d listings and %d GETATTRs of the directory, want none", r, g)
	}
	if err := os.WriteFile(filepath.Join(d, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := names(); len(got) != 4 || readdirs() == r0 {
		t.Errorf("after a create: %v from %d backend listings, want 4 names from a new one", got, readdirs()-r0)
	}
}
