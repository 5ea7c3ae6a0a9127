package fuse

import (
	"context"
	"errors"
	"runtime"
	"syscall"
	"testing"
)

// fixedUsage is a backend that counts used bytes as the test says.
type fixedUsage struct{ used int64 }

func (u *fixedUsage) UsedBytes(context.Context) (int64, error) { return u.used, nil }

// fixed is a file size that does not change.
func fixed(size int64) func() int64 { return func() int64 { return size } }

// The kernel writes a file back in many requests at once, each reaching
// past the size the file had when it was admitted. Together they hold how
// far the furthest reaches, not the sum of their growths.
func TestQuotaConcurrentGrowthHeldOnce(t *testing.T) {
	const mib = 1 << 20
	u := &fixedUsage{used: 100 * mib}
	q := &quota{usage: u, refuseAtOnce: true}
	q.limit.Store(117 * mib)
	var g growth
	ctx := context.Background()

	var releases []func(bool)
	for i := int64(1); i <= 16; i++ { // 1+2+...+16 = 136 MiB if summed
		share, rel, err := q.admit(ctx, &g, fixed(0), i*mib)
		if err != nil {
			t.Fatalf("write %d of 16 (end %d MiB, 100 MiB used of 117): %v", i, i, err)
		}
		if share != mib {
			t.Errorf("write %d: share %d, want 1 MiB", i, share)
		}
		releases = append(releases, rel)
	}
	if q.pending != 16*mib {
		t.Errorf("pending %d MiB with 16 MiB in flight, want 16", q.pending/mib)
	}
	// Another file cannot take the room the first one holds.
	var other growth
	if _, _, err := q.admit(ctx, &other, fixed(0), 2*mib); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("second file growing 2 MiB into 1 MiB of room: %v, want ENOSPC", err)
	}
	// Out of order now: a write far past the rest, then the gap.
	far, err := func() (func(bool), error) {
		_, rel, err := q.admit(ctx, &g, fixed(0), 17*mib)
		return rel, err
	}()
	if err != nil {
		t.Fatalf("the 17th MiB into the last MiB of room: %v", err)
	}
	u.used += mib // the backend counts the far write before it returns
	share, gap, err := q.admit(ctx, &g, fixed(0), 17*mib-4096)
	if err != nil || share != 0 {
		t.Fatalf("a write within the reach held, the backend counting the far one twice: share %d, %v; want 0, nil", share, err)
	}
	u.used -= mib
	releases = append(releases, far, gap)
	// Writes return out of order; the backend counts each from then on.
	for _, i := range []int{3, 0, 15, 7} {
		u.used = max(u.used, 100*mib+int64(i+1)*mib)
		releases[i](true)
		releases[i](true) // a second call changes nothing
		if u.used+q.pending < 117*mib {
			t.Errorf("after write %d returned: used %d + pending %d MiB, less than the 117 the file may reach",
				i+1, u.used/mib, q.pending/mib)
		}
	}
	for i, rel := range releases {
		rel(i%2 == 0)
	}
	if q.pending != 0 || g != (growth{}) {
		t.Errorf("after every release: pending %d, growth %+v; want all zero", q.pending, g)
	}
}

