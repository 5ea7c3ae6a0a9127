package namecache

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"

	"github.com/brickvol/brick/proto/brickpb"
)

func TestMkdirMakesComplete(t *testing.T) {
	c := New(100)
	if c.Absent(1, "a") {
		t.Fatal("absent in a directory the cache knows nothing of")
	}
	done := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "d", Fid: 7})
	if c.Absent(7, "x") {
		t.Fatal("absent in a directory whose MKDIR is still in flight")
	}
	done(&brickpb.OpResult{Seq: 3}, nil)
	if !c.Absent(7, "x") {
		t.Fatal("a new directory is empty")
	}
	add := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 7, Name: "x", Fid: 8})
	if c.Absent(7, "x") {
		t.Fatal("a name being created is absent")
	}
	add(&brickpb.OpResult{Seq: 4}, nil)
	if c.Absent(7, "x") {
		t.Fatal("a created name is absent")
	}
	rm := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: 7, Name: "x"})
	rm(&brickpb.OpResult{Seq: 5}, nil)
	if !c.Absent(7, "x") {
		t.Fatal("an unlinked name is still present")
	}
	for _, bad := range []string{"", ".", "..", "a/b", string(make([]byte, 256))} {
		if c.Absent(7, bad) {
			t.Fatalf("%q answered from the cache", bad)
		}
	}
	if h, m, n := c.Stats(); h == 0 || m == 0 || n != 0 {
		t.Fatalf("stats: hits %d misses %d names %d", h, m, n)
	}
}

func TestFailedMkdirOrTransportErrorKeepsNames(t *testing.T) {
	c := New(100)
	c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "d", Fid: 7})(&brickpb.OpResult{Seq: 1}, nil)
	c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "e", Fid: 9})(&brickpb.OpResult{Seq: 2, Errno: uint32(syscall.EEXIST)}, nil)
	if c.Absent(9, "x") {
		t.Fatal("a failed MKDIR made a complete directory")
	}
	c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 7, Name: "x", Fid: 8})(nil, errors.New("stream broke"))
	// The create may or may not have happened; an unlink at any seq must
	// not make the cache claim the name is gone.
	c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: 7, Name: "x"})(&brickpb.OpResult{Seq: 100}, nil)
	if c.Absent(7, "x") {
		t.Fatal("a name added at an unknown sequence was removed")
	}
}

func TestLookupDuringMkdirTaints(t *testing.T) {
	c := New(100)
	mk := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "d", Fid: 7})
	// Another client looked "d" up once the brick applied the MKDIR and
	// creates in it before the MKDIR's answer is back.
	add := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 7, Name: "x", Fid: 8})
	add(&brickpb.OpResult{Seq: 2}, nil)
	mk(&brickpb.OpResult{Seq: 1}, nil)
	if c.Absent(7, "x") {
		t.Fatal("a name created before the MKDIR's answer is absent")
	}
}

func TestListingDuringAddIsNotComplete(t *testing.T) {
	c := New(100)
	add := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 5, Name: "x", Fid: 8})
	l := c.StartListing()
	c.Listed(l, 5, nil)
	add(&brickpb.OpResult{Seq: 2}, nil)
	if c.Absent(5, "x") {
		t.Fatal("a listing taken while an add was in flight made the directory complete")
	}
	// The add began before the listing and ends before it is recorded:
	// the listing may have been served without it.
	add = c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 5, Name: "w", Fid: 10})
	l = c.StartListing()
	add(&brickpb.OpResult{Seq: 3}, nil)
	c.Listed(l, 5, []*brickpb.DirEntry{{Name: "x"}})
	if c.Absent(5, "w") {
		t.Fatal("a listing begun while an add was in flight made the directory complete")
	}
	l = c.StartListing()
	c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 5, Name: "y", Fid: 9})(&brickpb.OpResult{Seq: 3}, nil)
	c.Listed(l, 5, []*brickpb.DirEntry{{Name: "x"}})
	if c.Absent(5, "y") {
		t.Fatal("a listing overtaken by an add made the directory complete")
	}
	l = c.StartListing()
	c.Listed(l, 5, []*brickpb.DirEntry{{Name: "x"}, {Name: "y"}, {Name: "w"}})
	if c.Absent(5, "x") || c.Absent(5, "y") || c.Absent(5, "w") || !c.Absent(5, "z") {
		t.Fatal("a quiet listing did not make the directory complete")
	}
}

func TestBounded(t *testing.T) {
	c := New(40)
	for d := uint64(10); d < 20; d++ {
		c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: fmt.Sprint(d), Fid: d})(&brickpb.OpResult{Seq: d}, nil)
		for i := range 10 {
			c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: d, Name: fmt.Sprint(i), Fid: 1000*d + uint64(i)})(&brickpb.OpResult{Seq: 1000*d + uint64(i)}, nil)
		}
	}
	if _, _, n := c.Stats(); n > 40 {
		t.Fatalf("%d names held, bound 40", n)
	}
	if c := New(0); c.Absent(1, "x") {
		t.Fatal("a disabled cache answered")
	}
}

