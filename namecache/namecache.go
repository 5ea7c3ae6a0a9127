// Package namecache lets a volume's head answer "no such name" without a
// round trip to a brick.
//
// Every mutating op of a volume passes through its head in one order, so
// the head can know a directory's whole listing: a directory it created
// itself (empty at its MKDIR) or one whose full listing it read while no
// name was being added anywhere. For such a complete directory the cache
// keeps a superset of its names; a name outside that superset cannot exist,
// and the head answers its LOOKUP with ENOENT at once. That is the LOOKUP
// the kernel sends before every create, half of the round trips of a new
// file (docs/benchmarks.md).
//
// The superset is kept conservatively, which is the whole argument:
//   - a name is added before the op that may create it is submitted, so no
//     moment exists at which the name is present and not in the set;
//   - a name is removed only after an UNLINK or RMDIR of it succeeded at
//     sequence s, and only when no op that adds it is in flight or was
//     sequenced after s (an add whose sequence is unknown pins the name);
//   - RENAME adds its new name and never removes the old one (renaming one
//     hard link over another removes nothing), a failed op removes nothing;
//   - anything the cache cannot account for leaves a name in, which costs
//     a lookup at the brick, never a wrong answer.
//
// The cache is only as good as the head's right to answer: the caller
// consults it only while the head holds its epoch (see mounter's backend).
// It is bounded: past its size, whole directories are forgotten (they are
// just no longer complete).
package namecache

import (
	"cmp"
	"math"
	"sync"

	"github.com/brickvol/brick/proto/brickpb"
)

// Cache is safe for concurrent use. The zero value is not usable: use New.
type Cache struct {
	max     int // most names held; 0 disables the cache
	maxList int // most entries a listing may have to make its directory complete

	mu       sync.Mutex
	dirs     map[uint64]map[string]*name // complete directories by file ID
	born     map[uint64]bool             // directories whose MKDIR is in flight: true once an add into one began
	names    int                         // names held, over every directory
	adds     uint64                      // name-adding ops begun, ever
	inflight int                         // name-adding ops begun and not done

	hits, misses uint64
}

// name is what the cache knows of one name of a complete directory.
type name struct {
	pending int    // adding ops in flight
	lastAdd uint64 // sequence of the last adding op done; MaxUint64 if unknown
}

// New returns a cache holding at most max names (0 disables it).
// Directories with more than max/4 entries are never made complete from a
// listing, so one huge directory cannot flush the rest.
func New(max int) *Cache {
	return &Cache{max: max, maxList: max / 4, dirs: make(map[uint64]map[string]*name), born: make(map[uint64]bool)}
}

// Absent reports whether name certainly does not exist in directory parent
// as of every op begun so far.
func (c *Cache) Absent(parent uint64, nm string) bool {
	if c.max == 0 || !validName(nm) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.dirs[parent]
	if !ok {
		c.misses++
		return false
	}
	_, present := d[nm]
	if present {
		c.misses++
	} else {
		c.hits++
	}
	return !present
}

// Empty reports whether directory dir certainly holds no name as of every
// op begun so far: it is complete and its superset of names is empty (no
// name in it, none being added).
func (c *Cache) Empty(dir uint64) bool {
	if c.max == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.dirs[dir]
	return ok && len(d) == 0
}

// Stats returns how many lookups the cache answered and how many it
// passed on (not complete, or the name is present), and the names held.
func (c *Cache) Stats() (hits, misses uint64, names int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses, c.names
}

// validName: only names a directory can hold are answered from the cache;
// anything else goes to the brick, which says what is wrong with it.
func validName(nm string) bool {
	if nm == "" || nm == "." || nm == ".." || len(nm) > 255 {
		return false
	}
	for i := 0; i < len(nm); i++ {
		if nm[i] == '/' || nm[i] == 0 {
			return false
		}
	}
	return true
}

