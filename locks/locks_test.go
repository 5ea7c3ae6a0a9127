package locks

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const eof = math.MaxUint64

var (
	ownA  = Owner{"s1", 1}
	ownA2 = Owner{"s1", 2} // same session, another kernel owner
	ownB  = Owner{"s2", 1}
	ownC  = Owner{"s3", 7}
	// owners are the model's owners; s1 is the session the Mirror follows.
	owners = []Owner{ownA, ownA2, ownB, ownC}
)

// pidOf gives each owner its own pid, so Get's reported pid is checkable.
func pidOf(o Owner) uint32 {
	var h uint32
	for _, c := range o.Session {
		h = h*31 + uint32(c)
	}
	return h*1000 + uint32(o.ID)
}

func px(o Owner, ty Type, start, end uint64) Lock {
	return Lock{Kind: Posix, Type: ty, Owner: o, Pid: pidOf(o), Start: start, End: end}
}

func fl(o Owner, ty Type) Lock {
	return Lock{Kind: Flock, Type: ty, Owner: o, Pid: pidOf(o), Start: 0, End: eof}
}

// dump is every lock on fid, POSIX then flock, each in cmpLock order.
func dump(tab *Table, fid uint64) []Lock {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	f := tab.files[fid]
	if f == nil {
		return nil
	}
	return append(slices.Clone(f.posix), f.flock...)
}

func mustSet(t testing.TB, tab *Table, fid uint64, l Lock) {
	t.Helper()
	if err := tab.Set(fid, l); err != nil {
		t.Fatalf("Set(%d, %v): %v", fid, l, err)
	}
}

func TestPosixMergeSplitConvert(t *testing.T) {
	withPid := func(l Lock, pid uint32) Lock { l.Pid = pid; return l }
	cases := []struct {
		name  string
		steps []Lock
		want  []Lock
	}{
		{"merge adjacent", []Lock{px(ownA, Read, 0, 9), px(ownA, Read, 10, 19)},
			[]Lock{px(ownA, Read, 0, 19)}},
		{"merge overlapping", []Lock{px(ownA, Write, 0, 9), px(ownA, Write, 5, 14)},
			[]Lock{px(ownA, Write, 0, 14)}},
		{"merge both sides", []Lock{px(ownA, Read, 0, 9), px(ownA, Read, 20, 29), px(ownA, Read, 10, 19)},
			[]Lock{px(ownA, Read, 0, 29)}},
		{"no merge across a gap", []Lock{px(ownA, Read, 0, 9), px(ownA, Read, 11, 19)},
			[]Lock{px(ownA, Read, 0, 9), px(ownA, Read, 11, 19)}},
		{"different types touch but stay apart", []Lock{px(ownA, Read, 0, 9), px(ownA, Write, 10, 19)},
			[]Lock{px(ownA, Read, 0, 9), px(ownA, Write, 10, 19)}},
		{"convert the middle splits in three", []Lock{px(ownA, Write, 0, 99), px(ownA, Read, 40, 59)},
			[]Lock{px(ownA, Write, 0, 39), px(ownA, Read, 40, 59), px(ownA, Write, 60, 99)}},
		{"unlock the middle splits in two", []Lock{px(ownA, Write, 0, 99), px(ownA, Unlock, 40, 59)},
			[]Lock{px(ownA, Write, 0, 39), px(ownA, Write, 60, 99)}},
		{"unlock across two locks trims both", []Lock{px(ownA, Read, 0, 9), px(ownA, Write, 10, 19), px(ownA, Unlock, 5, 14)},
			[]Lock{px(ownA, Read, 0, 4), px(ownA, Write, 15, 19)}},
		{"upgrade in place", []Lock{px(ownA, Read, 0, 9), px(ownA, Write, 0, 9)},
			[]Lock{px(ownA, Write, 0, 9)}},
		{"downgrade in place", []Lock{px(ownA, Write, 0, 9), px(ownA, Read, 0, 9)},
			[]Lock{px(ownA, Read, 0, 9)}},
		{"convert bridges two reads", []Lock{px(ownA, Read, 0, 9), px(ownA, Write, 10, 19), px(ownA, Read, 20, 29), px(ownA, Read, 10, 19)},
			[]Lock{px(ownA, Read, 0, 29)}},
		{"to EOF swallows later locks", []Lock{px(ownA, Read, 10, 19), px(ownA, Write, 30, 39), px(ownA, Read, 5, eof)},
			[]Lock{px(ownA, Read, 5, eof)}},
		{"unlock to EOF", []Lock{px(ownA, Read, 10, eof), px(ownA, Unlock, 50, eof)},
			[]Lock{px(ownA, Read, 10, 49)}},
		{"unlock the first and last byte", []Lock{px(ownA, Write, 0, eof), px(ownA, Unlock, 0, 0), px(ownA, Unlock, eof, eof)},
			[]Lock{px(ownA, Write, 1, eof-1)}},
		{"adjacent at EOF merges", []Lock{px(ownA, Read, eof, eof), px(ownA, Read, 0, eof-1)},
			[]Lock{px(ownA, Read, 0, eof)}},
		{"unlock of nothing", []Lock{px(ownA, Unlock, 0, 9)}, nil},
		{"unlock everything", []Lock{px(ownA, Read, 0, 9), px(ownA, Write, 20, 29), px(ownA, Unlock, 0, eof)}, nil},
		{"other owners untouched", []Lock{px(ownA, Read, 0, 9), px(ownB, Read, 0, 9), px(ownA2, Read, 5, 19), px(ownA, Unlock, 0, 9)},
			[]Lock{px(ownB, Read, 0, 9), px(ownA2, Read, 5, 19)}},
		{"same session other owner does not merge", []Lock{px(ownA, Read, 0, 9), px(ownA2, Read, 10, 19)},
			[]Lock{px(ownA, Read, 0, 9), px(ownA2, Read, 10, 19)}},
		{"merged lock takes the new pid", []Lock{px(ownA, Read, 0, 9), withPid(px(ownA, Read, 10, 19), 999)},
			[]Lock{withPid(px(ownA, Read, 0, 19), 999)}},
		{"split pieces keep their pid", []Lock{px(ownA, Write, 0, 9), withPid(px(ownA, Read, 3, 5), 999)},
			[]Lock{px(ownA, Write, 0, 2), withPid(px(ownA, Read, 3, 5), 999), px(ownA, Write, 6, 9)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tab := New()
			m := NewMirror()
			for _, l := range c.steps {
				mustSet(t, tab, 1, l)
				if l.Owner.Session == "s1" {
					m.Apply(1, l)
				}
			}
			if got := dump(tab, 1); !slices.Equal(got, c.want) {
				t.Errorf("got  %v\nwant %v", got, c.want)
			}
			if tab.Len() != len(c.want) {
				t.Errorf("Len = %d, want %d", tab.Len(), len(c.want))
			}
			checkInvariants(t, tab)
			if got, want := m.All(), tab.Held("s1"); !slices.Equal(got, want) {
				t.Errorf("mirror %v\ntable  %v", got, want)
			}
		})
	}
}