// The model test: random namespace ops from several concurrent clients,
// each begun, sequenced and finished at random interleavings, with
// transport failures (applied or not) and listings, against a sequential
// model of the namespace. Whenever the cache says a name is absent, it is
// absent from the model and no op that may add it is in flight.
func TestModel(t *testing.T) {
	for seed := range uint64(400) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, seed) })
	}
}

type modelDir map[string]uint64 // name -> fid

type flight struct {
	op      *brickpb.Op
	done    func(*brickpb.OpResult, error)
	res     *brickpb.OpResult
	err     error
	applied bool // sequenced (applied to the model)
	adds    bool // may add (op.Parent|NewParent, Name|NewName)
	listing *Listing
	listFID uint64
	entries []*brickpb.DirEntry
}

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	c := New(30 + rng.IntN(200))
	dirs := map[uint64]modelDir{1: {}}
	isDir := map[uint64]bool{1: true}
	nextFID, seq := uint64(2), uint64(0)
	names := []string{"a", "b", "c", "d"}
	var flights []*flight

	pickDir := func() uint64 {
		ids := make([]uint64, 0, len(dirs))
		for id := range dirs {
			ids = append(ids, id)
		}
		// map order is random but not seeded: sort for determinism
		for i := 1; i < len(ids); i++ {
			for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
				ids[j], ids[j-1] = ids[j-1], ids[j]
			}
		}
		if rng.IntN(8) == 0 {
			return 1 << 40 // a directory that does not exist (fids are never guessed)
		}
		return ids[rng.IntN(len(ids))]
	}
	apply := func(op *brickpb.Op) *brickpb.OpResult {
		seq++
		op.Seq = seq
		res := &brickpb.OpResult{Seq: seq}
		fail := func(e syscall.Errno) *brickpb.OpResult { res.Errno = uint32(e); return res }
		switch op.Type {
		case brickpb.OpType_OP_CREATE, brickpb.OpType_OP_MKDIR, brickpb.OpType_OP_LINK:
			d, ok := dirs[op.Parent]
			if !ok {
				return fail(syscall.ENOENT)
			}
			if _, ok := d[op.Name]; ok {
				return fail(syscall.EEXIST)
			}
			d[op.Name] = op.Fid
			if op.Type == brickpb.OpType_OP_MKDIR {
				dirs[op.Fid], isDir[op.Fid] = modelDir{}, true
			}
		case brickpb.OpType_OP_UNLINK, brickpb.OpType_OP_RMDIR:
			d, ok := dirs[op.Parent]
			if !ok {
				return fail(syscall.ENOENT)
			}
			f, ok := d[op.Name]
			if !ok {
				return fail(syscall.ENOENT)
			}
			if isDir[f] != (op.Type == brickpb.OpType_OP_RMDIR) {
				return fail(syscall.EISDIR)
			}
			if isDir[f] {
				if len(dirs[f]) > 0 {
					return fail(syscall.ENOTEMPTY)
				}
				delete(dirs, f)
				res.Attr = &brickpb.Attr{Fid: f}
			}
			delete(d, op.Name)
		case brickpb.OpType_OP_RENAME:
			src, ok1 := dirs[op.Parent]
			dst, ok2 := dirs[op.NewParent]
			if !ok1 || !ok2 {
				return fail(syscall.ENOENT)
			}
			f, ok := src[op.Name]
			if !ok || isDir[f] {
				return fail(syscall.ENOENT)
			}
			g, exists := dst[op.NewName]
			if op.Flags&renameExchange != 0 {
				if !exists || isDir[g] {
					return fail(syscall.ENOENT)
				}
				src[op.Name], dst[op.NewName] = g, f
				return res
			}
			if exists && isDir[g] {
				return fail(syscall.EISDIR)
			}
			if exists && g == f {
				return res // two names of one file: nothing happens
			}
			delete(src, op.Name)
			dst[op.NewName] = f
		}
		return res
	}

	for step := 0; step < 300; step++ {
		switch r := rng.IntN(10); {
		case r < 4: // begin an op
			f := &flight{}
			p, nm := pickDir(), names[rng.IntN(len(names))]
			switch rng.IntN(7) {
			case 0, 1:
				f.op = &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: p, Name: nm, Fid: nextFID}
				nextFID++
			case 2:
				f.op = &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: p, Name: nm, Fid: nextFID}
				nextFID++
			case 3:
				// A link to an existing file: the fid the model has
				// under some name, or a fresh one if none.
				fid := nextFID
				for _, d := range []uint64{p, 1} {
					for _, f2 := range dirs[d] {
						if !isDir[f2] {
							fid = f2
						}
					}
				}
				f.op = &brickpb.Op{Type: brickpb.OpType_OP_LINK, Parent: p, Name: nm, Fid: fid}
			case 4:
				f.op = &brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: p, Name: nm}
			case 5:
				// The file system names what stands there (fuse's Rmdir),
				// when it knows.
				f.op = &brickpb.Op{Type: brickpb.OpType_OP_RMDIR, Parent: p, Name: nm}
				if fid, ok := dirs[p][nm]; ok && isDir[fid] && rng.IntN(2) == 0 {
					f.op.Fid = fid
				}
			case 6:
				f.op = &brickpb.Op{Type: brickpb.OpType_OP_RENAME, Parent: p, Name: nm,
					NewParent: pickDir(), NewName: names[rng.IntN(len(names))], Flags: uint32(rng.IntN(2) * renameExchange)}
			}
			switch f.op.Type {
			case brickpb.OpType_OP_CREATE, brickpb.OpType_OP_MKDIR, brickpb.OpType_OP_LINK:
				f.adds = true
			case brickpb.OpType_OP_RENAME:
				f.adds = f.op.Flags&renameExchange == 0
			}
			f.done = c.Begin(f.op)
			flights = append(flights, f)
		case r < 5: // begin a listing
			l := c.StartListing()
			flights = append(flights, &flight{listing: &l, listFID: pickDir()})
		case r < 8 && len(flights) > 0: // sequence or finish one
			i := rng.IntN(len(flights))
			f := flights[i]
			if f.listing != nil {
				if f.entries == nil && rng.IntN(2) == 0 {
					f.entries = []*brickpb.DirEntry{} // served now
					for nm := range dirs[f.listFID] {
						f.entries = append(f.entries, &brickpb.DirEntry{Name: nm})
					}
					continue
				}
				if f.entries != nil {
					if _, ok := dirs[f.listFID]; ok {
						c.Listed(*f.listing, f.listFID, f.entries)
					}
				}
				flights = append(flights[:i], flights[i+1:]...)
				continue
			}
			if !f.applied && f.err == nil {
				switch rng.IntN(6) {
				case 0: // lost before it was sequenced
					f.err = errors.New("not sequenced")
				case 1: // sequenced, but the answer is lost
					apply(f.op)
					f.applied, f.err = true, errors.New("answer lost")
				default:
					f.res, f.applied = apply(f.op), true
				}
				continue
			}
			f.done(f.res, f.err)
			flights = append(flights[:i], flights[i+1:]...)
		default: // check
			for _, p := range append(slices.Sorted(maps.Keys(isDir)), 1<<40) {
				if c.Empty(p) {
					if len(dirs[p]) > 0 {
						t.Fatalf("step %d: cache says %d is empty; it holds %v", step, p, slices.Sorted(maps.Keys(dirs[p])))
					}
					for _, f := range flights {
						if f.op != nil && f.adds && !f.applied && f.err == nil &&
							(f.op.Parent == p && f.op.Type != brickpb.OpType_OP_RENAME || f.op.NewParent == p) {
							t.Fatalf("step %d: cache says %d is empty while %v may add to it", step, p, f.op.Type)
						}
					}
				}
				for _, nm := range names {
					if !c.Absent(p, nm) {
						continue
					}
					if _, ok := dirs[p][nm]; ok {
						t.Fatalf("step %d: cache says %d/%s is absent; it exists", step, p, nm)
					}
					for _, f := range flights {
						if f.op == nil || !f.adds || f.applied || f.err != nil {
							continue
						}
						tp, tn := f.op.Parent, f.op.Name
						if f.op.Type == brickpb.OpType_OP_RENAME {
							tp, tn = f.op.NewParent, f.op.NewName
						}
						if tp == p && tn == nm {
							t.Fatalf("step %d: cache says %d/%s is absent while %v may add it", step, p, nm, f.op.Type)
						}
					}
				}
			}
		}
	}
}

