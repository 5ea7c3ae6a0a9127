package replica

import (
	"context"
	"errors"

	bolt "go.etcd.io/bbolt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

var errCrash = errors.New("simulated crash")

// crashAt is a Replica.hook that fails with errCrash at point.
func crashAt(point string) func(string) error {
	return func(p string) error {
		if p == point {
			return errCrash
		}
		return nil
	}
}

// TestRandomOpsConverge: two replicas fed the same ops, in different
// batches, fail the same ops the same way and end with equal trees.
func TestRandomOpsConverge(t *testing.T) {
	seed := testSeed(t)
	for round := range uint64(4) {
		a, b, c := newTest(t), newTest(t), newTest(t)
		g := newOpGen(seed + round)
		g.oracle = c
		ops := g.ops(600)
		rng := rand.New(rand.NewPCG(seed, round))
		ra := applyBatches(t, a, ops, rng)
		rb := applyBatches(t, b, ops, rng)
		sameTrees(t, a, c)
		failed := 0
		for i := range ra {
			if ra[i].Errno != rb[i].Errno {
				t.Errorf("op %d (%s): errno %d on one replica, %d on the other", ops[i].Seq, ops[i].Type, ra[i].Errno, rb[i].Errno)
			}
			if ra[i].Errno != 0 {
				failed++
			}
		}
		t.Logf("round %d: %d of %d ops failed as POSIX ops", round, failed, len(ops))
		sameTrees(t, a, b)
		if s := a.Suspect(); s != "" {
			t.Errorf("suspect after clean ops: %s", s)
		}
	}
}

// TestOpsSinceBringsALaggingReplicaLevel: a replica that missed ops
// catches up from another's log.
func TestOpsSinceBringsALaggingReplicaLevel(t *testing.T) {
	seed := testSeed(t)
	ops, _ := genOps(t, seed, 500)
	rng := rand.New(rand.NewPCG(seed, 1))
	src, lag := newTest(t), newTest(t)
	applyBatches(t, src, ops, rng)
	applyBatches(t, lag, ops[:200], rng)
	applied, _, _, _ := lag.State()
	missing, err := src.OpsSince(applied)
	if err != nil || len(missing) != 300 {
		t.Fatalf("OpsSince(%d): %d ops, %v", applied, len(missing), err)
	}
	applyBatches(t, lag, missing, rng)
	sameTrees(t, src, lag)
	logged, err := lag.OpsSince(0)
	if err != nil || len(logged) != len(ops) {
		t.Fatalf("lag's log: %d ops, %v", len(logged), err)
	}
	for i := range ops {
		if !proto.Equal(logged[i], ops[i]) {
			t.Fatalf("logged op %d differs from the op sent", i+1)
		}
	}
}

// TestCrashAnywhereConverges kills a replica at every kind of point of
// applying (before the intent commit, between the steps of a create, after
// an op's change but before it is recorded), reopens it, sends it the ops
// after its applied position, and expects the tree of a replica that never
// crashed.
func TestCrashAnywhereConverges(t *testing.T) {
	seed := testSeed(t)
	n, runs := 300, 60
	if testing.Short() {
		n, runs = 150, 15
	}
	ops, ref := genOps(t, seed, n)

	// Count the crash points of a full run.
	counter := newTest(t)
	points := 0
	counter.hook = func(string) error { points++; return nil }
	applyBatches(t, counter, ops, rand.New(rand.NewPCG(seed, 0)))
	t.Logf("%d ops, %d crash points", n, points)

	rng := rand.New(rand.NewPCG(seed, 2))
	for run := range runs {
		at := 1 + rng.IntN(points)
		if run == 0 {
			at = points // the very last point
		}
		dir := filepath.Join(t.TempDir(), "victim")
		v := openTest(t, dir, ReplicaOptions{})
		calls, where := 0, ""
		v.hook = func(p string) error {
			if calls++; calls == at {
				where = p
				return errCrash
			}
			return nil
		}
		sent, logged := 0, 0
		for sent < len(ops) {
			k := min(len(ops)-sent, 1+rng.IntN(8))
			_, err := v.Apply(ops[sent : sent+k])
			sent += k
			if where != "log" {
				logged = sent
			}
			if err != nil {
				if !errors.Is(err, errCrash) {
					t.Fatalf("run %d: unexpected failure: %v", run, err)
				}
				break
			}
		}
		v.crash()
		v = openTest(t, dir, ReplicaOptions{})
		applied, _, _, _ := v.State()
		if applied > uint64(sent) {
			t.Fatalf("run %d: applied %d after a crash, but only %d ops were sent", run, applied, sent)
		}
		if applied != uint64(logged) {
			// Every op that reached the log before the crash is applied.
			t.Fatalf("run %d (crash at %q, point %d): applied %d of %d logged ops", run, where, at, applied, logged)
		}
		applyBatches(t, v, ops[applied:], rng)
		t.Run("", func(t *testing.T) {
			t.Logf("run %d: crash at point %d (%q), %d ops sent", run, at, where, sent)
			sameTrees(t, ref, v)
		})
		if s := v.Suspect(); s != "" {
			t.Errorf("run %d: suspect after a crash on the same boot: %s", run, s)
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestartWithoutSync: ops applied, Close without an explicit Sync,
// reopen: everything applied is there.
func TestRestartWithoutSync(t *testing.T) {
	ops, _ := genOps(t, 7, 200)
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{})
	applyBatches(t, r, ops, rand.New(rand.NewPCG(1, 1)))
	want := digest(t, r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	if applied, synced, _, _ := r.State(); applied != 200 || synced != 200 {
		t.Errorf("after Close and reopen: applied %d synced %d, want 200 (Close syncs)", applied, synced)
	}
	if got := digest(t, r); got != want {
		t.Errorf("tree changed across Close/Open")
	}
}

// TestUncleanRebootMakesSuspect: an unclean shutdown followed by a
// different kernel boot cannot be trusted beyond synced_seq.
func TestUncleanRebootMakesSuspect(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{})
	must(t, r, createOp(1, "f", 2, 0o644))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYNC})
	must(t, r, writeOp(2, 0, "unsynced"))
	must(t, r, mkdirOp(1, "d", 3, 0o755))
	must(t, r, mkdirOp(3, "e", 4, 0o755))
	must(t, r, renameOp(1, "d", 1, "moved", 0))
	r.crash()
	// A torn meta.db could lose directory records: the tree is the truth.
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		tx.Bucket(bucketDirs).Delete(u64Key(3))
		return tx.Bucket(bucketDirs).Put(u64Key(4), encodeDirRec(dirRec{parent: 1, name: "wrong"}))
	})
	db.Close()
	old := bootID
	bootID = func() string { return "another-boot" }
	defer func() { bootID = old }()
	r = openTest(t, dir, ReplicaOptions{})
	if r.Suspect() == "" {
		t.Fatalf("not suspect after an unclean reboot")
	}
	if _, synced, _, _ := r.State(); synced != 2 {
		t.Errorf("synced %d, want 2", synced)
	}
	must(t, r, createOp(4, "f", 5, 0o644))
	if a, e := lookup(t, r, 1, "moved"); e != 0 || a.Fid != 3 {
		t.Errorf("after the rebuild: /moved = %v %v", a, e)
	}
	if err := r.ClearSuspect(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	if s := r.Suspect(); s != "" {
		t.Errorf("still suspect after ClearSuspect and a clean restart: %s", s)
	}
}