func TestGetReportsConflict(t *testing.T) {
	tab := New()
	mustSet(t, tab, 1, px(ownA, Write, 10, 19))
	mustSet(t, tab, 1, px(ownA, Read, 50, 59))
	mustSet(t, tab, 1, px(ownC, Read, 40, 45))
	get := func(l Lock) (Lock, bool) {
		t.Helper()
		c, ok, err := tab.Get(1, l)
		if err != nil {
			t.Fatalf("Get(%v): %v", l, err)
		}
		return c, ok
	}
	if c, ok := get(px(ownB, Read, 15, 30)); !ok || c != px(ownA, Write, 10, 19) || c.Pid != pidOf(ownA) {
		t.Errorf("read over a write: got %v %v", c, ok)
	}
	if c, ok := get(px(ownB, Write, 0, eof)); !ok || c != px(ownA, Write, 10, 19) {
		t.Errorf("want the lowest-starting conflict, got %v %v", c, ok)
	}
	if c, ok := get(px(ownB, Read, 20, eof)); ok {
		t.Errorf("reads coexist, got conflict %v", c)
	}
	if c, ok := get(px(ownB, Write, 46, 49)); ok {
		t.Errorf("gap has no lock, got %v", c)
	}
	if c, ok := get(px(ownA, Write, 0, eof)); !ok || c != px(ownC, Read, 40, 45) {
		t.Errorf("own locks never conflict: want C's, got %v %v", c, ok)
	}
	if c, ok := get(fl(ownB, Write)); ok {
		t.Errorf("flock sees posix lock %v", c)
	}
	mustSet(t, tab, 1, px(ownA, Unlock, 10, 19))
	if c, ok := get(px(ownB, Write, 0, eof)); !ok || c != px(ownC, Read, 40, 45) {
		t.Errorf("after unlock: got %v %v", c, ok)
	}
	if c, ok := get(px(ownB, Write, 0, eof)); ok && c.Owner == ownB {
		t.Errorf("reported the caller's own lock")
	}
	if _, ok, _ := tab.Get(2, px(ownB, Write, 0, eof)); ok {
		t.Errorf("conflict on a file with no locks")
	}
}

