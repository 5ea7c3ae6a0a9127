package replica

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

// treeRead reads fid through t as of generation gen, whole (up to 1 MiB).
func treeRead(t *testing.T, tr *TreeReader, gen, fid uint64) (string, error) {
	t.Helper()
	buf := make([]byte, 1<<20)
	n, err := tr.ReadAt(gen, fid, buf, 0)
	return string(buf[:n]), err
}

// A TreeReader reads what the brick's Read reads, and nothing it should
// leave to the brick.
func TestTreeReaderReadsWhatTheBrickReads(t *testing.T) {
	r := newTest(t)
	must(t, r, createOp(1, "f", 2, 0o600))
	must(t, r, writeOp(2, 0, "hello, "))
	must(t, r, writeOp(2, 7, "world"))
	must(t, r, mkdirOp(1, "d", 3, 0o755))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_MKNOD, Parent: 1, Name: "fifo", Fid: 4, Mode: unix.S_IFIFO | 0o644})
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYMLINK, Parent: 1, Name: "ln", Fid: 5, Target: "f"})

	tr := NewTreeReader(r.Dir(), 4)
	defer tr.Close()
	want, _ := readAll(t, r, 2)
	if got, err := treeRead(t, tr, 1, 2); err != nil || got != want || got != "hello, world" {
		t.Fatalf("tree read %q, %v; the brick reads %q", got, err, want)
	}
	buf := make([]byte, 5)
	if n, err := tr.ReadAt(1, 2, buf, 7); err != nil || string(buf[:n]) != "world" {
		t.Fatalf("read at 7: %q, %v", buf[:n], err)
	}
	if n, err := tr.ReadAt(1, 2, buf, 100); err != nil || n != 0 {
		t.Fatalf("read past the end: %d, %v; want 0, nil", n, err)
	}
	if _, err := tr.ReadAt(1, 2, buf, -1); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("negative offset: %v, want EINVAL", err)
	}
	// A directory, a FIFO (opening it would block), a symlink and an
	// unknown ID are the brick's to answer.
	for _, fid := range []uint64{1, 3, 4, 5, 99} {
		if got, err := treeRead(t, tr, 1, fid); !errors.Is(err, ErrNotInTree) {
			t.Errorf("fid %d: %q, %v; want ErrNotInTree", fid, got, err)
		}
	}
	// A write after the descriptor was opened is seen through it.
	must(t, r, writeOp(2, 0, "HELLO"))
	if got, _ := treeRead(t, tr, 1, 2); got != "HELLO, world" {
		t.Fatalf("after a write: %q", got)
	}
	// A replica that does not exist is the brick's to answer too.
	none := NewTreeReader(filepath.Join(t.TempDir(), "missing"), 4)
	if _, err := treeRead(t, none, 1, 2); !errors.Is(err, ErrNotInTree) {
		t.Fatalf("missing replica: %v, want ErrNotInTree", err)
	}
}

// A newer generation drops every descriptor of the older one: the tree
// they were opened in may have been replaced (a full resync swaps a new
// one in), and reading through them would read the old one.
func TestTreeReaderGenerations(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "vol")
	r := openTest(t, dir, ReplicaOptions{})
	must(t, r, createOp(1, "f", 2, 0o600))
	must(t, r, writeOp(2, 0, "old tree"))
	tr := NewTreeReader(dir, 4)
	defer tr.Close()
	if got, err := treeRead(t, tr, 5, 2); err != nil || got != "old tree" {
		t.Fatalf("%q, %v", got, err)
	}
	if tr.Open() != 1 {
		t.Fatalf("%d descriptors open, want 1", tr.Open())
	}
	// Swap a different replica in at the same path, as a resync does.
	r.Close()
	other := openTest(t, filepath.Join(root, "staging"), ReplicaOptions{})
	must(t, other, createOp(1, "f", 2, 0o600))
	must(t, other, writeOp(2, 0, "new tree"))
	other.Close()
	if err := SwapReplica(dir, filepath.Join(root, "staging")); err != nil {
		t.Fatal(err)
	}
	// Same generation: the open descriptor still reads the old file (the
	// caller must not ask so, which is what generations are for).
	if got, _ := treeRead(t, tr, 5, 2); got != "old tree" {
		t.Fatalf("same generation: %q", got)
	}
	if got, err := treeRead(t, tr, 6, 2); err != nil || got != "new tree" {
		t.Fatalf("newer generation: %q, %v; want the new tree's", got, err)
	}
	if _, err := treeRead(t, tr, 5, 2); !errors.Is(err, ErrNotInTree) {
		t.Fatalf("older generation after a newer one: %v, want ErrNotInTree", err)
	}
}

// Forget closes a forgotten file's descriptor, so the brick's inode and
// its blocks go when the brick drops its last link; at most max
// descriptors stay open.
func TestTreeReaderForgetAndBound(t *testing.T) {
	r := newTest(t)
	for fid := uint64(2); fid < 12; fid++ {
		must(t, r, createOp(1, strings.Repeat("f", int(fid)), fid, 0o600))
		must(t, r, writeOp(fid, 0, "x"))
	}
	tr := NewTreeReader(r.Dir(), 4)
	defer tr.Close()
	var wg sync.WaitGroup
	for fid := uint64(2); fid < 12; fid++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if got, err := treeRead(t, tr, 1, fid); err != nil || got != "x" {
					t.Errorf("fid %d: %q, %v", fid, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := tr.Open(); n > 4 {
		t.Fatalf("%d descriptors open, bound 4", n)
	}
	if _, err := treeRead(t, tr, 1, 2); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(r.Dir(), "fids", "2"), &st); err != nil {
		t.Fatal(err)
	}
	before := fdsOn(&st)
	tr.Forget(2)
	// The reader's descriptor is closed (the brick may hold its own).
	if after := fdsOn(&st); after != before-1 {
		t.Fatalf("descriptors on the forgotten file: %d before Forget, %d after; want one fewer", before, after)
	}
}

// fdsOn counts this process's descriptors on st's inode.
func fdsOn(st *unix.Stat_t) int {
	n := 0
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, e := range fds {
		var fst unix.Stat_t
		if unix.Stat(filepath.Join("/proc/self/fd", e.Name()), &fst) == nil && fst.Ino == st.Ino && fst.Dev == st.Dev {
			n++
		}
	}
	return n
}
