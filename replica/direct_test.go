package replica

import (
	"bytes"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/brickvol/brick/proto/brickpb"
)

// Big aligned writes bypass the page cache (none of their pages is cached
// afterwards, and a page cached before is dropped), from an aligned buffer
// or through the copy; small, unaligned or disabled ones go through it;
// every byte reads back, also where the two kinds overlap.
func TestDirectWrites(t *testing.T) {
	const min = 64 << 10
	r := openTest(t, filepath.Join(t.TempDir(), "vol"), ReplicaOptions{WritebackWindow: -1, DirectWriteMin: min})
	t.Cleanup(func() { r.Close() })
	must(t, r, createOp(rootFID, "f", 2, 0o644))
	if _, err := r.Sync(); err != nil { // the create's syncfs
		t.Fatal(err)
	}
	want := []byte{}
	write := func(off int64, data []byte) {
		t.Helper()
		a := must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 2, Offset: off, Data: data})
		if end := off + int64(len(data)); end > int64(len(want)) {
			want = append(want, make([]byte, end-int64(len(want)))...)
		}
		copy(want[off:], data)
		if a.Size != int64(len(want)) {
			t.Fatalf("size %d after a write to [%d, %d), want %d", a.Size, off, off+int64(len(data)), len(want))
		}
	}
	fill := func(data []byte, seed byte) []byte {
		for i := range data {
			data[i] = seed + byte(i/4096) + byte(i)
		}
		return data
	}
	pages := func(n int) int64 { return int64(n) * directAlign }

	// A small write is cached; a big aligned write over it drops it and
	// caches nothing.
	write(100, []byte("through the page cache"))
	if n := resident(t, r, 2, 0, pages(1)); n != 1 {
		t.Fatalf("a small write left %d pages cached, want 1", n)
	}
	raw := make([]byte, 4*min+directAlign)
	skip := int((directAlign - uintptr(unsafe.Pointer(&raw[0]))%directAlign) % directAlign)
	aligned := fill(raw[skip:skip+4*min], 1)
	write(0, aligned)
	if n := resident(t, r, 2, 0, pages(64)); n != 0 {
		t.Errorf("%d pages of a direct write (over a cached page) are cached, want 0", n)
	}

	// Unaligned memory, aligned offset and length: copied, then direct,
	// extending the file.
	unaligned := fill(make([]byte, 2*min+1)[1:], 2)
	write(pages(64), unaligned)
	if n := resident(t, r, 2, pages(64), pages(32)); n != 0 {
		t.Errorf("%d pages of a direct write from unaligned memory are cached, want 0", n)
	}

	// Through the page cache: too small, an unaligned offset, an
	// unaligned length.
	write(pages(100), fill(make([]byte, min-directAlign), 3))
	write(pages(120)+512, fill(make([]byte, 2*min), 4))
	write(pages(160), fill(make([]byte, 2*min+512), 5))
	for _, c := range []struct {
		what    string
		off, n  int64
		atLeast int
	}{
		{"small", pages(100), pages(15), 15},
		{"unaligned offset", pages(121), pages(30), 30},
		{"unaligned length", pages(160), pages(32), 32},
	} {
		if n := resident(t, r, 2, c.off, c.n); n < c.atLeast {
			t.Errorf("%s write: %d of its pages cached, want %d", c.what, n, c.atLeast)
		}
	}

	got, errno := readAll(t, r, 2)
	if errno != 0 || !bytes.Equal([]byte(got), want) {
		t.Fatalf("read back %d bytes (errno %v), want %d; equal: %v", len(got), errno, len(want), bytes.Equal([]byte(got), want))
	}
	// The barrier after direct writes flushes the file alone, as after
	// buffered ones.
	files := r.fileSyncs
	if _, err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	if r.fileSyncs != files+1 {
		t.Errorf("the barrier after writes to one file ran syncfs, want an fsync of the file")
	}

	// A process crash after a direct write the barrier has not covered:
	// the recovery redoes it from the op log (from the log's unaligned
	// buffer, so through the copy) and the file reads back whole.
	write(pages(32), fill(make([]byte, 2*min), 6))
	dir := r.Dir()
	r.crash()
	r = openTest(t, dir, ReplicaOptions{WritebackWindow: -1, DirectWriteMin: min})
	got, errno = readAll(t, r, 2)
	if errno != 0 || !bytes.Equal([]byte(got), want) {
		t.Fatalf("after a crash and recovery: %d bytes (errno %v), want %d; equal: %v", len(got), errno, len(want), bytes.Equal([]byte(got), want))
	}
}

// DirectWriteMin < 0 keeps every write in the page cache.
func TestDirectWritesOff(t *testing.T) {
	r := openTest(t, filepath.Join(t.TempDir(), "vol"), ReplicaOptions{WritebackWindow: -1, DirectWriteMin: -1})
	t.Cleanup(func() { r.Close() })
	must(t, r, createOp(rootFID, "f", 2, 0o644))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 2, Data: make([]byte, 1<<20)})
	if n := resident(t, r, 2, 0, 1<<20); n < 256*9/10 {
		t.Errorf("only %d of 256 pages cached with direct writes off", n)
	}
}