func TestConflictMatrix(t *testing.T) {
	for _, kind := range []Kind{Posix, Flock} {
		for _, held := range []Type{Read, Write} {
			for _, req := range []Type{Read, Write} {
				for _, same := range []bool{true, false} {
					name := fmt.Sprintf("%v/held-%v/req-%v/same-%v", kind, held, req, same)
					t.Run(name, func(t *testing.T) {
						mk := func(o Owner, ty Type) Lock {
							if kind == Flock {
								return fl(o, ty)
							}
							return px(o, ty, 0, 99)
						}
						holder, asker := ownA, ownB
						if same {
							asker = ownA
						}
						want := !same && (held == Write || req == Write)
						tab := New()
						mustSet(t, tab, 1, mk(holder, held))
						_, ok, err := tab.Get(1, mk(asker, req))
						if err != nil || ok != want {
							t.Errorf("Get: conflict %v err %v, want conflict %v", ok, err, want)
						}
						before := dump(tab, 1)
						err = tab.Set(1, mk(asker, req))
						if want {
							if !errors.Is(err, syscall.EAGAIN) || !errors.Is(err, ErrWouldBlock) {
								t.Errorf("Set: %v, want EAGAIN", err)
							}
							if got := dump(tab, 1); !slices.Equal(got, before) {
								t.Errorf("refused Set changed the table: %v", got)
							}
						} else if err != nil {
							t.Errorf("Set: %v", err)
						}
						// The other kind never conflicts, whatever the types.
						other := Flock
						if kind == Flock {
							other = Posix
						}
						l := Lock{Kind: other, Type: Write, Owner: ownC, Start: 0, End: eof}
						if _, ok, _ := tab.Get(1, l); ok {
							t.Errorf("%v conflicts with %v", other, kind)
						}
						if err := tab.Set(1, l); err != nil {
							t.Errorf("Set of the other kind: %v", err)
						}
						checkInvariants(t, tab)
					})
				}
			}
		}
	}
}

func TestFlock(t *testing.T) {
	tab := New()
	mustSet(t, tab, 1, fl(ownA, Read))
	mustSet(t, tab, 1, fl(ownB, Read))
	if err := tab.Set(1, fl(ownA, Write)); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("upgrade with another reader: %v", err)
	}
	if got, want := dump(tab, 1), []Lock{fl(ownA, Read), fl(ownB, Read)}; !slices.Equal(got, want) {
		t.Fatalf("refused upgrade changed the table: %v", got)
	}
	mustSet(t, tab, 1, fl(ownB, Unlock))
	mustSet(t, tab, 1, fl(ownA, Write)) // convert, now alone
	mustSet(t, tab, 1, fl(ownA, Write)) // again: still one lock
	if got, want := dump(tab, 1), []Lock{fl(ownA, Write)}; !slices.Equal(got, want) {
		t.Fatalf("after conversion: %v", got)
	}
	if err := tab.Set(1, fl(ownA2, Read)); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("another owner of the same session: %v", err)
	}
	mustSet(t, tab, 1, fl(ownA, Read)) // downgrade
	mustSet(t, tab, 1, fl(ownA2, Read))
	mustSet(t, tab, 1, fl(ownA, Unlock))
	mustSet(t, tab, 1, fl(ownA2, Unlock))
	if tab.Len() != 0 || len(tab.files) != 0 {
		t.Fatalf("left %v", dump(tab, 1))
	}
}

func TestReleaseOwnerAndHeld(t *testing.T) {
	tab := New()
	mustSet(t, tab, 2, px(ownA, Read, 0, 9))
	mustSet(t, tab, 2, fl(ownA, Write))
	mustSet(t, tab, 1, px(ownA2, Write, 50, 59))
	mustSet(t, tab, 1, px(ownA, Write, 30, 39))
	mustSet(t, tab, 1, px(ownA, Write, 10, 19))
	mustSet(t, tab, 1, px(ownB, Read, 60, eof))
	want := []Held{
		{1, px(ownA, Write, 10, 19)}, {1, px(ownA, Write, 30, 39)}, {1, px(ownA2, Write, 50, 59)},
		{2, px(ownA, Read, 0, 9)}, {2, fl(ownA, Write)},
	}
	if got := tab.Held("s1"); !slices.Equal(got, want) {
		t.Fatalf("Held:\n got %v\nwant %v", got, want)
	}
	if got := tab.Held("nobody"); len(got) != 0 {
		t.Fatalf("Held of an unknown session: %v", got)
	}
	tab.ReleaseOwner(2, Posix, ownA) // the flock stays
	tab.ReleaseOwner(1, Posix, ownA) // A2's stays
	tab.ReleaseOwner(9, Posix, ownA) // no such file
	want = []Held{{1, px(ownA2, Write, 50, 59)}, {2, fl(ownA, Write)}}
	if got := tab.Held("s1"); !slices.Equal(got, want) {
		t.Fatalf("after ReleaseOwner:\n got %v\nwant %v", got, want)
	}
	tab.ReleaseOwner(2, Flock, ownA)
	if _, ok := tab.files[2]; ok {
		t.Fatalf("empty file kept")
	}
	if n := tab.ReleaseSession("s1"); n != 1 {
		t.Fatalf("ReleaseSession dropped %d, want 1", n)
	}
	if tab.Len() != 1 || len(tab.Held("s2")) != 1 {
		t.Fatalf("left %v", dump(tab, 1))
	}
}

