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
// backend's usage and adds the growth of every admitted op the backend may
// not count yet; an admitted op's growth is released once Do returns (the
// backend counts it from then on). Counting an op twice for a moment is
// possible, counting it never is not, so concurrent writers cannot
// overshoot the quota together.
type quota struct {
	limit atomic.Int64  // bytes; 0 = no quota (changes online: SetQuotaBytes)
	usage UsageReporter // nil = the backend cannot say; not enforced

	mu      sync.Mutex
	pending int64 // growth of admitted ops still in Do
}

// enforced reports whether admit can refuse anything.
func (q *quota) enforced() bool { return q.limit.Load() > 0 && q.usage != nil }

// admit reserves grow bytes, or fails with ENOSPC when they do not fit.
// The returned release must be called once the op has returned from Do,
// whatever its outcome. A non-errno error is a UsedBytes failure.
func (q *quota) admit(ctx context.Context, grow int64) (release func(), err error) {
	if grow <= 0 || !q.enforced() {
		return func() {}, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	used, err := q.usage.UsedBytes(ctx)
	if err != nil {
		return nil, err
	}
	if used+q.pending+grow > q.limit.Load() {
		return nil, syscall.ENOSPC
	}
	q.pending += grow
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			q.pending -= grow
			q.mu.Unlock()
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
