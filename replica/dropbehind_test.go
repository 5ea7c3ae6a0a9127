package replica

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

// resident counts the pages of the file of fid that are in the page cache
// within [off, off+n).
func resident(t *testing.T, r *Replica, fid uint64, off, n int64) int {
	t.Helper()
	f, err := os.Open(filepath.Join(r.Dir(), "fids", fidName(fid)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap fid %d: %v", fid, err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+4095)/4096)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		err := error(e)
		t.Fatalf("mincore fid %d: %v", fid, err)
	}
	c := 0
	for _, v := range vec {
		c += int(v & 1)
	}
	return c
}

// A long sequential write leaves the page cache behind it, two windows
// excepted; the same bytes written backwards stay cached; either way the
// data reads back whole. (Writes through the page cache: O_DIRECT, which
// never fills it, is off.)
func TestDropBehindSequentialWrites(t *testing.T) {
	const win, total = 1 << 20, 12 << 20
	r := openTest(t, filepath.Join(t.TempDir(), "vol"), ReplicaOptions{WritebackWindow: win, DirectWriteMin: -1})
	t.Cleanup(func() { r.Close() })
	must(t, r, createOp(rootFID, "seq", 2, 0o644))
	must(t, r, createOp(rootFID, "back", 3, 0o644))
	chunk := make([]byte, 256<<10)
	for off := int64(0); off < total; off += int64(len(chunk)) {
		for i := range chunk {
			chunk[i] = byte(off>>18) + byte(i)
		}
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 2, Offset: off, Data: chunk})
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 3, Offset: total - off - int64(len(chunk)), Data: chunk})
	}
	// Windows 0..8 are written back and dropped; 9 and 10 are in writeback,
	// 11 is the run's open end.
	if n := resident(t, r, 2, 0, 9*win); n > 9*win/4096/10 {
		t.Errorf("%d pages of the first 9 MiB of a sequential write still cached, want (nearly) none", n)
	}
	if n := resident(t, r, 2, 11*win, win); n == 0 {
		t.Errorf("the open end of the run was dropped too")
	}
	if n := resident(t, r, 3, 0, total); n < total/4096*9/10 {
		t.Errorf("only %d of %d pages of a backwards write cached: it was dropped", n, total/4096)
	}
	got, err := os.ReadFile(filepath.Join(r.Dir(), "fids", fidName(2)))
	if err != nil || int64(len(got)) != total {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	for off := int64(0); off < total; off += int64(len(chunk)) {
		if got[off+5] != byte(off>>18)+5 {
			t.Fatalf("byte %d reads %d after the drop, want %d", off+5, got[off+5], byte(off>>18)+5)
		}
	}
}

// WritebackWindow < 0 leaves the page cache alone.
func TestDropBehindOff(t *testing.T) {
	r := openTest(t, filepath.Join(t.TempDir(), "vol"), ReplicaOptions{WritebackWindow: -1, DirectWriteMin: -1})
	t.Cleanup(func() { r.Close() })
	must(t, r, createOp(rootFID, "seq", 2, 0o644))
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < 8<<20; off += 1 << 20 {
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 2, Offset: off, Data: chunk})
	}
	if n := resident(t, r, 2, 0, 8<<20); n < 2048*9/10 {
		t.Errorf("only %d of 2048 pages cached with drop-behind off", n)
	}
}

// Random writes (each one a new run) cost the apply loop no allocation,
// and at most maxRuns files are followed.
func TestDropBehindRandomWritesAllocateNothing(t *testing.T) {
	r := &Replica{opts: ReplicaOptions{WritebackWindow: 1 << 20}, runs: map[uint64]*writeRun{}}
	for fid := uint64(2); fid < 2+2*maxRuns; fid++ {
		if err := r.dropBehind(-1, fid, 0, 4096); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.runs) != maxRuns {
		t.Errorf("%d runs followed, want %d", len(r.runs), maxRuns)
	}
	off := int64(1 << 30)
	allocs := testing.AllocsPerRun(1000, func() {
		off -= 8192 // never where the run's last write ended
		if err := r.dropBehind(-1, 2+2*maxRuns-1, off, 4096); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per random write, want 0", allocs)
	}
}