func TestInvalid(t *testing.T) {
	bad := []Lock{
		{Kind: 2, Type: Read, Owner: ownA, Start: 0, End: 9},
		{Kind: Posix, Type: 3, Owner: ownA, Start: 0, End: 9},
		{Kind: Posix, Type: Unlock, Owner: ownA, Start: 10, End: 9},
		{Kind: Posix, Type: Write, Owner: ownA, Start: eof, End: 0},
		{Kind: Flock, Type: Read, Owner: ownA, Start: 0, End: 9},
		{Kind: Flock, Type: Unlock, Owner: ownA, Start: 1, End: eof},
	}
	tab := New()
	mustSet(t, tab, 1, px(ownA, Write, 0, 99))
	mustSet(t, tab, 1, fl(ownA, Read))
	before := dump(tab, 1)
	for _, l := range bad {
		if err := tab.Set(1, l); !errors.Is(err, syscall.EINVAL) || !errors.Is(err, ErrInvalid) {
			t.Errorf("Set(%v) = %v, want EINVAL", l, err)
		}
		if err := tab.Wait(context.Background(), 1, l); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Wait(%v) = %v, want EINVAL", l, err)
		}
		if _, ok, err := tab.Get(1, l); !errors.Is(err, syscall.EINVAL) || ok {
			t.Errorf("Get(%v) = %v %v, want EINVAL", l, ok, err)
		}
		m := NewMirror()
		m.Apply(1, l)
		if m.Len() != 0 {
			t.Errorf("Mirror recorded %v", l)
		}
	}
	if _, _, err := tab.Get(1, px(ownB, Unlock, 0, 9)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Get of an unlock: %v, want EINVAL", err)
	}
	if got := dump(tab, 1); !slices.Equal(got, before) {
		t.Errorf("invalid requests changed the table: %v", got)
	}
	if len(tab.waiters) != 0 {
		t.Errorf("waiters left: %v", tab.waiters)
	}
}

// waitForWaiters polls until n Waits are blocked in tab.
func waitForWaiters(t *testing.T, tab *Table, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tab.mu.Lock()
		got := 0
		for _, ws := range tab.waiters {
			got += len(ws)
		}
		tab.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func goWait(ctx context.Context, tab *Table, fid uint64, l Lock) <-chan error {
	done := make(chan error, 1)
	go func() { done <- tab.Wait(ctx, fid, l) }()
	return done
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return")
		return nil
	}
}

func TestWaitBlocksUntilUnlock(t *testing.T) {
	for _, kind := range []Kind{Posix, Flock} {
		t.Run(kind.String(), func(t *testing.T) {
			tab := New()
			mk := func(o Owner, ty Type) Lock {
				if kind == Flock {
					return fl(o, ty)
				}
				return px(o, ty, 0, 9)
			}
			mustSet(t, tab, 1, mk(ownA, Write))
			done := goWait(context.Background(), tab, 1, mk(ownB, Write))
			waitForWaiters(t, tab, 1)
			select {
			case err := <-done:
				t.Fatalf("Wait returned %v while the lock was held", err)
			default:
			}
			mustSet(t, tab, 1, mk(ownA, Read)) // a downgrade is not enough
			time.Sleep(10 * time.Millisecond)
			waitForWaiters(t, tab, 1)
			mustSet(t, tab, 1, mk(ownA, Unlock))
			if err := result(t, done); err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if got := dump(tab, 1); !slices.Equal(got, []Lock{mk(ownB, Write)}) {
				t.Fatalf("after Wait: %v", got)
			}
			waitForWaiters(t, tab, 0)
		})
	}
}

func TestWaitGrantedAtOnce(t *testing.T) {
	tab := New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // granted without blocking even so
	if err := tab.Wait(ctx, 1, px(ownA, Write, 0, 9)); err != nil {
		t.Fatal(err)
	}
	if err := tab.Wait(ctx, 1, px(ownA, Unlock, 0, 9)); err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 0 {
		t.Fatal("unlock through Wait left a lock")
	}
}

