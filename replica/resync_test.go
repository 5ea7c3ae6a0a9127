package replica

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// localSource reads a source replica in process.
type localSource struct {
	r       *Replica
	fetched int
}

func (l *localSource) Snapshot(ctx context.Context) (*brickpb.SnapshotPart, func() (*brickpb.FileSums, error), error) {
	part, err := l.r.Snapshot()
	if err != nil {
		return nil, nil, err
	}
	var fids []uint64
	for _, e := range part.Entries {
		if e.Mode&unix.S_IFMT == unix.S_IFREG {
			fids = append(fids, e.Fid)
		}
	}
	return part, func() (*brickpb.FileSums, error) {
		for len(fids) > 0 {
			fid := fids[0]
			fids = fids[1:]
			sums, size, err := l.r.ChunkSums(fid)
			if err == syscall.ENOENT {
				continue
			}
			if err != nil {
				return nil, err
			}
			return &brickpb.FileSums{Fid: fid, Size: size, Chunks: sums}, nil
		}
		return nil, EndOfSums()
	}, nil
}

func (l *localSource) Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error) {
	o, err := l.r.fileFD(fid)
	if err != nil {
		return nil, err
	}
	defer o.release()
	buf := make([]byte, size)
	n, err := preadFull(o.fd, buf, off)
	l.fetched += n
	return buf[:n], err
}

func applyAll(t *testing.T, r *Replica, ops []*brickpb.Op) {
	t.Helper()
	for _, op := range ops {
		c := proto.Clone(op).(*brickpb.Op)
		c.Epoch = 0
		do(t, r, c)
	}
}

// A full resync rebuilds a diverged replica and a wiped one as copies of
// the source at its position; replaying the source's later ops on the copy
// gives the source's tree; chunks the target already had are not fetched.
func TestResyncRebuildsACopy(t *testing.T) {
	ops, _ := genOps(t, testSeed(t), 600)
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) *Replica
	}{
		{"diverged", func(t *testing.T) *Replica {
			r := newTest(t)
			applyAll(t, r, ops[:390])
			// Ops the volume never committed: a different file at the next seqs.
			must(t, r, createOp(1, "never-committed", 9_000_001, 0o644))
			must(t, r, writeOp(9_000_001, 0, "not in the volume's history"))
			return r
		}},
		{"wiped", func(t *testing.T) *Replica { return newTest(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newTest(t)
			applyAll(t, src, ops[:400])
			old := tc.target(t)
			staging := filepath.Join(t.TempDir(), "staging")
			ls := &localSource{r: src}
			st, err := BuildResync(context.Background(), staging, old, ls, 7, ReplicaOptions{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			applied, _, _, _ := src.State()
			if st.AppliedSeq != applied {
				t.Fatalf("copy at seq %d, source at %d", st.AppliedSeq, applied)
			}
			dir := old.Dir()
			old.Close()
			if err := SwapReplica(dir, staging); err != nil {
				t.Fatal(err)
			}
			cp := openTest(t, dir, ReplicaOptions{})
			defer cp.Close()
			a, s, p, _ := cp.State()
			if a != applied || s != applied || p != 7 || cp.Suspect() != "" {
				t.Fatalf("copy: applied %d synced %d promised %d suspect %q; want %d, %d, 7, none", a, s, p, cp.Suspect(), applied, applied)
			}
			sameTrees(t, src, cp)
			// The op log after the copy's position is what heals it.
			applyAll(t, src, ops[400:])
			applyAll(t, cp, ops[400:])
			sameTrees(t, src, cp)
			t.Logf("%d files, %d bytes fetched, %d reused", st.Files, st.BytesFetched, st.BytesReused)
			if tc.name == "diverged" && st.BytesReused == 0 && st.BytesFetched > 0 {
				t.Errorf("nothing reused from the diverged replica, which shares most of its data")
			}
		})
	}
}

// The usage counter follows every op: after a random history it equals a
// fresh count of the files, and it survives a reopen.
func TestUsageFollowsOps(t *testing.T) {
	ops, _ := genOps(t, testSeed(t), 800)
	r := newTest(t)
	for i, op := range ops {
		c := proto.Clone(op).(*brickpb.Op)
		c.Epoch = 0
		do(t, r, c)
		if i%100 == 99 || i == len(ops)-1 {
			used, _ := r.Usage()
			if err := r.countUsed(); err != nil {
				t.Fatal(err)
			}
			if fresh, _ := r.Usage(); fresh != used {
				t.Fatalf("after op %d: usage counter %d, a fresh count %d", i+1, used, fresh)
			}
		}
	}
	if used, _ := r.Usage(); used == 0 {
		t.Fatalf("a history of %d ops left no bytes: the test proves nothing", len(ops))
	}
}

// Throttled keeps a resync's fetches to its rate.
func TestThrottledSource(t *testing.T) {
	src := newTest(t)
	must(t, src, createOp(1, "f", 2, 0o644))
	must(t, src, writeOp(2, 0, string(make([]byte, 256<<10))))
	th := Throttled(&localSource{r: src}, 1<<20).(*throttled) // 1 MiB/s
	clock := time.Unix(1_000_000, 0)
	var slept time.Duration
	th.now = func() time.Time { return clock }
	th.sleep = func(_ context.Context, d time.Duration) error { slept += d; clock = clock.Add(d); return nil }
	for range 4 {
		if _, err := th.Read(context.Background(), 2, 0, 256<<10); err != nil {
			t.Fatal(err)
		}
	}
	// The first read goes at once; each next one waits until the bytes
	// before it fit 1 MiB/s: 0.25 s after each 256 KiB.
	if slept != 750*time.Millisecond {
		t.Fatalf("4 × 256 KiB at 1 MiB/s waited %v, want 750ms", slept)
	}
	if _, ok := Throttled(&localSource{r: src}, 0).(*throttled); ok {
		t.Fatal("an unlimited rate must give the source back unthrottled")
	}
}