// A write that failed keeps its share while a write admitted after it,
// which counted on its reach, is in flight.
func TestQuotaFailedGrowthHeldForLaterOps(t *testing.T) {
	u := &fixedUsage{used: 50}
	q := &quota{usage: u, refuseAtOnce: true}
	q.limit.Store(100)
	var g growth
	ctx := context.Background()
	_, far, err := q.admit(ctx, &g, fixed(10), 60) // grows by 50: exactly fits
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.admit(ctx, &g, fixed(10), 61); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("reaching one byte further than the room: %v, want ENOSPC", err)
	}
	share, near, err := q.admit(ctx, &g, fixed(10), 40) // within the reach already held
	if err != nil || share != 0 {
		t.Fatalf("a write within what the file holds: share %d, %v; want 0, nil", share, err)
	}
	far(false) // never applied
	if q.pending != 50 {
		t.Errorf("pending %d once the far write failed with a nearer one in flight, want 50", q.pending)
	}
	near(true)
	if q.pending != 0 || g != (growth{}) {
		t.Errorf("after both returned: pending %d, growth %+v; want all zero", q.pending, g)
	}
	u.used = 80 // the near write grew the file by 30
	if _, _, err := q.admit(ctx, &g, fixed(40), 61); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("growing 21 bytes into 20 of room: %v, want ENOSPC", err)
	}
	// Overwrites within the size never consult the quota, and say so.
	u.used = 1000
	if share, rel, err := q.admit(ctx, &g, fixed(40), 40); err != nil || share != 0 {
		t.Errorf("overwrite within the size over the quota: share %d, %v; want 0, nil", share, err)
	} else {
		rel(true)
	}
	// Without a quota nothing is reckoned.
	q.limit.Store(0)
	if share, _, err := q.admit(ctx, &g, fixed(40), 400); err != nil || share != -1 {
		t.Errorf("no quota: share %d, %v; want -1, nil", share, err)
	}
}

// An op that returned from Do is counted by the backend before its share
// is released. A write that only those shares keep out waits for the ops
// in flight, and is refused only if it still does not fit once they are
// released; one that does not fit even without them is refused at once.
func TestQuotaWaitsForSharesInFlight(t *testing.T) {
	u := &fixedUsage{used: 0}
	q := &quota{usage: u}
	q.limit.Store(64)
	var a, b growth
	ctx := context.Background()
	_, relA, err := q.admit(ctx, &a, fixed(0), 40)
	if err != nil {
		t.Fatal(err)
	}
	u.used = 40 // a's op returned from Do: counted, not yet released

	got := make(chan admitResult, 1)
	go func() {
		share, rel, err := q.admit(ctx, &b, fixed(0), 20) // 40 + 40 + 20 > 64, 40 + 20 fits
		got <- admitResult{share, rel, err}
	}()
	awaitWaiting(t, q, got, "a write that fits once the op in flight is released")
	relA(true)
	r := <-got
	if r.err != nil || r.share != 20 {
		t.Fatalf("after the release: share %d, %v; want 20, nil", r.share, r.err)
	}
	u.used = 60
	r.rel(true)

	// Past the room even without the shares in flight: refused at once.
	_, relC, err := q.admit(ctx, &a, fixed(40), 44)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.admit(ctx, &b, fixed(20), 30); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("growing 10 into 4 of room: %v, want ENOSPC", err)
	}
	// Kept out only by a share in flight that the backend does not count
	// twice: refused once that op is released.
	go func() {
		_, _, err := q.admit(ctx, &b, fixed(20), 22)
		got <- admitResult{err: err}
	}()
	awaitWaiting(t, q, got, "a write kept out by a share in flight")
	u.used = 64
	relC(true)
	if r := <-got; !errors.Is(r.err, syscall.ENOSPC) {
		t.Errorf("growing 2 into a full volume after the op in flight returned: %v, want ENOSPC", r.err)
	}
	if q.pending != 0 || q.inDo != 0 {
		t.Errorf("pending %d, in Do %d after every release; want 0, 0", q.pending, q.inDo)
	}
}

// admitResult is what an admit run in a goroutine returned.
type admitResult struct {
	share int64
	rel   func(bool)
	err   error
}

// awaitWaiting returns once an admit waits for a release (it made
// q.freed); what must wait fails the test if its admit returns first.
func awaitWaiting(t *testing.T, q *quota, got <-chan admitResult, what string) {
	t.Helper()
	for {
		q.mu.Lock()
		waiting := q.freed != nil
		q.mu.Unlock()
		if waiting {
			return
		}
		select {
		case r := <-got:
			t.Fatalf("%s: share %d, %v; want it to wait", what, r.share, r.err)
		default:
		}
		runtime.Gosched()
	}
}
