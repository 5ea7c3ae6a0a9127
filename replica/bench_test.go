package replica

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/brickvol/brick/proto/brickpb"
)

// BenchmarkCreateFile: one file per Apply batch: create, a 4 KiB write,
// a setattr of its times (what an untar does).
func BenchmarkCreateFile(b *testing.B) {
	r := newTest(b)
	data := make([]byte, 4096)
	fid := uint64(1)
	seq := uint64(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fid++
		ops := []*brickpb.Op{
			{Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: fidName(fid), Fid: fid, Mode: 0o644},
			{Type: brickpb.OpType_OP_WRITE, Fid: fid, Data: data},
			{Type: brickpb.OpType_OP_SETATTR, Fid: fid, Valid: uint32(brickpb.SetattrBit_SETATTR_MTIME), MtimeNs: 1e9},
		}
		for _, op := range ops {
			seq++
			op.Seq = seq
		}
		if _, err := r.Apply(ops); err != nil {
			b.Fatal(err)
		}
	}
}

func benchWrite(b *testing.B, size, batch int) {
	r := newTest(b)
	must(b, r, createOp(1, "f", 2, 0o644))
	data := make([]byte, size)
	seq := uint64(1)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		ops := make([]*brickpb.Op, 0, batch)
		for j := 0; j < batch && i+j < b.N; j++ {
			seq++
			ops = append(ops, &brickpb.Op{Seq: seq, Type: brickpb.OpType_OP_WRITE, Fid: 2, Offset: int64((i+j)%256) * int64(size), Data: data})
		}
		if _, err := r.Apply(ops); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWrite4K(b *testing.B)      { benchWrite(b, 4<<10, 1) }
func BenchmarkWrite128K(b *testing.B)    { benchWrite(b, 128<<10, 1) }
func BenchmarkWrite1M(b *testing.B)      { benchWrite(b, 1<<20, 1) }
func BenchmarkWrite128Kx16(b *testing.B) { benchWrite(b, 128<<10, 16) }

// BenchmarkSetattr: the fixed cost of one small convergent op per batch
// (one NoSync meta.db commit plus the syscall).
func BenchmarkSetattr(b *testing.B) {
	r := newTest(b)
	must(b, r, createOp(1, "f", 2, 0o644))
	seq := uint64(1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seq++
		op := &brickpb.Op{Seq: seq, Type: brickpb.OpType_OP_SETATTR, Fid: 2, Valid: uint32(brickpb.SetattrBit_SETATTR_MTIME), MtimeNs: int64(i)}
		if _, err := r.Apply([]*brickpb.Op{op}); err != nil {
			b.Fatal(err)
		}
	}
}

// Baselines: the same work straight on the brick's file system.

func BenchmarkBaselinePwrite4K(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 4096)
	b.SetBytes(4096)
	for i := 0; i < b.N; i++ {
		f.WriteAt(data, int64(i%256)*4096)
	}
}

func BenchmarkBaselineCreate(b *testing.B) {
	dir := b.TempDir()
	for i := 0; i < b.N; i++ {
		f, err := os.OpenFile(filepath.Join(dir, fidName(uint64(i))), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func BenchmarkBaselineCreateKeepOpen(b *testing.B) {
	dir := b.TempDir()
	var fs []*os.File
	for i := 0; i < b.N; i++ {
		f, err := os.OpenFile(filepath.Join(dir, fidName(uint64(i))), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		fs = append(fs, f)
		if len(fs) > 256 {
			fs[0].Close()
			fs = fs[1:]
		}
	}
}