// Empty: only a complete directory with no name in it and none being
// added; a removed directory is forgotten by the fid its RMDIR names.
func TestEmpty(t *testing.T) {
	c := New(100)
	if c.Empty(7) {
		t.Fatal("empty: a directory the cache knows nothing of")
	}
	mk := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "d", Fid: 7})
	if c.Empty(7) {
		t.Fatal("empty: a directory whose MKDIR is in flight")
	}
	mk(&brickpb.OpResult{Seq: 3}, nil)
	if !c.Empty(7) {
		t.Fatal("a new directory is not empty")
	}
	add := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 7, Name: "x", Fid: 8})
	if c.Empty(7) {
		t.Fatal("empty while a name is being added")
	}
	add(&brickpb.OpResult{Seq: 4}, nil)
	rm := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: 7, Name: "x"})
	if c.Empty(7) {
		t.Fatal("empty before the unlink of its last name returned")
	}
	rm(&brickpb.OpResult{Errno: uint32(syscall.EIO)}, nil)
	if c.Empty(7) {
		t.Fatal("empty after the unlink of its last name failed")
	}
	rm = c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: 7, Name: "x"})
	rm(&brickpb.OpResult{Seq: 6}, nil)
	if !c.Empty(7) {
		t.Fatal("not empty after its last name was unlinked")
	}
	rmdir := c.Begin(&brickpb.Op{Type: brickpb.OpType_OP_RMDIR, Parent: 1, Name: "d", Fid: 7})
	rmdir(&brickpb.OpResult{Seq: 7}, nil)
	if c.Empty(7) || c.Absent(7, "y") {
		t.Fatal("a removed directory is still known")
	}
	if New(0).Empty(1) {
		t.Fatal("a disabled cache answered")
	}
}