// TestTreeWithoutMetaDB: a data/ tree whose meta.db is gone is indexed
// from its tags, and marked suspect.
func TestTreeWithoutMetaDB(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{})
	must(t, r, mkdirOp(1, "d", 7, 0o755))
	must(t, r, createOp(7, "f", 9, 0o644))
	want := digest(t, r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "meta.db")); err != nil {
		t.Fatal(err)
	}
	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	if r.Suspect() == "" {
		t.Errorf("not suspect without its meta.db")
	}
	if _, _, _, maxFID := r.State(); maxFID != 9 {
		t.Errorf("max fid %d, want 9", maxFID)
	}
	if a, e := lookup(t, r, 7, "f"); e != 0 || a.Fid != 9 {
		t.Errorf("lookup in a rebuilt directory: %v %v", a, e)
	}
	if got := digest(t, r); got != want {
		t.Errorf("the tree changed")
	}
}

// TestLocalFailureThenRetry: an op that fails half-way (the brick's fault)
// is finished when sent again; a different op in its place makes the
// replica suspect.
func TestLocalFailureThenRetry(t *testing.T) {
	for _, point := range []string{"create", "create-tagged", "applied"} {
		r := newTest(t)
		r.hook = crashAt(point)
		op := next(r, createOp(1, "f", 2, 0o640))
		if _, err := r.Apply([]*brickpb.Op{op}); !errors.Is(err, ErrLocalFailure) {
			t.Fatalf("%s: %v, want ErrLocalFailure", point, err)
		}
		r.hook = nil
		if _, e := do(t, r, createOp(1, "f", 2, 0o640)); e != 0 {
			t.Errorf("%s: retry failed with %v", point, e)
		}
		if a, _ := lookup(t, r, 1, "f"); a == nil || a.Fid != 2 || a.Mode&0o7777 != 0o640 {
			t.Errorf("%s: after the retry: %v", point, a)
		}
		if s := r.Suspect(); s != "" {
			t.Errorf("%s: suspect after a retry of the same op: %s", point, s)
		}
	}
	r := newTest(t)
	r.hook = crashAt("create-tagged")
	r.Apply([]*brickpb.Op{next(r, createOp(1, "f", 2, 0o640))})
	r.hook = nil
	do(t, r, createOp(1, "g", 3, 0o640))
	if r.Suspect() == "" {
		t.Errorf("a different op in place of a half-applied one must make the replica suspect")
	}
}

