package replica

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/brickvol/brick/proto/brickpb"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func walPayload(seq uint64) []byte {
	return bytes.Repeat([]byte{byte(seq)}, int(seq%97)+1)
}

func walAppend(t *testing.T, l *opLog, first, n uint64) {
	t.Helper()
	var ps [][]byte
	for s := first; s < first+n; s++ {
		ps = append(ps, walPayload(s))
	}
	if err := l.Append(first, ps); err != nil {
		t.Fatal(err)
	}
}

// walCheck reads the whole log back, one record and all at once.
func walCheck(t *testing.T, l *opLog, first, last uint64) {
	t.Helper()
	f, la, _ := l.Range()
	if f != first || la != last {
		t.Fatalf("log %d..%d, want %d..%d", f, la, first, last)
	}
	if first == 0 {
		return
	}
	all, err := l.Read(first, last, 1<<30)
	if err != nil || uint64(len(all)) != last-first+1 {
		t.Fatalf("Read(%d..%d): %d records, %v", first, last, len(all), err)
	}
	for i, p := range all {
		if s := first + uint64(i); !bytes.Equal(p, walPayload(s)) {
			t.Fatalf("record %d: %d bytes, want %d", s, len(p), len(walPayload(s)))
		}
	}
	for s := first; s <= last; s += 7 {
		if p, err := l.Read(s, s, 1); err != nil || len(p) != 1 || !bytes.Equal(p[0], walPayload(s)) {
			t.Fatalf("Read(%d): %v", s, err)
		}
	}
	if p, err := l.Read(last+1, last+1, 1); err != nil || p != nil {
		t.Fatalf("Read past the end: %d records, %v", len(p), err)
	}
}

func TestWALAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	l, err := openOpLog(dir, 512, quietLog()) // tiny segments: many of them
	if err != nil {
		t.Fatal(err)
	}
	for s := uint64(5); s < 300; s += 11 {
		walAppend(t, l, s, 11)
	}
	walCheck(t, l, 5, 301)
	if p, err := l.Read(3, 10, 1); err != nil || p != nil {
		t.Fatalf("Read before the start: %d records, %v", len(p), err)
	}
	if err := l.Append(400, [][]byte{{1}}); err == nil {
		t.Fatalf("appending with a gap succeeded")
	}
	// A bounded read stops near maxBytes but returns at least one.
	if p, _ := l.Read(5, 301, 1); len(p) != 1 {
		t.Fatalf("Read with maxBytes 1: %d records", len(p))
	}
	if p, _ := l.Read(5, 301, 600); len(p) < 5 || len(p) > 40 {
		t.Fatalf("Read with maxBytes 600: %d records", len(p))
	}
	l.Close()
	if l, err = openOpLog(dir, 512, quietLog()); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	walCheck(t, l, 5, 301)

	if err := l.TruncateAfter(200); err != nil {
		t.Fatal(err)
	}
	walCheck(t, l, 5, 200)
	walAppend(t, l, 201, 3)
	walCheck(t, l, 5, 203)

	l.Trim(1000, 1<<30, 100) // within bounds: nothing goes
	walCheck(t, l, 5, 203)
	l.Trim(50, 1<<30, 100) // 50 ops wanted, but none after 100 may go
	walCheck(t, l, 101, 203)
	_, _, before := l.Range()
	l.Trim(1000, before/2, 1000)
	_, _, after := l.Range()
	if after > before/2 || after < before/2-200 {
		t.Fatalf("trimmed to %d bytes, want just under %d", after, before/2)
	}
	f, _, _ := l.Range()
	walCheck(t, l, f, 203)
	ents, _ := os.ReadDir(filepath.Join(dir, walDirName))
	for _, e := range ents {
		var first uint64
		fmt.Sscanf(e.Name(), "%d.log", &first)
		if st, _ := e.Info(); first < f && st.Size() > 0 && first+uint64(st.Size()/16) < f-20 {
			t.Fatalf("segment %s holds nothing served but was kept", e.Name())
		}
	}
	l.Close()
	if l, err = openOpLog(dir, 512, quietLog()); err != nil {
		t.Fatal(err)
	}
	if f2, _, _ := l.Range(); f2 > f {
		t.Fatalf("after a reopen the log starts at %d, after %d", f2, f)
	}
	if err := l.TruncateAfter(1); err != nil { // before the start: everything
		t.Fatal(err)
	}
	walCheck(t, l, 0, 0)
	walAppend(t, l, 1000, 5)
	walCheck(t, l, 1000, 1004)
	if err := l.Reset(); err != nil {
		t.Fatal(err)
	}
	walCheck(t, l, 0, 0)
	l.Close()
	ents, _ = os.ReadDir(filepath.Join(dir, walDirName))
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".spare" {
			t.Fatalf("%s left after Reset", e.Name())
		}
	}
}