// Begin is called before op is submitted to the head; the returned func
// must be called exactly once with what the submission returned (the op's
// result and error). op is only read, and only by Begin and the returned
// func after the submission returned.
func (c *Cache) Begin(op *brickpb.Op) func(res *brickpb.OpResult, err error) {
	if c.max == 0 {
		return func(*brickpb.OpResult, error) {}
	}
	switch op.GetType() {
	case brickpb.OpType_OP_CREATE, brickpb.OpType_OP_MKDIR, brickpb.OpType_OP_MKNOD,
		brickpb.OpType_OP_SYMLINK, brickpb.OpType_OP_LINK:
		parent, nm, fid := op.Parent, op.Name, op.Fid
		mkdir := op.Type == brickpb.OpType_OP_MKDIR && fid != 0
		c.beginAdd(parent, nm)
		if mkdir {
			c.mu.Lock()
			c.born[fid] = false
			c.mu.Unlock()
		}
		return func(res *brickpb.OpResult, err error) {
			seq, ok := seqOf(op, res, err)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.endAdd(parent, nm, seq)
			if !mkdir {
				return
			}
			// Empty at its MKDIR; complete unless somebody who looked the
			// new name up meanwhile began adding to it.
			if tainted, ok2 := c.born[fid]; ok2 && !tainted && ok && res.GetErrno() == 0 {
				if _, known := c.dirs[fid]; !known {
					c.complete(fid, nil)
				}
			}
			delete(c.born, fid)
		}
	case brickpb.OpType_OP_RENAME:
		if op.Flags&renameExchange != 0 {
			return func(*brickpb.OpResult, error) {} // both names exist before and after
		}
		parent, nm := op.NewParent, op.NewName
		c.beginAdd(parent, nm)
		return func(res *brickpb.OpResult, err error) {
			seq, _ := seqOf(op, res, err)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.endAdd(parent, nm, seq)
		}
	case brickpb.OpType_OP_UNLINK, brickpb.OpType_OP_RMDIR:
		parent, nm, rmdir := op.Parent, op.Name, op.Type == brickpb.OpType_OP_RMDIR
		return func(res *brickpb.OpResult, err error) {
			seq, ok := seqOf(op, res, err)
			if !ok || res.GetErrno() != 0 || seq == math.MaxUint64 {
				return
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if d, ok := c.dirs[parent]; ok {
				if e, ok := d[nm]; ok && e.pending == 0 && e.lastAdd < seq {
					delete(d, nm)
					c.names--
				}
			}
			if rmdir {
				// Gone: nothing more will be asked of it. The op names
				// it when the caller knew it, a brick's result may.
				if fid := cmp.Or(op.Fid, res.GetAttr().GetFid()); fid != 0 {
					c.forget(fid)
				}
			}
		}
	}
	return func(*brickpb.OpResult, error) {}
}

// renameExchange is Linux's RENAME_EXCHANGE.
const renameExchange = 2

// seqOf is the sequence op was applied at: ok is false when the submission
// failed outright (the op may or may not have been sequenced, so the
// sequence is unknown: MaxUint64).
func seqOf(op *brickpb.Op, res *brickpb.OpResult, err error) (seq uint64, ok bool) {
	if err != nil || res == nil {
		return math.MaxUint64, false
	}
	if res.Seq != 0 {
		return res.Seq, true
	}
	if op.Seq != 0 {
		return op.Seq, true
	}
	return math.MaxUint64, true
}

func (c *Cache) beginAdd(parent uint64, nm string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.adds++
	c.inflight++
	if _, ok := c.born[parent]; ok {
		c.born[parent] = true
	}
	if e := c.entryOf(parent, nm); e != nil {
		e.pending++
		c.bound()
	}
}

// entryOf returns nm's record in directory parent, adding it, or nil when
// parent is not complete. Caller holds mu.
func (c *Cache) entryOf(parent uint64, nm string) *name {
	d, ok := c.dirs[parent]
	if !ok {
		return nil
	}
	e, ok := d[nm]
	if !ok {
		e = &name{}
		d[nm] = e
		c.names++
	}
	return e
}

// endAdd: caller holds mu.
func (c *Cache) endAdd(parent uint64, nm string, seq uint64) {
	c.inflight--
	// The name is there unless the directory was forgotten meanwhile (a
	// directory is never made complete again while an add is in flight;
	// were it, a present name would still be the safe reading).
	if e := c.entryOf(parent, nm); e != nil {
		if e.pending > 0 {
			e.pending--
		}
		e.lastAdd = max(e.lastAdd, seq)
	}
}

// Listing is a token for a directory listing about to be read; see Listed.
type Listing struct {
	adds uint64
	ok   bool
}

// StartListing is called before a directory listing is requested.
func (c *Cache) StartListing() Listing {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Listing{adds: c.adds, ok: c.max > 0 && c.inflight == 0}
}

// Listed makes directory fid complete with the names of its full listing,
// read after l was taken, provided no name-adding op was in flight when l
// was taken or began since: then the listing holds every name that can
// exist. A directory already complete keeps what it has.
func (c *Cache) Listed(l Listing, fid uint64, entries []*brickpb.DirEntry) {
	if !l.ok || fid == 0 || len(entries) > c.maxList {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.adds != l.adds || c.inflight != 0 {
		return
	}
	if _, ok := c.dirs[fid]; ok {
		return
	}
	c.complete(fid, entries)
}

// complete records directory fid, not complete yet, as complete with
// entries. Caller holds mu.
func (c *Cache) complete(fid uint64, entries []*brickpb.DirEntry) {
	d := make(map[string]*name, len(entries))
	for _, e := range entries {
		if e.GetName() != "." && e.GetName() != ".." {
			d[e.GetName()] = &name{}
		}
	}
	c.dirs[fid] = d
	c.names += len(d)
	c.bound()
}

// forget drops directory fid. Caller holds mu.
func (c *Cache) forget(fid uint64) {
	if d, ok := c.dirs[fid]; ok {
		c.names -= len(d)
		delete(c.dirs, fid)
	}
}

// bound forgets directories until at most 3/4 of max names are held, once
// more than max are. Caller holds mu.
func (c *Cache) bound() {
	if c.names <= c.max {
		return
	}
	for fid := range c.dirs {
		if c.names <= c.max*3/4 {
			return
		}
		c.forget(fid)
	}
}
