package replica

import (
	"context"
	"flag"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

var seedFlag = flag.Uint64("replica.seed", 0, "seed of the random op sequences (0: from the clock)")

// testSeed returns the seed to use, logged so a failure can be replayed
// with -replica.seed.
func testSeed(t testing.TB) uint64 {
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -replica.seed=%d)", s, s)
	return s
}

// opGen makes random op sequences over a small name space, so that names
// collide, directories fill up and empty, and renames cross and swap. It
// tracks what it created, not what still exists: many ops fail, as a real
// head's never would, which exercises the errno paths too.
type opGen struct {
	rng    *rand.Rand
	dirs   []uint64
	files  []uint64
	fid    uint64
	seq    uint64
	root   bool
	oracle *Replica // when set, every op is applied to it as made, and names are picked among its entries
}

func newOpGen(seed uint64) *opGen {
	return &opGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), dirs: []uint64{1}, fid: 1, root: os.Geteuid() == 0}
}

// genOps makes n ops with an oracle replica, returned too: the tree the
// ops lead to, applied one at a time.
func genOps(t testing.TB, seed uint64, n int) ([]*brickpb.Op, *Replica) {
	g := newOpGen(seed)
	g.oracle = newTest(t)
	return g.ops(n), g.oracle
}

// entry picks a name in directory dir: usually one that exists there (per
// the oracle), else a random one.
func (g *opGen) entry(dir uint64) (string, *brickpb.DirEntry) {
	if g.oracle == nil || g.chance(0.15) {
		return g.name(), nil
	}
	resp, err := g.oracle.Meta(context.Background(), &brickpb.MetaRequest{Ref: &brickpb.VolumeRef{Epoch: 1}, Kind: brickpb.MetaKind_META_READDIR, Fid: dir})
	if err != nil || len(resp.Entries) == 0 {
		return g.name(), nil
	}
	e := resp.Entries[g.pick(len(resp.Entries))]
	return e.Name, e
}

var genNames = []string{"a", "b", "c", "d", "e", "f"}

func (g *opGen) name() string          { return genNames[g.rng.IntN(len(genNames))] }
func (g *opGen) dir() uint64           { return g.live(&g.dirs, 1) }
func (g *opGen) pick(n int) int        { return g.rng.IntN(n) }
func (g *opGen) chance(p float64) bool { return g.rng.Float64() < p }

func (g *opGen) file() uint64 {
	if len(g.files) == 0 || g.chance(0.05) {
		return g.fid + 1 // missing
	}
	return g.live(&g.files, g.fid+1)
}

// live picks a file ID of *ids that still exists per the oracle (dropping
// those that do not), or def.
func (g *opGen) live(ids *[]uint64, def uint64) uint64 {
	for len(*ids) > 0 {
		i := g.rng.IntN(len(*ids))
		fid := (*ids)[i]
		if g.oracle == nil || fid == 1 {
			return fid
		}
		resp, err := g.oracle.Meta(context.Background(), &brickpb.MetaRequest{Ref: &brickpb.VolumeRef{Epoch: 1}, Kind: brickpb.MetaKind_META_GETATTR, Fid: fid})
		if err == nil && resp.Errno == 0 {
			return fid
		}
		(*ids)[i] = (*ids)[len(*ids)-1]
		*ids = (*ids)[:len(*ids)-1]
	}
	return def
}

func (g *opGen) owner() uint32 {
	if !g.root {
		return uint32(os.Geteuid())
	}
	return uint32(g.pick(2) * 1000)
}

func (g *opGen) data() []byte {
	b := make([]byte, 1+g.pick(3000))
	c := byte('a' + g.pick(26))
	for i := range b {
		b[i] = c + byte(i%7)
	}
	return b
}

func (g *opGen) offset() int64 {
	if g.chance(0.1) {
		return int64(ChunkSize - 100 + g.pick(200))
	}
	return int64(g.pick(10000))
}

// ops returns the next n ops, numbered from where the last call ended, at
// epoch 1.
func (g *opGen) ops(n int) []*brickpb.Op {
	out := make([]*brickpb.Op, n)
	for i := range out {
		g.seq++
		op := g.op()
		op.Seq, op.Epoch = g.seq, 1
		out[i] = op
		if g.oracle != nil {
			if _, err := g.oracle.Apply([]*brickpb.Op{op}); err != nil {
				panic(err)
			}
		}
	}
	return out
}

