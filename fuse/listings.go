package fuse

import (
	"sync"
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
	ls := &listing{until: l.now().Add(l.ttl), entries: make(map[string]*brickpb.Attr, len(entries))}
	for _, e := range entries {
		a := e.GetAttr()
		if a == nil || a.Fid == 0 || a.Fid != e.Fid || e.Name == "" {
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
	for _, at := range []entryName{{op.Parent, op.Name}, {op.NewParent, op.NewName}} {
		if ls := l.dirs[at.dir]; ls != nil && at.name != "" {
			if a := ls.entries[at.name]; a != nil {
				l.dropFID(a.Fid)
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