func TestWaitCancel(t *testing.T) {
	tab := New()
	mustSet(t, tab, 1, px(ownA, Read, 0, 9))
	mustSet(t, tab, 1, px(ownB, Read, 20, 29)) // B's existing lock must survive
	ctx, cancel := context.WithCancel(context.Background())
	done := goWait(ctx, tab, 1, px(ownB, Write, 0, 29))
	waitForWaiters(t, tab, 1)
	cancel()
	err := result(t, done)
	if !errors.Is(err, syscall.EINTR) || !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want EINTR wrapping context.Canceled", err)
	}
	if got, want := dump(tab, 1), []Lock{px(ownA, Read, 0, 9), px(ownB, Read, 20, 29)}; !slices.Equal(got, want) {
		t.Fatalf("cancelled Wait changed the table: %v", got)
	}
	waitForWaiters(t, tab, 0)
	// A timeout is an interruption too.
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := tab.Wait(ctx, 1, fl(ownB, Write)); err != nil {
		t.Fatalf("flock does not see posix locks: %v", err)
	}
	if err := tab.Wait(ctx, 1, fl(ownA, Read)); !errors.Is(err, syscall.EINTR) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want EINTR wrapping DeadlineExceeded", err)
	}
	waitForWaiters(t, tab, 0)
}

func TestReleaseSessionWakesWaiter(t *testing.T) {
	tab := New()
	mustSet(t, tab, 1, px(ownB, Write, 0, 9))
	mustSet(t, tab, 2, fl(ownB, Write))
	mustSet(t, tab, 1, px(ownC, Read, 100, 109))
	posix := goWait(context.Background(), tab, 1, px(ownA, Write, 5, 9))
	flock := goWait(context.Background(), tab, 2, fl(ownA, Read))
	waitForWaiters(t, tab, 2)
	if n := tab.ReleaseSession("s2"); n != 2 {
		t.Fatalf("ReleaseSession = %d, want 2", n)
	}
	if err := result(t, posix); err != nil {
		t.Fatalf("posix Wait: %v", err)
	}
	if err := result(t, flock); err != nil {
		t.Fatalf("flock Wait: %v", err)
	}
	want := []Held{{1, px(ownA, Write, 5, 9)}, {2, fl(ownA, Read)}}
	if got := tab.Held("s1"); !slices.Equal(got, want) {
		t.Fatalf("Held = %v", got)
	}
	if n := tab.ReleaseSession("s2"); n != 0 {
		t.Fatalf("second ReleaseSession = %d", n)
	}
}

func TestReleaseSessionFailsItsWaiters(t *testing.T) {
	tab := New()
	mustSet(t, tab, 1, px(ownB, Write, 0, 9))
	done := goWait(context.Background(), tab, 1, px(ownA, Write, 0, 9))
	waitForWaiters(t, tab, 1)
	tab.ReleaseSession("s1")
	if err := result(t, done); !errors.Is(err, ErrReleased) || !errors.Is(err, syscall.EINTR) {
		t.Fatalf("Wait = %v, want ErrReleased", err)
	}
	if got := dump(tab, 1); !slices.Equal(got, []Lock{px(ownB, Write, 0, 9)}) {
		t.Fatalf("table: %v", got)
	}
	waitForWaiters(t, tab, 0)
}

func TestWaitDeadlock(t *testing.T) {
	tab := New()
	mustSet(t, tab, 1, px(ownA, Write, 0, 0))
	mustSet(t, tab, 1, px(ownB, Write, 1, 1))
	mustSet(t, tab, 2, px(ownC, Write, 0, 0))
	aWaits := goWait(context.Background(), tab, 1, px(ownA, Write, 1, 1)) // A waits for B
	waitForWaiters(t, tab, 1)
	// C waiting for B is no cycle.
	ctx, cancel := context.WithCancel(context.Background())
	cWaits := goWait(ctx, tab, 1, px(ownC, Read, 1, 1))
	waitForWaiters(t, tab, 2)
	// B waiting for A closes A -> B -> A. (A missed deadlock would block:
	// the timeout turns that into a failure rather than a hang.)
	bounded, cancelBounded := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelBounded()
	before := dump(tab, 1)
	if err := tab.Wait(bounded, 1, px(ownB, Read, 0, 0)); !errors.Is(err, syscall.EDEADLK) || !errors.Is(err, ErrDeadlock) {
		t.Fatalf("Wait = %v, want EDEADLK", err)
	}
	if got := dump(tab, 1); !slices.Equal(got, before) {
		t.Fatalf("refused Wait changed the table: %v", got)
	}
	// B waiting for C (on another file), which waits for B: a cycle too.
	if err := tab.Wait(bounded, 2, px(ownB, Write, 0, 0)); !errors.Is(err, syscall.EDEADLK) {
		t.Fatalf("Wait across files = %v, want EDEADLK", err)
	}
	cancel()
	if err := result(t, cWaits); !errors.Is(err, syscall.EINTR) {
		t.Fatalf("C: %v", err)
	}
	// Flock has no deadlock detection (as on Linux): this one just blocks.
	mustSet(t, tab, 3, fl(ownA, Write))
	mustSet(t, tab, 4, fl(ownB, Write))
	ctx, cancel = context.WithCancel(context.Background())
	aFlock := goWait(ctx, tab, 4, fl(ownA, Write))
	waitForWaiters(t, tab, 2)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := tab.Wait(ctx2, 3, fl(ownB, Write)); !errors.Is(err, syscall.EINTR) {
		t.Fatalf("flock Wait = %v, want EINTR", err)
	}
	cancel()
	if err := result(t, aFlock); !errors.Is(err, syscall.EINTR) {
		t.Fatalf("A's flock: %v", err)
	}
	mustSet(t, tab, 1, px(ownB, Unlock, 0, eof))
	if err := result(t, aWaits); err != nil {
		t.Fatalf("A: %v", err)
	}
	waitForWaiters(t, tab, 0)
}