// TestReadersRaceApply runs lookups, listings, reads, checksums and log
// scans while random ops are applied: no reader may fail other than with
// a POSIX errno.
func TestReadersRaceApply(t *testing.T) {
	seed := testSeed(t)
	ops, _ := genOps(t, seed, 1500)
	r := newTest(t)
	done := make(chan struct{})
	errs := make(chan error, 16)
	for w := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			ref := &brickpb.VolumeRef{Epoch: 1}
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				fid := uint64(1 + rng.IntN(200))
				var err error
				switch rng.IntN(5) {
				case 0:
					_, err = r.Meta(t.Context(), &brickpb.MetaRequest{Ref: ref, Kind: brickpb.MetaKind_META_READDIR, Fid: fid})
				case 1:
					_, err = r.Meta(t.Context(), &brickpb.MetaRequest{Ref: ref, Kind: brickpb.MetaKind_META_LOOKUP, Parent: fid, Name: genNames[rng.IntN(len(genNames))]})
				case 2:
					_, err = r.Read(t.Context(), &brickpb.ReadRequest{Ref: ref, Fid: fid, Size: 4096})
				case 3:
					if _, _, err = r.ChunkSums(fid); err != nil {
						if _, ok := errnoOf(err); ok && !errors.Is(err, ErrLocalFailure) {
							err = nil
						}
					}
				case 4:
					applied, _, _, _ := r.State()
					_, err = r.OpsSince(applied / 2)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	applyBatches(t, r, ops, rand.New(rand.NewPCG(seed, 9)))
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("reader: %v", err)
		}
	}
}

// TestCrashInUnlinkForgetConverges crashes an unlink that forgets the file
// (brickpb.UnlinkForget) between removing the name and the fids/ link: the
// replay finishes the forget, and only when the name was that file's.
func TestCrashInUnlinkForgetConverges(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nameFID uint64 // the file at the unlinked name
		opFID   uint64 // the file the op names
		point   string // crash at the nth time the replica reaches it
		nth     int
	}{
		{"its own file", 2, 2, "unlink-forget", 1},
		{"its own file, done", 2, 2, "applied", 5},
		// Replayed with the name gone, the op must not forget fid 3 (an
		// orphan with no name, as if still open) just because it names it.
		{"another file, done", 2, 3, "applied", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops := []*brickpb.Op{
				createOp(1, "f", 2, 0o644),
				writeOp(2, 0, "data"),
				createOp(1, "g", 3, 0o644),
				unlinkOp(1, "g"), // fid 3: an orphan, as if still open
				unlinkOp(1, "f"),
				createOp(1, "after", 4, 0o644),
			}
			ops[4].Flags, ops[4].Fid = brickpb.UnlinkForget, tc.opFID
			for i, op := range ops {
				op.Seq, op.Epoch = uint64(i+1), 1
			}
			ref := newTest(t)
			if _, err := ref.Apply(ops); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "victim")
			v := openTest(t, dir, ReplicaOptions{})
			seen := 0
			v.hook = func(p string) error {
				if p == tc.point {
					if seen++; seen == tc.nth {
						return errCrash
					}
				}
				return nil
			}
			if _, err := v.Apply(ops); !errors.Is(err, errCrash) {
				t.Fatalf("apply: %v, want the simulated crash", err)
			}
			v.crash()
			v = openTest(t, dir, ReplicaOptions{})
			defer v.Close()
			applied, _, _, _ := v.State()
			if _, err := v.Apply(ops[applied:]); err != nil {
				t.Fatal(err)
			}
			sameTrees(t, ref, v)
		})
	}
}

