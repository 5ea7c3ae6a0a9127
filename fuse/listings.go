package fuse

import (
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// listings keeps the attributes a directory listing brought along, so the
// LOOKUP the kernel sends for each name right after (ls -l, find, du,
// rm -r: readdirplus, then a lookup per entry) needs no round trip each.
//
// Only on a volume this host alone writes: every change then passes
// through this file system, which drops what it touches (touch), so a kept
// entry is what the backend would answer, for as long as the kernel may
// cache an answer anyway (the attribute timeout). The argument, per
// change M and listing L: M touches before it is submitted and again
// after it returned. If M was sequenced after L's request, its second
// touch comes after L's request began: before L is kept (the change count
// moved: L is not kept) or after (it drops what M changed from L).
type listings struct {
	ttl     time.Duration
	max     int // entries kept at most, over every directory
	maxList int // longest listing kept
	now     func() time.Time

	mu      sync.Mutex
	misses  map[uint64]time.Time   // directories with a lookup the listings could not answer, and when
	changes uint64                 // touches, ever
	dirs    map[uint64]*listing    // by directory file ID
	byFID   map[uint64][]entryName // where each file ID is kept
	held    int                    // entries kept
}

type listing struct {
	until   time.Time
	entries map[string]*brickpb.Attr
	// whole: entries is still the directory's whole listing (every name
	// kept, none added, removed or dropped since), so it may answer
	// another listing of the directory (list).
	whole bool
}

type entryName struct {
	dir  uint64
	name string
}

func newListings(ttl time.Duration, max int) *listings {
	return &listings{ttl: ttl, max: max, maxList: max / 4, now: time.Now,
		dirs: map[uint64]*listing{}, byFID: map[uint64][]entryName{}, misses: map[uint64]time.Time{}}
}

// begin is called before a listing is requested; pass its result to keep.
func (l *listings) begin() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changes
}

// keep records the listing of directory dir requested after begin
// returned since, unless something changed meanwhile.
func (l *listings) keep(dir, since uint64, entries []*brickpb.DirEntry) {
	if len(entries) > l.maxList {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changes != since {
		return
	}
	l.dropDir(dir)
	if l.held+len(entries) > l.max {
		l.expire()
		if l.held+len(entries) > l.max {
			return
		}
	}
	ls := &listing{until: l.now().Add(l.ttl), entries: make(map[string]*brickpb.Attr, len(entries)), whole: true}
	for _, e := range entries {
		a := e.GetAttr()
		if a == nil || a.Fid == 0 || a.Fid != e.Fid || e.Name == "" {
			ls.whole = false
			continue
		}
		ls.entries[e.Name] = a
		l.byFID[a.Fid] = append(l.byFID[a.Fid], entryName{dir, e.Name})
	}
	l.dirs[dir] = ls
	l.held += len(ls.entries)
}

// lookup returns the kept attributes of name in dir, or nil.
func (l *listings) lookup(dir uint64, name string) *brickpb.Attr {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.dirs[dir]
	if ls == nil {
		return nil
	}
	if !l.now().Before(ls.until) {
		l.dropDir(dir)
		return nil
	}
	return ls.entries[name]
}

// list returns the entries of dir's kept listing, sorted by name, when it
// is still the directory's whole listing and within its time to live: a
// directory opened again right after it was listed (rm -r opens each
// directory twice) is listed without a round trip.
func (l *listings) list(dir uint64) ([]*brickpb.DirEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.dirs[dir]
	if ls == nil || !ls.whole || !l.now().Before(ls.until) {
		return nil, false
	}
	out := make([]*brickpb.DirEntry, 0, len(ls.entries))
	for name, a := range ls.entries {
		out = append(out, &brickpb.DirEntry{Name: name, Fid: a.Fid, Mode: a.Mode & syscall.S_IFMT, Attr: a})
	}
	slices.SortFunc(out, func(a, b *brickpb.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, true
}

// missed records a lookup of an existing name in dir the listings could not
// answer and reports whether it was the second within the time to live:
// then the directory is being walked (stat of many names, after a dropped
// cache) and one listing answers the lookups that follow better than a
// round trip each.
func (l *listings) missed(dir uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if at, ok := l.misses[dir]; ok && now.Sub(at) < l.ttl {
		delete(l.misses, dir)
		return true
	}
	if len(l.misses) >= maxMisses {
		clear(l.misses)
	}
	l.misses[dir] = now
	return false
}

// maxMisses bounds the directories missed remembers.
const maxMisses = 1024

// touch drops everything op may change: the entries of every file ID it
// names (its file, its directories, which gain or lose names and times)
// and of whatever stands at the names it touches, and those names.
func (l *listings) touch(op *brickpb.Op) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes++
	if len(l.dirs) == 0 {
		return
	}
	for _, fid := range []uint64{op.Fid, op.Parent, op.NewParent} {
		if fid != 0 {
			l.dropFID(fid)
		}
	}
	// Names added to or removed from a directory: its listing is no
	// longer whole. A directory removed (RMDIR names it by Fid) or
	// replaced (the entry at a name, below) goes altogether.
	for _, dir := range []uint64{op.Parent, op.NewParent} {
		if ls := l.dirs[dir]; ls != nil {
			ls.whole = false
		}
	}
	if op.Type == brickpb.OpType_OP_RMDIR && op.Fid != 0 {
		l.dropDir(op.Fid)
	}
	for _, at := range []entryName{{op.Parent, op.Name}, {op.NewParent, op.NewName}} {
		if ls := l.dirs[at.dir]; ls != nil && at.name != "" {
			if a := ls.entries[at.name]; a != nil {
				l.dropFID(a.Fid)
				l.dropDir(a.Fid)
			}
		}
	}
}

// dropFID drops every entry of fid. Caller holds mu.
func (l *listings) dropFID(fid uint64) {
	for _, at := range l.byFID[fid] {
		if ls := l.dirs[at.dir]; ls != nil {
			if a, ok := ls.entries[at.name]; ok && a.Fid == fid {
				delete(ls.entries, at.name)
				l.held--
				ls.whole = false
			}
		}
	}
	delete(l.byFID, fid)
}

// dropDir drops directory dir's listing. Caller holds mu.
func (l *listings) dropDir(dir uint64) {
	ls := l.dirs[dir]
	if ls == nil {
		return
	}
	for name, a := range ls.entries {
		l.unindex(a.Fid, entryName{dir, name})
	}
	l.held -= len(ls.entries)
	delete(l.dirs, dir)
}

func (l *listings) unindex(fid uint64, at entryName) {
	ats := l.byFID[fid]
	for i, x := range ats {
		if x == at {
			ats[i] = ats[len(ats)-1]
			ats = ats[:len(ats)-1]
			break
		}
	}
	if len(ats) == 0 {
		delete(l.byFID, fid)
	} else {
		l.byFID[fid] = ats
	}
}

// expire drops the listings past their time. Caller holds mu.
func (l *listings) expire() {
	now := l.now()
	for dir, ls := range l.dirs {
		if !now.Before(ls.until) {
			l.dropDir(dir)
		}
	}
}