// TestWaitContention has readers and writers of both kinds hammer one file;
// exclusion is checked with counters, lost wakeups show as a hang.
func TestWaitContention(t *testing.T) {
	tab := New()
	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	var readers, writers [2]atomic.Int32
	errs := make(chan error, 2*workers)
	for k, kind := range []Kind{Posix, Flock} {
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := Owner{fmt.Sprintf("s%d", i%3), uint64(i)}
				ty := Read
				if i%2 == 0 {
					ty = Write
				}
				l := Lock{Kind: kind, Type: ty, Owner: o, Start: 0, End: eof}
				if kind == Posix {
					l.Start, l.End = uint64(i%3), 2+uint64(i%3) // overlapping ranges
				}
				for range rounds {
					if err := tab.Wait(context.Background(), 1, l); err != nil {
						errs <- err
						return
					}
					if ty == Write {
						if writers[k].Add(1) != 1 || readers[k].Load() != 0 {
							errs <- fmt.Errorf("%v write lock not exclusive", kind)
						}
						writers[k].Add(-1)
					} else {
						readers[k].Add(1)
						if writers[k].Load() != 0 {
							errs <- fmt.Errorf("%v read beside a write", kind)
						}
						readers[k].Add(-1)
					}
					unlock := l
					unlock.Type = Unlock
					if err := tab.Set(1, unlock); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("workers hung: lost wakeup")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if tab.Len() != 0 || len(tab.files) != 0 || len(tab.waiters) != 0 {
		t.Fatalf("left %d locks, %d files, %d waiters", tab.Len(), len(tab.files), len(tab.waiters))
	}
}

// checkInvariants checks what must hold whatever the history: no two
// conflicting locks of different owners, an owner's POSIX ranges disjoint
// and maximal, one flock per owner, lists sorted, no empty files kept.
func checkInvariants(t testing.TB, tab *Table) {
	t.Helper()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	for fid, f := range tab.files {
		if f.empty() {
			t.Fatalf("file %d kept empty", fid)
		}
		for k, ls := range [][]Lock{f.posix, f.flock} {
			if !slices.IsSortedFunc(ls, cmpLock) {
				t.Fatalf("file %d: unsorted %v", fid, ls)
			}
			for i, a := range ls {
				if a.Kind != Kind(k) || a.Type > Write || a.Validate() != nil {
					t.Fatalf("file %d: bad lock %v", fid, a)
				}
				for _, b := range ls[i+1:] {
					switch {
					case conflicts(a, b):
						t.Fatalf("file %d: %v and %v both held", fid, a, b)
					case a.Owner != b.Owner:
					case a.Kind == Flock:
						t.Fatalf("file %d: two flocks of one owner: %v, %v", fid, a, b)
					case overlaps(a, b):
						t.Fatalf("file %d: overlapping ranges of one owner: %v, %v", fid, a, b)
					case a.Type == b.Type && touches(a, b):
						t.Fatalf("file %d: unmerged ranges of one owner: %v, %v", fid, a, b)
					}
				}
			}
		}
	}
}

// The model keeps, per owner, the type held on each byte. Requests start
// in 0..63 and end there or at EOF, so bytes 64..EOF always agree and one
// cell (64) stands for all of them.
const cells = 65

type model struct {
	posix map[Owner]*[cells]Type // Unlock = not held
	flock map[Owner]Type
}

func newModel() *model {
	return &model{posix: make(map[Owner]*[cells]Type), flock: make(map[Owner]Type)}
}

func cellsOf(l Lock) (lo, hi int) {
	return int(min(l.Start, cells-1)), int(min(l.End, cells-1))
}

func (m *model) row(o Owner) *[cells]Type {
	r := m.posix[o]
	if r == nil {
		r = new([cells]Type)
		for i := range r {
			r[i] = Unlock
		}
		m.posix[o] = r
	}
	return r
}

func clash(a, b Type) bool { return a != Unlock && b != Unlock && (a == Write || b == Write) }

func (m *model) conflict(l Lock) bool {
	if l.Kind == Flock {
		for o, ty := range m.flock {
			if o != l.Owner && clash(ty, l.Type) {
				return true
			}
		}
		return false
	}
	lo, hi := cellsOf(l)
	for o, r := range m.posix {
		for c := lo; c <= hi; c++ {
			if o != l.Owner && clash(r[c], l.Type) {
				return true
			}
		}
	}
	return false
}

func (m *model) apply(l Lock) {
	if l.Kind == Flock {
		if l.Type == Unlock {
			delete(m.flock, l.Owner)
		} else {
			m.flock[l.Owner] = l.Type
		}
		return
	}
	lo, hi := cellsOf(l)
	r := m.row(l.Owner)
	for c := lo; c <= hi; c++ {
		r[c] = l.Type
	}
}

func (m *model) releaseOwner(kind Kind, o Owner) {
	if kind == Flock {
		delete(m.flock, o)
	} else {
		delete(m.posix, o)
	}
}

func (m *model) releaseSession(s string) (n int) {
	for _, l := range m.locks() {
		if l.Owner.Session == s {
			n++
		}
	}
	for o := range m.posix {
		if o.Session == s {
			delete(m.posix, o)
		}
	}
	for o := range m.flock {
		if o.Session == s {
			delete(m.flock, o)
		}
	}
	return n
}

// locks is what the table must hold: each owner's maximal runs, POSIX then
// flock, in cmpLock order. Every owner always uses its pidOf.
func (m *model) locks() []Lock {
	var posix, flock []Lock
	for o, r := range m.posix {
		for c := 0; c < cells; {
			ty := r[c]
			e := c
			for e+1 < cells && r[e+1] == ty {
				e++
			}
			if ty != Unlock {
				end := uint64(e)
				if e == cells-1 {
					end = eof
				}
				posix = append(posix, px(o, ty, uint64(c), end))
			}
			c = e + 1
		}
	}
	for o, ty := range m.flock {
		flock = append(flock, fl(o, ty))
	}
	slices.SortFunc(posix, cmpLock)
	slices.SortFunc(flock, cmpLock)
	return append(posix, flock...)
}

// op is one step of the model test and the fuzz target.
type op struct {
	code int // opSet, ...
	l    Lock
}

const (
	opSet = iota
	opGet
	opWait // with a done context: granted at once or EINTR
	opReleaseOwner
	opReleaseSession
	numOps
)

func (o op) String() string { return fmt.Sprintf("op%d %v", o.code, o.l) }

// harness runs ops on a Table, a Mirror of session s1 and the model, and
// compares them after every op.
type harness struct {
	t     testing.TB
	tab   *Table
	m     *model
	mir   *Mirror
	done  context.Context
	fid   uint64
	trace []op
	// outcomes counts what the ops did, so the model test can show it
	// exercised refusals and conflicts, not only grants.
	granted, refused, getConflicts int
}

func newHarness(t testing.TB) *harness {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return &harness{t: t, tab: New(), m: newModel(), mir: NewMirror(), done: ctx, fid: 42}
}

func (h *harness) fail(format string, args ...any) {
	h.t.Helper()
	tail := h.trace[max(0, len(h.trace)-8):]
	h.t.Fatalf("after %d ops (last %v): %s", len(h.trace), tail, fmt.Sprintf(format, args...))
}

func (h *harness) step(o op) {
	h.t.Helper()
	h.trace = append(h.trace, o)
	l := o.l
	mirrored := l.Owner.Session == "s1"
	switch o.code {
	case opSet, opWait:
		want := h.m.conflict(l)
		before := dump(h.tab, h.fid)
		var err error
		if o.code == opSet {
			err = h.tab.Set(h.fid, l)
		} else {
			err = h.tab.Wait(h.done, h.fid, l)
		}
		switch {
		case want && o.code == opSet && !errors.Is(err, syscall.EAGAIN):
			h.fail("Set = %v, want EAGAIN", err)
		case want && o.code == opWait && !errors.Is(err, syscall.EINTR):
			h.fail("Wait = %v, want EINTR", err)
		case want && !slices.Equal(dump(h.tab, h.fid), before):
			h.fail("refused request changed the table")
		case !want && err != nil:
			h.fail("request refused: %v", err)
		case want:
			h.refused++
		default:
			h.granted++
			h.m.apply(l)
			if mirrored {
				h.mir.Apply(h.fid, l)
			}
		}
	case opGet:
		got, ok, err := h.tab.Get(h.fid, l)
		if err != nil {
			h.fail("Get: %v", err)
		}
		var want Lock
		wantOK := false
		for _, x := range h.m.locks() {
			if x.Kind == l.Kind && conflicts(x, l) {
				want, wantOK = x, true
				break
			}
		}
		if ok != wantOK || got != want {
			h.fail("Get = %v %v, want %v %v", got, ok, want, wantOK)
		}
		if ok {
			h.getConflicts++
		}
	case opReleaseOwner:
		h.tab.ReleaseOwner(h.fid, l.Kind, l.Owner)
		h.m.releaseOwner(l.Kind, l.Owner)
		if mirrored {
			h.mir.ReleaseOwner(h.fid, l.Kind, l.Owner)
		}
	case opReleaseSession:
		want := h.m.releaseSession(l.Owner.Session)
		if n := h.tab.ReleaseSession(l.Owner.Session); n != want {
			h.fail("ReleaseSession = %d, want %d", n, want)
		}
		if mirrored {
			h.mir = NewMirror()
		}
	}
	h.check()
}

func (h *harness) check() {
	h.t.Helper()
	want := h.m.locks()
	if got := dump(h.tab, h.fid); !slices.Equal(got, want) {
		h.fail("table\n got %v\nwant %v", got, want)
	}
	if h.tab.Len() != len(want) {
		h.fail("Len = %d, want %d", h.tab.Len(), len(want))
	}
	if got, want := h.mir.All(), h.tab.Held("s1"); !slices.Equal(got, want) {
		h.fail("mirror\n got %v\nwant %v", got, want)
	}
	checkInvariants(h.t, h.tab)
}

// makeOp builds an op from small numbers, so the random test and the fuzz
// target share one decoder: start is 0..63, end is start+span (clipped to
// 63) or EOF when toEOF.
func makeOp(code, owner, kind, ty int, start, span uint64, toEOF bool) op {
	o := owners[owner%len(owners)]
	k := Kind(kind % 2)
	t := Type(ty % 3)
	code %= numOps
	if code == opGet && t == Unlock {
		t = Write
	}
	s := start % 64
	e := min(s+span, 63)
	if toEOF {
		e = eof
	}
	l := px(o, t, s, e)
	if k == Flock {
		l = fl(o, t)
	}
	return op{code: code, l: l}
}

func TestModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x10c5))
			h := newHarness(t)
			for range 5000 {
				code := opSet
				switch n := r.IntN(100); {
				case n < 15:
					code = opGet
				case n < 25:
					code = opWait
				case n < 32:
					code = opReleaseOwner
				case n < 34:
					code = opReleaseSession
				}
				kind := 0
				if r.IntN(4) == 0 {
					kind = 1
				}
				h.step(makeOp(code, r.IntN(len(owners)), kind, r.IntN(3), r.Uint64N(64), r.Uint64N(16), r.IntN(8) == 0))
			}
			t.Logf("%d granted, %d refused, %d Get conflicts", h.granted, h.refused, h.getConflicts)
			if h.refused < 100 || h.getConflicts < 100 {
				t.Fatalf("the random ops hardly conflict: the test proves little")
			}
		})
	}
}

// FuzzTable decodes 4 bytes per op: op and kind, owner and type, start,
// span (255 = to EOF); and checks the table against the model and the
// invariants after every op.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 0, 0, 10, 0, 8, 5, 10, 1, 8, 0, 255})
	f.Add([]byte{0, 4, 0, 255, 0, 2, 10, 5, 0, 9, 3, 3, 2, 6, 0, 0, 3, 0, 0, 0})
	f.Add([]byte{5, 0, 0, 0, 5, 1, 0, 0, 7, 5, 0, 0, 4, 2, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		for i := 0; i+4 <= len(data) && i < 4*200; i += 4 {
			b := data[i : i+4]
			h.step(makeOp(int(b[0]>>1), int(b[1]), int(b[0]&1), int(b[1]>>2), uint64(b[2]), uint64(b[3]), b[3] == 255))
		}
		// Unwinding everything leaves nothing.
		for _, o := range owners {
			h.tab.ReleaseOwner(h.fid, Posix, o)
			h.tab.ReleaseOwner(h.fid, Flock, o)
		}
		if h.tab.Len() != 0 || len(h.tab.files) != 0 || len(h.tab.waiters) != 0 {
			t.Fatalf("left %v", dump(h.tab, h.fid))
		}
	})
}