// TestSyncCountsAfterACrash: Sync commits nothing after its syncfs (the
// synced counter goes with the next commit); a process crash keeps the
// page cache, and the recovery on the same boot syncs what it holds, so
// a reopen reports everything applied as synced, never less than before,
// and the replica is not suspect.
func TestSyncCountsAfterACrash(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{})
	if !r.metaWithTree {
		t.Fatalf("meta.db and data/ in one temporary directory counted as two file systems")
	}
	must(t, r, createOp(1, "f", 2, 0o644))
	must(t, r, writeOp(2, 0, "synced"))
	synced, err := r.Sync()
	if err != nil || synced != 2 {
		t.Fatalf("Sync = %d, %v; want 2", synced, err)
	}
	must(t, r, writeOp(2, 6, " and not"))
	r.crash()
	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	if applied, synced, _, _ := r.State(); applied != 3 || synced != 3 {
		t.Errorf("after a crash: applied %d synced %d, want 3 and 3", applied, synced)
	}
	if s := r.Suspect(); s != "" {
		t.Errorf("suspect after a crash on the same boot: %s", s)
	}
}

// TestAdoptSuspectReplica: a new head that finds every in-sync replica
// suspect adopts one through Fence: the suspicion goes, durably (a crash
// right after does not bring it back), everything applied counts as
// synced, and bad requests (a stale epoch, one above the promise, epoch
// 0, no reason, a reason too long) change nothing.
func TestAdoptSuspectReplica(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{})
	must(t, r, createOp(1, "f", 2, 0o644))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYNC})
	must(t, r, writeOp(2, 0, "unsynced"))
	r.crash()
	old := bootID
	bootID = func() string { return "another-boot" }
	defer func() { bootID = old }()
	r = openTest(t, dir, ReplicaOptions{})
	if r.Suspect() == "" {
		t.Fatal("not suspect after an unclean reboot")
	}
	applied, _, _, _ := r.State()
	c := serve(t, r)
	ctx := context.Background()
	if _, err := c.Fence(ctx, &brickpb.FenceRequest{Ref: ref(3)}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name  string
		epoch uint64
		why   string
		code  codes.Code
	}{
		{"stale epoch", 2, "test", codes.FailedPrecondition},
		{"reason too long", 3, strings.Repeat("x", MaxAdoptReason+1), codes.InvalidArgument},
	} {
		_, err := c.Fence(ctx, &brickpb.FenceRequest{Ref: ref(bad.epoch), Adopt: bad.why})
		wantCode(t, bad.name, err, bad.code)
		if r.Suspect() == "" {
			t.Fatalf("%s: the suspicion went", bad.name)
		}
	}
	if _, err := r.Adopt(4, "test"); !errors.Is(err, ErrInvalid) || r.Suspect() == "" {
		t.Fatalf("adopt above the promise: %v, suspect %q", err, r.Suspect())
	}
	if _, err := r.Adopt(3, ""); !errors.Is(err, ErrInvalid) || r.Suspect() == "" {
		t.Fatalf("adopt without a reason: %v, suspect %q", err, r.Suspect())
	}
	if _, err := r.Adopt(0, "test"); !errors.Is(err, ErrInvalid) || r.Suspect() == "" {
		t.Fatalf("adopt at epoch 0: %v, suspect %q", err, r.Suspect())
	}

	fr, err := c.Fence(ctx, &brickpb.FenceRequest{Ref: ref(3), Adopt: "every in-sync brick is suspect"})
	if err != nil {
		t.Fatal(err)
	}
	if fr.NeedsFullHeal != "" || fr.AppliedSeq != applied || fr.SyncedSeq != applied || fr.PromisedEpoch != 3 {
		t.Fatalf("after adopting: %+v, want applied = synced = %d at epoch 3, not suspect", fr, applied)
	}
	if b, _ := readAll(t, r, 2); b != "unsynced" {
		t.Errorf("adopted tree holds %q, want what it had", b)
	}
	if _, err := c.Fence(ctx, &brickpb.FenceRequest{Ref: ref(3), Adopt: "again"}); err != nil {
		t.Errorf("adopting a trusted replica: %v", err)
	}
	// A half-applied op (a local failure) and then adoption: the next
	// op at its seq is the new head's, not a different op in its place.
	r.hook = crashAt("create-tagged")
	r.Apply([]*brickpb.Op{next(r, createOp(1, "half", 9, 0o640))})
	r.hook = nil
	r.mu.Lock()
	r.suspect = "test: suspect again"
	r.mu.Unlock()
	if _, err := r.Adopt(3, "again, with an op half done"); err != nil {
		t.Fatal(err)
	}
	must(t, r, createOp(1, "other", 10, 0o640))
	if s := r.Suspect(); s != "" {
		t.Errorf("suspect again after adopting a replica with a half-applied op: %s", s)
	}
	applied, _, _, _ = r.State()
	r.crash() // on this boot: only what Adopt committed counts
	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	if s := r.Suspect(); s != "" {
		t.Errorf("suspect again after a crash: %s", s)
	}
	if a, s, _, _ := r.State(); a != applied || s != applied {
		t.Errorf("after a crash: applied %d synced %d, want %d", a, s, applied)
	}
}

