package fuse

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
)

// UsageReporter is an optional Backend extension: a Backend that knows how
// many bytes the volume holds implements it, and the file system then
// reports the quota in statfs and enforces it (see the package doc).
type UsageReporter interface {
	// UsedBytes returns the bytes the volume holds against its quota: the
	// sum of the logical sizes of its regular files, counting each file ID
	// once (hard links) and including files unlinked but not yet
	// forgotten, after every op submitted before the call. It is called
	// once per growing write, truncate or fallocate, under a lock, so it
	// should be cheap, and it must never do I/O on the mount.
	UsedBytes(ctx context.Context) (int64, error)
}

// quota admits growing ops against a byte limit. Admission reads the
// backend's usage and adds what the admitted ops still in Do may grow their
// files by, which the backend may not count yet; an op's share is released
// once Do returns (the backend counts it from then on). Counting an op twice
// for a moment is possible, counting it never is not, so concurrent writers
// cannot overshoot the quota together; an op that only such shares keep out
// waits for them to be released before it is refused.
//
// An op's share is how far it reaches past the file's size and past every
// op of the same file admitted before it and still in flight, so a file's
// ops in flight hold together its furthest reach. The kernel writes a file
// back in many concurrent requests, out of order; when each held its whole
// growth past the size the node last knew, the same bytes were counted over
// and over (sixteen 1 MiB writes in flight held 136 MiB), which refused
// sequential writes into a volume with room to spare. The share also goes
// to the backend with a write (Op.growth), so that a backend that counts
// ops it has not applied yet counts an overwrite as nothing.
type quota struct {
	limit atomic.Int64  // bytes; 0 = no quota (changes online: SetQuotaBytes)
	usage UsageReporter // nil = the backend cannot say; not enforced

	// refuseAtOnce (unit tests) refuses at once what only the shares of
	// ops in flight keep out, instead of waiting for them (admit).
	refuseAtOnce bool

	mu      sync.Mutex
	pending int64         // sum of every file's growth.held
	inDo    int           // admitted ops not released yet
	freed   chan struct{} // closed and dropped by every release; made by a waiting admit
}

// growth is one file's part of quota.pending, guarded by quota.mu.
type growth struct {
	inflight int   // admitted growing ops of the file still in Do
	far      int64 // the furthest end admitted since inflight was last 0
	held     int64 // bytes of pending held for the file
}

// enforced reports whether admit can refuse anything.
func (q *quota) enforced() bool { return q.limit.Load() > 0 && q.usage != nil }

// admit reserves room for an op that takes a file (g, whose known size
// sizeOf reads; it is called under quota.mu) to end, or fails with ENOSPC
// when it does not fit. It returns the op's share (-1 when no quota is
// enforced: nothing was reckoned) and a release to call once the op has
// returned from Do, saying whether it succeeded. A non-errno error is a
// UsedBytes failure.
func (q *quota) admit(ctx context.Context, g *growth, sizeOf func() int64, end int64) (share int64, release func(ok bool), err error) {
	if !q.enforced() {
		return -1, func(bool) {}, nil
	}
	if end <= sizeOf() {
		return 0, func(bool) {}, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	waits := -1
	var from int64
	for {
		used, err := q.usage.UsedBytes(ctx)
		if err != nil {
			return 0, nil, err
		}
		// Read afresh after a wait: ops of the file that were released
		// meanwhile grew it.
		from = sizeOf()
		if g.inflight > 0 {
			from = max(from, g.far)
		}
		// An op within what the file's ops in flight already hold takes
		// nothing more: it passes even when the backend counts some of
		// them twice for a moment.
		share = max(end-from, 0)
		limit := q.limit.Load()
		if share == 0 || used+q.pending+share <= limit {
			break
		}
		// An op that returned from Do is counted by the backend before
		// its release, so for a moment the shares of ops in flight may
		// count twice: with a dozen 1 MiB write-backs in flight that
		// could refuse writes that fit. When only those shares keep this op
		// out, wait for the ops in flight now to be released (a release
		// each at most, so the wait ends) and look again.
		if waits < 0 {
			waits = q.inDo
		}
		if used+share > limit || waits == 0 || q.refuseAtOnce {
			return 0, nil, syscall.ENOSPC
		}
		waits--
		if q.freed == nil {
			q.freed = make(chan struct{})
		}
		freed := q.freed
		q.mu.Unlock()
		<-freed
		q.mu.Lock()
	}
	q.inDo++
	g.inflight++
	g.far = max(from, end)
	g.held += share
	q.pending += share
	var once sync.Once
	return share, func(ok bool) {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			q.inDo--
			if q.freed != nil {
				close(q.freed)
				q.freed = nil
			}
			g.inflight--
			switch {
			case g.inflight == 0:
				// Every op of the file returned: the backend counts
				// whatever of them was applied.
				q.pending -= g.held
				g.held, g.far = 0, 0
			case ok:
				// Applied or sequenced, so the backend counts the file
				// to end (a file's usage is its size), covering every
				// op admitted before this one too.
				g.held -= share
				q.pending -= share
			}
			// A failed op keeps its share while ops admitted after it,
			// which counted on its reach, are in flight.
		})
	}, nil
}

// used returns the bytes used, or ok=false when the backend cannot say.
func (q *quota) used(ctx context.Context) (used int64, ok bool, err error) {
	if q.usage == nil {
		return 0, false, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	used, err = q.usage.UsedBytes(ctx)
	return used + q.pending, err == nil, err
}
