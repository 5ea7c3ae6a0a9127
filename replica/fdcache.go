package replica

import (
	"container/list"
	"sync"
)

// fdCache keeps open descriptors of recently used directories and regular
// files, keyed by file ID. A descriptor follows its inode, so a cached
// directory stays right across renames of it or of its ancestors; file IDs
// are never reused, so the only invalidations are RMDIR, a directory
// replaced by RENAME, and FORGET (evict).
//
// Entries are reference counted: a descriptor is closed only when it is
// both out of the cache and no longer used, so a reader never sees its
// descriptor number reused under it. Safe for concurrent use.
type fdCache struct {
	mu  sync.Mutex
	max int
	gen uint64 // bumped by every evict
	m   map[uint64]*list.Element
	lru *list.List // of *openFD, most recent first
}

// openFD is one descriptor handed out by the cache; release it when done.
type openFD struct {
	fid    uint64
	fd     int
	dir    bool
	refs   int
	cached bool
	c      *fdCache
}

func newFDCache(max int) *fdCache {
	return &fdCache{max: max, m: make(map[uint64]*list.Element), lru: list.New()}
}

// get returns the cached descriptor of fid, or nil.
func (c *fdCache) get(fid uint64) *openFD {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[fid]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(el)
	o := el.Value.(*openFD)
	o.refs++
	return o
}

// generation is read before opening a descriptor and passed to put, so
// that a descriptor opened before a concurrent evict is not cached.
func (c *fdCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put hands fd (now owned by the cache) out with one reference, caching it
// unless fid was evicted since gen or is already cached.
func (c *fdCache) put(fid uint64, fd int, dir bool, gen uint64) *openFD {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := &openFD{fid: fid, fd: fd, dir: dir, refs: 1, c: c}
	if _, dup := c.m[fid]; dup || gen != c.gen || c.max <= 0 {
		return o
	}
	o.cached = true
	c.m[fid] = c.lru.PushFront(o)
	for c.lru.Len() > c.max {
		c.dropLocked(c.lru.Back())
	}
	return o
}

// release drops one reference to o.
func (o *openFD) release() {
	c := o.c
	if c == nil {
		return // the root directory: owned by the Replica
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	o.refs--
	if o.refs == 0 && !o.cached {
		closeFD(o.fd)
	}
}

// evict drops fid from the cache.
func (c *fdCache) evict(fid uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if el, ok := c.m[fid]; ok {
		c.dropLocked(el)
	}
}

func (c *fdCache) dropLocked(el *list.Element) {
	o := el.Value.(*openFD)
	c.lru.Remove(el)
	delete(c.m, o.fid)
	o.cached = false
	if o.refs == 0 {
		closeFD(o.fd)
	}
}

// closeAll empties the cache; descriptors still referenced close on their
// last release.
func (c *fdCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for c.lru.Len() > 0 {
		c.dropLocked(c.lru.Back())
	}
}
