package fuse

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

// fixedUsage is a backend that counts used bytes as the test says.
type fixedUsage struct{ used int64 }

func (u *fixedUsage) UsedBytes(context.Context) (int64, error) { return u.used, nil }

// The kernel writes a file back in many requests at once, each reaching
// past the size the file had when it was admitted. Together they hold how
// far the furthest reaches, not the sum of their growths.
func TestQuotaConcurrentGrowthHeldOnce(t *testing.T) {
	const mib = 1 << 20
	u := &fixedUsage{used: 100 * mib}
	q := &quota{usage: u}
	q.limit.Store(117 * mib)
	var g growth
	ctx := context.Background()

	var releases []func(bool)
	for i := int64(1); i <= 16; i++ { // 1+2+...+16 = 136 MiB if summed
		share, rel, err := q.admit(ctx, &g, 0, i*mib)
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
	if _, _, err := q.admit(ctx, &other, 0, 2*mib); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("second file growing 2 MiB into 1 MiB of room: %v, want ENOSPC", err)
	}
	// Out of order now: a write far past the rest, then the gap.
	far, err := func() (func(bool), error) {
		_, rel, err := q.admit(ctx, &g, 0, 17*mib)
		return rel, err
	}()
	if err != nil {
		t.Fatalf("the 17th MiB into the last MiB of room: %v", err)
	}
	u.used += mib // the backend counts the far write before it returns
	share, gap, err := q.admit(ctx, &g, 0, 17*mib-4096)
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
	q := &quota{usage: u}
	q.limit.Store(100)
	var g growth
	ctx := context.Background()
	_, far, err := q.admit(ctx, &g, 10, 60) // grows by 50: exactly fits
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.admit(ctx, &g, 10, 61); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("reaching one byte further than the room: %v, want ENOSPC", err)
	}
	share, near, err := q.admit(ctx, &g, 10, 40) // within the reach already held
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
	if _, _, err := q.admit(ctx, &g, 40, 61); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("growing 21 bytes into 20 of room: %v, want ENOSPC", err)
	}
	// Overwrites within the size never consult the quota, and say so.
	u.used = 1000
	if share, rel, err := q.admit(ctx, &g, 40, 40); err != nil || share != 0 {
		t.Errorf("overwrite within the size over the quota: share %d, %v; want 0, nil", share, err)
	} else {
		rel(true)
	}
	// Without a quota nothing is reckoned.
	q.limit.Store(0)
	if share, _, err := q.admit(ctx, &g, 40, 400); err != nil || share != -1 {
		t.Errorf("no quota: share %d, %v; want -1, nil", share, err)
	}
}
