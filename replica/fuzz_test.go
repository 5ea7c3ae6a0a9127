package replica

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// FuzzDecodeOp decodes arbitrary bytes as an Op and applies it, as the
// next op, to one scratch replica that accumulates the state of every
// input: nothing may panic, and nothing outside the replica may change
// (a sibling directory, reachable by symlinks the ops make, is checked).
func FuzzDecodeOp(f *testing.F) {
	needRoot(f)
	base := f.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(filepath.Join(outside, "sub"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("intact"), 0o644); err != nil {
		f.Fatal(err)
	}
	before, err := TreeDigest(base + "/outside")
	if err != nil {
		f.Fatal(err)
	}
	r, err := OpenReplica(filepath.Join(base, "vol"), ReplicaOptions{MaxLogBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })

	seeds := []*brickpb.Op{
		{Type: brickpb.OpType_OP_SYMLINK, Parent: 1, Name: "esc", Fid: 2, Target: "../../outside"},
		{Type: brickpb.OpType_OP_SYMLINK, Parent: 1, Name: "root", Fid: 3, Target: "/"},
		{Type: brickpb.OpType_OP_SYMLINK, Parent: 1, Name: "v", Fid: 4, Target: outside + "/victim"},
		{Type: brickpb.OpType_OP_CREATE, Parent: 2, Name: "x", Fid: 5, Mode: 0o644},
		{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "d", Fid: 6, Mode: 0o755},
		{Type: brickpb.OpType_OP_CREATE, Parent: 6, Name: "f", Fid: 7, Mode: 0o4755},
		{Type: brickpb.OpType_OP_WRITE, Fid: 4, Data: []byte("pwned")},
		{Type: brickpb.OpType_OP_WRITE, Fid: 7, Offset: 1 << 20, Data: []byte("data")},
		{Type: brickpb.OpType_OP_SETATTR, Fid: 4, Valid: 63, Mode: 0o777, Size: 0},
		{Type: brickpb.OpType_OP_SETXATTR, Fid: 4, Xattr: "user.a", Data: []byte("1")},
		{Type: brickpb.OpType_OP_SETXATTR, Fid: 7, Xattr: fidXattr, Data: encodeFID(2)},
		{Type: brickpb.OpType_OP_RENAME, Parent: 1, Name: "v", NewParent: 2, NewName: "victim"},
		{Type: brickpb.OpType_OP_RENAME, Parent: 1, Name: "d", NewParent: 1, NewName: "root", Flags: unix.RENAME_EXCHANGE},
		{Type: brickpb.OpType_OP_LINK, Fid: 4, Parent: 3, Name: "etc"},
		{Type: brickpb.OpType_OP_UNLINK, Parent: 2, Name: "victim"},
		{Type: brickpb.OpType_OP_RMDIR, Parent: 1, Name: "esc"},
		{Type: brickpb.OpType_OP_FORGET, Fid: 7},
		{Type: brickpb.OpType_OP_MKNOD, Parent: 1, Name: "p", Fid: 8, Mode: unix.S_IFIFO | 0o600},
		{Type: brickpb.OpType_OP_FALLOCATE, Fid: 7, Size: 4096, Flags: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE},
		{Type: brickpb.OpType_OP_SYNC},
		{Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: "../outside/x", Fid: 9},
	}
	for _, op := range seeds {
		b, _ := proto.Marshal(op)
		f.Add(b)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		op := new(brickpb.Op)
		if proto.Unmarshal(b, op) != nil {
			return
		}
		// Keep the scratch replica small and harmless: no huge files, no
		// device numbers (a device node is never opened, but still).
		if op.Offset > 16<<20 || op.Size > 16<<20 || op.Offset < -1 || op.Size < -1 {
			return
		}
		op.Rdev = 0
		applied, _, promised, _ := r.State()
		op.Seq, op.Epoch = applied+1, promised
		if _, err := r.Apply([]*brickpb.Op{op}); err != nil && !errors.Is(err, ErrLocalFailure) {
			t.Fatalf("Apply: %v", err)
		}
		ref := &brickpb.VolumeRef{Epoch: promised}
		kind := brickpb.MetaKind(op.Flags % 8)
		if _, err := r.Meta(ctx, &brickpb.MetaRequest{Ref: ref, Kind: kind, Fid: op.Fid, Parent: op.Parent, Name: op.Name, Xattr: op.Xattr}); err != nil && !strings.Contains(err.Error(), "tree does not match") {
			t.Fatalf("Meta %s: %v", kind, err)
		}
		if _, err := r.Read(ctx, &brickpb.ReadRequest{Ref: ref, Fid: op.Fid, Offset: op.Offset, Size: uint32(len(op.Data))}); err != nil {
			t.Fatalf("Read: %v", err)
		}
		after, err := TreeDigest(outside)
		if err != nil || after != before {
			m, _ := TreeManifest(outside)
			t.Fatalf("outside the replica changed (%v): %q", err, m)
		}
		ents, err := os.ReadDir(base)
		if err != nil || len(ents) != 2 {
			t.Fatalf("the replica's parent now holds %v (%v)", ents, err)
		}
	})
}