// TestWALTornTail: damage at the end of the log (a torn append) cuts the
// log at the last sound record and later segments go; bytes after an end
// mark (a reused segment's stale records) are not damage.
func TestWALTornTail(t *testing.T) {
	zero := func(b []byte) {
		for i := range b {
			b[i] = 0
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(b []byte, end int)
		want   uint64
	}{
		{"cut header", func(b []byte, end int) { zero(b[end-len(walPayload(30))-10 : end]) }, 29},
		{"cut payload", func(b []byte, end int) { zero(b[end-1 : end]) }, 29},
		{"flipped byte", func(b []byte, end int) { b[end-1] ^= 1 }, 29},
		{"no end mark", func(b []byte, end int) { b[end+3] = 7 }, 30},
		{"stale bytes after the end mark", func(b []byte, end int) { copy(b[end+walHdr:], appendWALRec(nil, 31, walPayload(31))) }, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := openOpLog(dir, 4096, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			walAppend(t, l, 1, 30)
			l.segMax = 0 // the next append starts a segment
			walAppend(t, l, 31, 30)
			l.Close()
			p := filepath.Join(dir, walDirName, segName(1))
			b, _ := os.ReadFile(p)
			_, end, err := scanSegment(b, 1)
			if err != nil || len(b) != 4096 || end < 900 {
				t.Fatalf("segment of %d bytes, records end at %d, %v", len(b), end, err)
			}
			tc.damage(b, int(end))
			os.WriteFile(p, b, 0o600)
			l, err = openOpLog(dir, 4096, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			walCheck(t, l, 1, tc.want)
			_, err = os.Stat(filepath.Join(dir, walDirName, segName(31)))
			if kept := err == nil; kept != (tc.want == 60) {
				t.Fatalf("segment 31 kept: %v, want %v", kept, tc.want == 60)
			}
			walAppend(t, l, tc.want+1, 5)
			walCheck(t, l, 1, tc.want+5)
			l.Close()
			l, err = openOpLog(dir, 4096, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			walCheck(t, l, 1, tc.want+5)
		})
	}
}

// TestWALReusesSegments: trimmed segments are kept (a few) and reused, so
// the log's files stop growing once it is full; records a reused file held
// before never come back.
func TestWALReusesSegments(t *testing.T) {
	dir := t.TempDir()
	l, err := openOpLog(dir, 2048, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	for s := uint64(1); s < 2000; s += 10 {
		walAppend(t, l, s, 10)
		l.Trim(1<<20, 8192, s+9)
	}
	f, _, _ := l.Range()
	walCheck(t, l, f, 2000)
	ents, _ := os.ReadDir(filepath.Join(dir, walDirName))
	spares := 0
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".spare" {
			spares++
		}
		if st, _ := e.Info(); st.Size() != 2048 {
			t.Errorf("%s: %d bytes, want the segment size", e.Name(), st.Size())
		}
	}
	if spares == 0 || spares > walSpares || len(ents) > 8 {
		t.Errorf("%d files, %d spares: want a few files, reused", len(ents), spares)
	}
	l.Close()
	if l, err = openOpLog(dir, 2048, quietLog()); err != nil {
		t.Fatal(err)
	}
	f2, _, _ := l.Range() // trimmed records still in a segment count again
	if f2 > f {
		t.Fatalf("after a reopen the log starts at %d, after %d", f2, f)
	}
	walCheck(t, l, f2, 2000)
}

// TestLogMovesOutOfMetaDB: a replica whose op log an earlier version kept
// in meta.db opens with the same log (from its last hole on), now in
// files, and the bucket empty.
func TestLogMovesOutOfMetaDB(t *testing.T) {
	ops, _ := genOps(t, 3, 120)
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{})
	applyBatches(t, r, ops, rand.New(rand.NewPCG(3, 3)))
	want, err := r.OpsSince(0)
	if err != nil || len(want) != 120 {
		t.Fatalf("OpsSince(0): %d, %v", len(want), err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Put the log back where the earlier version kept it.
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		for _, op := range want {
			if op.Seq == 40 {
				continue // a hole, as logs of that version can have
			}
			enc, err := encodeLogRec(op)
			if err != nil {
				return err
			}
			k := u64Key(op.Seq)
			if len(enc) < bigRec {
				err = b.Put(k, enc)
			} else {
				var nb *bolt.Bucket
				if nb, err = b.CreateBucket(k); err == nil {
					err = nb.Put(recKey, enc)
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	os.RemoveAll(filepath.Join(dir, walDirName))

	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	if _, err := r.OpsSince(0); !errors.Is(err, ErrLogTruncated) {
		t.Fatalf("OpsSince(0) after the move: %v, want ErrLogTruncated (the hole)", err)
	}
	want = want[40:]
	got, err := r.OpsSince(40)
	if err != nil || len(got) != len(want) {
		t.Fatalf("after the move: %d ops, %v", len(got), err)
	}
	for i := range got {
		if got[i].String() != want[i].String() {
			t.Fatalf("op %d differs after the move", want[i].Seq)
		}
	}
	r.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketLog).Stats().KeyN; n != 0 {
			t.Errorf("%d records left in meta.db's log bucket", n)
		}
		return nil
	})
	// And the log goes on from there.
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "after-the-move", Fid: 1 << 20, Mode: 0o755})
	if first, last := r.LogRange(); first != 41 || last != 121 {
		t.Errorf("log %d..%d, want 41..121", first, last)
	}
}

// A spare taken for a new segment loses its records before it takes the
// segment's name: they may carry the very seqs the segment is for (after
// TruncateAfter), and a process that dies before the first append must
// not find them there.
func TestWALSpareKeepsNoRecords(t *testing.T) {
	old := t.TempDir()
	l, err := openOpLog(old, 4096, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	walAppend(t, l, 100, 5)
	l.Close()
	seg, err := os.ReadFile(filepath.Join(old, walDirName, segName(100)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, walDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	// A spare holding sound records for seqs 100..104.
	if err := os.WriteFile(filepath.Join(dir, walDirName, spareName(7)), seg, 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err = openOpLog(dir, 4096, quietLog()); err != nil {
		t.Fatal(err)
	}
	s, err := l.newSegment(100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, walDirName, segName(100))); err != nil {
		t.Fatalf("the spare was not reused as segment 100: %v", err)
	}
	s.f.Close() // the process dies before its first append
	l.Close()
	if l, err = openOpLog(dir, 4096, quietLog()); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	walCheck(t, l, 0, 0)
}

// Big payloads go to the segment from where they are (pwritev), small ones
// through Append's buffer; a batch of more than IOV_MAX pieces takes
// several calls. Every record reads back the same, also after a reopen,
// and the next append continues behind them.
func TestWALAppendBigPayloads(t *testing.T) {
	dir := t.TempDir()
	l, err := openOpLog(dir, 1<<20, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	noise := make([]byte, 2*walGatherMax+16)
	for i := range noise {
		noise[i] = byte(i * 31 / 7)
	}
	payload := func(seq uint64) []byte {
		n := int(seq % 100) // a third small, the rest just past the limit
		if seq%3 != 0 {
			n = walGatherMax + int(seq%5)
		}
		return append([]byte{byte(seq)}, noise[seq%13:][:n]...)
	}
	appendN := func(first, n uint64) {
		t.Helper()
		var ps [][]byte
		for s := first; s < first+n; s++ {
			ps = append(ps, payload(s))
		}
		if err := l.Append(first, ps); err != nil {
			t.Fatalf("appending %d-%d: %v", first, first+n-1, err)
		}
	}
	check := func(first, last uint64) {
		t.Helper()
		ps, err := l.Read(first, last, 1<<30)
		if err != nil || len(ps) != int(last-first+1) {
			t.Fatalf("reading %d-%d: %d records, %v", first, last, len(ps), err)
		}
		for i, p := range ps {
			if s := first + uint64(i); !bytes.Equal(p, payload(s)) {
				t.Fatalf("record %d: payload of %d bytes differs from the %d appended", s, len(p), len(payload(s)))
			}
		}
	}
	appendN(1, 3)
	appendN(4, 780) // 520 big payloads, over 1,040 pieces: two pwritev calls
	appendN(784, 1)
	check(1, 784)
	l.Close()
	if l, err = openOpLog(dir, 1<<20, quietLog()); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	check(1, 784)
	appendN(785, 10)
	check(780, 794)
}

// Records of big ops, whose checksums Append combines from the one each
// log record carries (tailSum), check whole when the log is reopened and
// read; so do records whose payload carries none, and records too small
// to combine.
func TestWALCombinesRecordChecksums(t *testing.T) {
	dir := t.TempDir()
	l, err := openOpLog(dir, 4<<20, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	l.tailSum = logRecTail
	var want [][]byte
	for seq := uint64(1); seq <= 24; seq++ {
		var p []byte
		switch seq % 4 {
		case 0: // carries no checksum of its own
			p = bytes.Repeat([]byte{0xee, byte(seq)}, combineMin)
		case 1: // too small to combine
			p, err = appendLogRec(nil, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Seq: seq, Data: []byte("small")})
		default:
			data := make([]byte, combineMin*int(seq%3+1)+int(seq))
			for i := range data {
				data[i] = byte(i*int(seq)) ^ byte(i>>9)
			}
			p, err = appendLogRec(nil, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Seq: seq, Fid: 2, Data: data})
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Append(seq, [][]byte{p}); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	l.Close()
	if l, err = openOpLog(dir, 4<<20, quietLog()); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if first, last, _ := l.Range(); first != 1 || last != 24 {
		t.Fatalf("reopened log holds %d..%d, want 1..24 (a record failed its checksum)", first, last)
	}
	got, err := l.Read(1, 24, 1<<30)
	if err != nil || len(got) != 24 {
		t.Fatalf("reading back: %d records, %v", len(got), err)
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("record %d differs", i+1)
		}
	}
}

// An append fills the page its end mark is on with zeros, so the next
// append never writes part of a page the page cache lacks (which made
// the kernel read it from the disk first); stale bytes from the next
// page on stay, the file keeps its size, and the log reopens whole.
func TestWALAppendPadsToPage(t *testing.T) {
	dir := t.TempDir()
	l, err := openOpLog(dir, 1<<20, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	walAppend(t, l, 1, 1)
	seg := l.segs[0]
	junk := bytes.Repeat([]byte{0xff}, 3*walPage)
	rec := make([]byte, 4200) // a 4 KiB write's record, give or take
	for seq := uint64(2); seq <= 9; seq++ {
		end := seg.size + walHdr
		if _, err := seg.f.WriteAt(junk, end); err != nil { // stale bytes past the end mark
			t.Fatal(err)
		}
		if err := l.Append(seq, [][]byte{rec}); err != nil {
			t.Fatal(err)
		}
		end = seg.size + walHdr
		pageEnd := (end + walPage - 1) / walPage * walPage
		b := make([]byte, pageEnd-end+1)
		if _, err := seg.f.ReadAt(b, end); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:len(b)-1], make([]byte, len(b)-1)) {
			t.Fatalf("append %d: the %d bytes from its end mark's end to the page's are not all zero", seq, len(b)-1)
		}
		if b[len(b)-1] != 0xff {
			t.Fatalf("append %d: the next page was written too", seq)
		}
	}
	if st, err := seg.f.Stat(); err != nil || st.Size() != seg.cap {
		t.Fatalf("segment file of %v bytes (%v), want %d", st.Size(), err, seg.cap)
	}
	l.Close()
	if l, err = openOpLog(dir, 1<<20, quietLog()); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if first, last, _ := l.Range(); first != 1 || last != 9 {
		t.Fatalf("reopened log holds %d..%d, want 1..9", first, last)
	}
}