func (g *opGen) op() *brickpb.Op {
	u := g.owner()
	switch p := g.pick(100); {
	case p < 14:
		g.fid++
		g.files = append(g.files, g.fid)
		return &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: g.dir(), Name: g.name(), Fid: g.fid, Mode: uint32(0o600 + g.pick(0o200)), Uid: u, Gid: u}
	case p < 22:
		g.fid++
		g.dirs = append(g.dirs, g.fid)
		return &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: g.dir(), Name: g.name(), Fid: g.fid, Mode: []uint32{0o755, 0o1777, 0o2750}[g.pick(3)], Uid: u, Gid: u}
	case p < 25:
		g.fid++
		g.files = append(g.files, g.fid)
		return &brickpb.Op{Type: brickpb.OpType_OP_SYMLINK, Parent: g.dir(), Name: g.name(), Fid: g.fid, Target: g.name() + "/../" + g.name(), Uid: u, Gid: u}
	case p < 27:
		g.fid++
		g.files = append(g.files, g.fid)
		return &brickpb.Op{Type: brickpb.OpType_OP_MKNOD, Parent: g.dir(), Name: g.name(), Fid: g.fid, Mode: unix.S_IFIFO | 0o644, Uid: u, Gid: u}
	case p < 32:
		return &brickpb.Op{Type: brickpb.OpType_OP_LINK, Fid: g.file(), Parent: g.dir(), Name: g.name()}
	case p < 41:
		d := g.dir()
		name, e := g.entry(d)
		op := &brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: d, Name: name}
		if g.chance(0.5) {
			// Forget with the last name: usually the file at name, at
			// times another (the brick must not forget that one).
			op.Flags, op.Fid = brickpb.UnlinkForget, g.file()
			if e != nil && g.chance(0.8) {
				op.Fid = e.Fid
			}
		}
		return op
	case p < 45:
		d := g.dir()
		name, _ := g.entry(d)
		return &brickpb.Op{Type: brickpb.OpType_OP_RMDIR, Parent: d, Name: name}
	case p < 57:
		flags := []uint32{0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}[g.pick(4)]
		d, nd := g.dir(), g.dir()
		name, _ := g.entry(d)
		newName := g.name()
		if flags == unix.RENAME_EXCHANGE || g.chance(0.3) {
			newName, _ = g.entry(nd)
		}
		return &brickpb.Op{Type: brickpb.OpType_OP_RENAME, Parent: d, Name: name, NewParent: nd, NewName: newName, Flags: flags}
	case p < 75:
		return &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: g.file(), Offset: g.offset(), Data: g.data()}
	case p < 79:
		return &brickpb.Op{Type: brickpb.OpType_OP_TRUNCATE, Fid: g.file(), Size: g.offset()}
	case p < 81:
		mode := []uint32{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE}[g.pick(4)]
		return &brickpb.Op{Type: brickpb.OpType_OP_FALLOCATE, Fid: g.file(), Offset: g.offset(), Size: int64(1 + g.pick(5000)), Flags: mode}
	case p < 87:
		fid := g.file()
		if g.chance(0.3) {
			fid = g.dir()
		}
		valid := uint32(1 + g.pick(63))
		if fid <= 1 || g.chance(0.5) {
			valid &^= uint32(brickpb.SetattrBit_SETATTR_SIZE)
		}
		return &brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: fid, Valid: valid, Mode: uint32(g.pick(0o10000)),
			Uid: u, Gid: u, Size: g.offset(), AtimeNs: int64(g.pick(1e9)) * 1e3, MtimeNs: int64(g.pick(1e9)) * 1e3}
	case p < 93:
		fid := g.file()
		if g.chance(0.3) {
			fid = g.dir()
		}
		return &brickpb.Op{Type: brickpb.OpType_OP_SETXATTR, Fid: fid, Xattr: "user." + g.name(), Data: g.data()[:1], Flags: uint32(g.pick(3))}
	case p < 96:
		fid := g.file()
		if g.chance(0.3) {
			fid = g.dir()
		}
		return &brickpb.Op{Type: brickpb.OpType_OP_REMOVEXATTR, Fid: fid, Xattr: "user." + g.name()}
	case p < 99:
		return &brickpb.Op{Type: brickpb.OpType_OP_FORGET, Fid: g.file()}
	}
	return &brickpb.Op{Type: brickpb.OpType_OP_SYNC}
}

// applyBatches applies ops to r in random batches and returns the results.
func applyBatches(t testing.TB, r *Replica, ops []*brickpb.Op, rng *rand.Rand) []*brickpb.OpResult {
	t.Helper()
	var all []*brickpb.OpResult
	for len(ops) > 0 {
		n := min(len(ops), 1+rng.IntN(8))
		res, err := r.Apply(ops[:n])
		if err != nil {
			t.Fatalf("applying ops %d..%d: %v", ops[0].Seq, ops[n-1].Seq, err)
		}
		all = append(all, res...)
		ops = ops[n:]
	}
	return all
}