// TestDamagedMetaDBMovedAside: bookkeeping a power loss tore (meta.db's
// meta pages, or a counter in it) is moved aside rather than refused for
// ever: the replica opens from its tree, suspect and without a position,
// its files intact, the damaged meta.db and op log kept beside it. A
// meta.db of another format is another brickd version's, not damage: it is
// refused and left alone.
func TestDamagedMetaDBMovedAside(t *testing.T) {
	build := func(t *testing.T) string {
		dir := t.TempDir()
		r := openTest(t, dir, ReplicaOptions{})
		must(t, r, createOp(1, "f", 2, 0o644))
		must(t, r, writeOp(2, 0, "fsync'd"))
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYNC})
		r.crash()
		return dir
	}
	old := bootID
	bootID = func() string { return "another-boot" }
	defer func() { bootID = old }()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"meta pages", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := make([]byte, 2*os.Getpagesize())
			for i := range junk {
				junk[i] = byte(i * 7)
			}
			if _, err := f.WriteAt(junk, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"a counter", func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyApplied, []byte{1, 2, 3}) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := build(t)
			tc.damage(t, filepath.Join(dir, "meta.db"))
			r := openTest(t, dir, ReplicaOptions{})
			defer r.Close()
			if r.Suspect() == "" {
				t.Error("not suspect after its bookkeeping was moved aside")
			}
			if applied, _, _, _ := r.State(); applied != 0 {
				t.Errorf("applied %d with no bookkeeping, want 0", applied)
			}
			if b, e := readAll(t, r, 2); e != 0 || b != "fsync'd" {
				t.Errorf("file after the move: %q %v", b, e)
			}
			for _, name := range []string{"meta.db.corrupt-*", walDirName + ".corrupt-*"} {
				if m, _ := filepath.Glob(filepath.Join(dir, name)); len(m) != 1 {
					t.Errorf("%s: %v, want one", name, m)
				}
			}
			// If every in-sync replica were in this state, a new head
			// would adopt one and go on from seq 1, with file IDs above
			// the tree's.
			if _, err := r.Fence(2); err != nil {
				t.Fatal(err)
			}
			fr, err := r.Adopt(2, "test")
			if err != nil || fr.NeedsFullHeal != "" || fr.MaxFid < 2 {
				t.Fatalf("adopting: %+v %v", fr, err)
			}
			must(t, r, createOp(1, "g", fr.MaxFid+1, 0o644))
			must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYNC})
			if a, s, _, _ := r.State(); a != 2 || s != 2 {
				t.Errorf("after two ops on the adopted replica: applied %d synced %d", a, s)
			}
		})
	}

	t.Run("another format", func(t *testing.T) {
		dir := build(t)
		db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, u64Key(metaFormat+1)) })
		db.Close()
		if r, err := OpenReplica(dir, ReplicaOptions{Logger: testLogger(t)}); err == nil || errors.Is(err, ErrCorrupt) {
			if r != nil {
				r.Close()
			}
			t.Fatalf("opened a meta.db of another format: %v", err)
		}
		if m, _ := filepath.Glob(filepath.Join(dir, "*.corrupt-*")); len(m) != 0 {
			t.Errorf("moved aside: %v", m)
		}
	})
}