func FuzzDecodeLogRec(f *testing.F) {
	for _, op := range []*brickpb.Op{{Seq: 1}, {Seq: 7, Type: brickpb.OpType_OP_WRITE, Data: []byte("x")}} {
		b, _ := encodeLogRec(op)
		f.Add(op.Seq, b)
	}
	f.Add(uint64(3), []byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, seq uint64, b []byte) {
		op, err := decodeLogRec(seq, b)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("error without errBadRecord: %v", err)
			}
			return
		}
		if op.Seq != seq {
			t.Fatalf("decoded op %d from the record of %d", op.Seq, seq)
		}
		again, err := encodeLogRec(op)
		if err != nil {
			t.Fatal(err)
		}
		op2, err := decodeLogRec(seq, again)
		if err != nil || !proto.Equal(op, op2) {
			t.Fatalf("re-encoding changed the op: %v", err)
		}
	})
}

func FuzzDecodeDirRec(f *testing.F) {
	f.Add(encodeDirRec(dirRec{parent: 1, name: "a"}))
	f.Add(encodeDirRec(dirRec{parent: 1 << 60, name: strings.Repeat("x", 255)}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, '/'})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDirRec(b)
		if err != nil {
			return
		}
		if d.parent == 0 || checkName(d.name) != nil {
			t.Fatalf("decoded an invalid record %+v", d)
		}
		if !bytes.Equal(encodeDirRec(d), b) {
			t.Fatalf("not canonical: %x", b)
		}
	})
}

func FuzzDecodeIntent(f *testing.F) {
	f.Add(encodeIntent(intentRec{seq: 5, src: 2, dst: 3, srcDir: true}))
	f.Add(make([]byte, 26))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := decodeIntent(b)
		if err != nil {
			return
		}
		if in.seq == 0 || !bytes.Equal(encodeIntent(in), b) {
			t.Fatalf("decoded %+v from %x", in, b)
		}
	})
}

// FuzzDecodeSmallRecords covers the fixed-size records: counters,
// checksum keys and values, file ID tags.
func FuzzDecodeSmallRecords(f *testing.F) {
	f.Add(u64Key(7))
	f.Add(sumKey(3, 4))
	f.Add(encodeSum(sumVal{crc: 9, n: ChunkSize}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 32 {
			return // all refused alike; keeps minimization quick
		}
		if v, err := decodeU64(b); err == nil && !bytes.Equal(u64Key(v), b) {
			t.Fatalf("u64 %x", b)
		}
		if fid, chunk, err := decodeSumKey(b); err == nil && !bytes.Equal(sumKey(fid, chunk), b) {
			t.Fatalf("sum key %x", b)
		}
		if v, err := decodeSum(b); err == nil && (v.n > ChunkSize || !bytes.Equal(encodeSum(v), b)) {
			t.Fatalf("sum %x", b)
		}
		if fid, err := decodeFID(b); err == nil && (fid == 0 || !bytes.Equal(encodeFID(fid), b)) {
			t.Fatalf("fid %x", b)
		}
	})
}

// FuzzWALSegment feeds arbitrary bytes to the op log's segment scan (what
// opening a log does to each file): it must not panic, and what it accepts
// must be exactly the records it re-encodes to.
func FuzzWALSegment(f *testing.F) {
	var seg []byte
	for s := uint64(7); s < 10; s++ {
		seg = appendWALRec(seg, s, walPayload(s))
	}
	f.Add(seg, uint64(7))
	f.Add(append(append([]byte(nil), seg...), make([]byte, 40)...), uint64(7))
	f.Add(seg[:len(seg)-3], uint64(7))
	f.Add(seg, uint64(8))
	f.Add([]byte{}, uint64(1))
	f.Fuzz(func(t *testing.T, b []byte, first uint64) {
		offs, end, err := scanSegment(b, first)
		if end > int64(len(b)) || (err == nil) != (end == int64(len(b)) || endMark(b[end:])) {
			t.Fatalf("scan of %d bytes ends at %d with %v", len(b), end, err)
		}
		var again []byte
		for i, off := range offs {
			p, n, err := decodeWALRec(b[off:], first+uint64(i))
			if err != nil {
				t.Fatalf("record %d at %d accepted by the scan, refused alone: %v", i, off, err)
			}
			if i+1 < len(offs) && int(offs[i+1]) != int(off)+n {
				t.Fatalf("record %d: offsets %d and %d, length %d", i, off, offs[i+1], n)
			}
			again = appendWALRec(again, first+uint64(i), p)
		}
		if !bytes.Equal(again, b[:end]) {
			t.Fatalf("re-encoding the %d records gives other bytes", len(offs))
		}
	})
}
