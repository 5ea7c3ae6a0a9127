package replica

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

func TestGapRefused(t *testing.T) {
	r := newTest(t)
	must(t, r, mkdirOp(1, "a", 2, 0o755))
	for _, seq := range []uint64{1, 3, 100} {
		op := mkdirOp(1, "b", 3, 0o755)
		op.Seq = seq
		if res, err := r.Apply([]*brickpb.Op{op}); !errors.Is(err, ErrGap) || len(res) != 0 {
			t.Errorf("op %d after 1: %v %v, want ErrGap", seq, res, err)
		}
	}
	if res, err := r.Apply([]*brickpb.Op{nil}); !errors.Is(err, ErrGap) || len(res) != 0 {
		t.Errorf("nil op: %v", err)
	}
	// A batch is applied up to its first gap, and says so.
	ops := []*brickpb.Op{
		{Seq: 2, Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "b", Fid: 3, Mode: 0o755},
		{Seq: 3, Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "c", Fid: 4, Mode: 0o755},
		{Seq: 5, Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "d", Fid: 5, Mode: 0o755},
	}
	res, err := r.Apply(ops)
	if !errors.Is(err, ErrGap) || len(res) != 2 || res[1].Seq != 3 {
		t.Fatalf("batch with a gap: %v %v, want 2 results and ErrGap", res, err)
	}
	if applied, _, _, _ := r.State(); applied != 3 {
		t.Errorf("applied %d, want 3", applied)
	}
	if _, e := lookup(t, r, 1, "d"); e == 0 {
		t.Errorf("the op after the gap was applied")
	}
}

func TestStaleEpochRefused(t *testing.T) {
	r := newTest(t)
	if _, err := r.Fence(5); err != nil {
		t.Fatal(err)
	}
	op := mkdirOp(1, "a", 2, 0o755)
	op.Seq, op.Epoch = 1, 4
	_, err := r.Apply([]*brickpb.Op{op})
	var stale *StaleEpochError
	if !errors.As(err, &stale) || !errors.Is(err, ErrStaleEpoch) || stale.Epoch != 4 || stale.Promise != 5 {
		t.Fatalf("op at epoch 4 after a fence at 5: %v", err)
	}
	if want := "fenced: epoch 4 is older than the brick's promise 5"; stale.Error() != want {
		t.Errorf("message %q, want %q", stale.Error(), want)
	}
	if applied, _, _, _ := r.State(); applied != 0 {
		t.Errorf("applied %d after a refused op", applied)
	}
	// Applying at a higher epoch raises the promise: the old epoch is out.
	op.Epoch = 7
	if _, err := r.Apply([]*brickpb.Op{op}); err != nil {
		t.Fatal(err)
	}
	op2 := mkdirOp(1, "b", 3, 0o755)
	op2.Seq, op2.Epoch = 2, 6
	if _, err := r.Apply([]*brickpb.Op{op2}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("op at epoch 6 after one at 7: %v", err)
	}
	// Reads from a fenced head are refused too.
	ctx := context.Background()
	if _, err := r.Meta(ctx, &brickpb.MetaRequest{Ref: &brickpb.VolumeRef{Epoch: 6}, Kind: brickpb.MetaKind_META_GETATTR, Fid: 1}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("Meta at epoch 6: %v", err)
	}
	if _, err := r.Read(ctx, &brickpb.ReadRequest{Ref: &brickpb.VolumeRef{Epoch: 6}, Fid: 2}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("Read at epoch 6: %v", err)
	}
	if _, err := r.Meta(ctx, &brickpb.MetaRequest{Ref: &brickpb.VolumeRef{Epoch: 7}, Kind: brickpb.MetaKind_META_GETATTR, Fid: 1}); err != nil {
		t.Errorf("Meta at the current epoch: %v", err)
	}
	if _, err := r.Meta(ctx, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETATTR, Fid: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Meta without a ref: %v", err)
	}
}

func TestFenceIsDurableAndNeverLowers(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{})
	must(t, r, mkdirOp(1, "a", 2, 0o755))
	resp, err := r.Fence(9)
	if err != nil || resp.PromisedEpoch != 9 || resp.AppliedSeq != 1 || resp.MaxFid != 2 || resp.LogFirstSeq != 1 {
		t.Fatalf("Fence(9) = %v, %v", resp, err)
	}
	if resp, _ := r.Fence(3); resp.PromisedEpoch != 9 {
		t.Errorf("Fence(3) lowered the promise: %v", resp)
	}
	r.crash() // no Close: the promise must already be on disk
	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	if _, _, promised, _ := r.State(); promised != 9 {
		t.Errorf("promise after a crash: %d, want 9", promised)
	}
	op := mkdirOp(1, "b", 3, 0o755)
	op.Seq, op.Epoch = 2, 8
	if _, err := r.Apply([]*brickpb.Op{op}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("op at epoch 8 after reopening: %v", err)
	}
}

func TestReadsWaitForAfterSeq(t *testing.T) {
	r := newTest(t)
	must(t, r, createOp(1, "f", 2, 0o644))
	applied, _, _, _ := r.State()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type answer struct {
		data string
		attr *brickpb.Attr
		err  error
	}
	reads := make(chan answer, 2)
	go func() {
		resp, err := r.Read(ctx, &brickpb.ReadRequest{Ref: &brickpb.VolumeRef{}, AfterSeq: applied + 2, Fid: 2, Size: 100})
		if err != nil {
			reads <- answer{err: err}
			return
		}
		reads <- answer{data: string(resp.Data)}
	}()
	go func() {
		resp, err := r.Meta(ctx, &brickpb.MetaRequest{Ref: &brickpb.VolumeRef{}, AfterSeq: applied + 2, Kind: brickpb.MetaKind_META_LOOKUP, Parent: 1, Name: "f"})
		if err != nil {
			reads <- answer{err: err}
			return
		}
		reads <- answer{attr: resp.Attr}
	}()
	must(t, r, writeOp(2, 0, "first"))
	must(t, r, writeOp(2, 5, "second"))
	for range 2 {
		a := <-reads
		switch {
		case a.err != nil:
			t.Errorf("waiting read: %v", a.err)
		case a.attr == nil && a.data != "firstsecond":
			t.Errorf("read after seq %d: %q, want both writes", applied+2, a.data)
		case a.attr != nil && a.attr.Size != 11:
			t.Errorf("lookup after seq %d: size %d, want 11", applied+2, a.attr.Size)
		}
	}
	// A read for an op that never comes ends with its context.
	short, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := r.Read(short, &brickpb.ReadRequest{Ref: &brickpb.VolumeRef{}, AfterSeq: 1000, Fid: 2}); !errors.Is(err, context.Canceled) {
		t.Errorf("read of a future seq with a cancelled context: %v", err)
	}
	// A fence while waiting: the waiting read is refused when it wakes.
	res := make(chan error, 1)
	go func() {
		_, err := r.Meta(ctx, &brickpb.MetaRequest{Ref: &brickpb.VolumeRef{Epoch: 0}, AfterSeq: 5, Kind: brickpb.MetaKind_META_GETATTR, Fid: 1})
		res <- err
	}()
	if _, err := r.Fence(1); err != nil {
		t.Fatal(err)
	}
	op := next(r, writeOp(2, 0, "x"))
	op.Epoch = 1
	if _, err := r.Apply([]*brickpb.Op{op}); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("read at epoch 0 that waited across a fence to 1: %v", err)
	}
}

func TestCloseWakesWaitingReaders(t *testing.T) {
	r := openTest(t, t.TempDir(), ReplicaOptions{})
	res := make(chan error, 1)
	go func() {
		_, err := r.Meta(context.Background(), &brickpb.MetaRequest{Ref: &brickpb.VolumeRef{}, AfterSeq: 10, Kind: brickpb.MetaKind_META_STATFS})
		res <- err
	}()
	for {
		r.mu.Lock()
		waiting := r.progress != nil
		r.mu.Unlock()
		if waiting {
			break
		}
		time.Sleep(time.Millisecond) // polling a condition, not asserting on time
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Errorf("waiting reader after Close: %v", err)
	}
	if _, err := r.Apply([]*brickpb.Op{{Seq: 1}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close: %v", err)
	}
}

func TestSyncAdvancesSyncedSeq(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{})
	must(t, r, createOp(1, "f", 2, 0o644))
	must(t, r, writeOp(2, 0, "data"))
	if _, synced, _, _ := r.State(); synced != 0 {
		t.Errorf("synced %d before any sync", synced)
	}
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYNC})
	if _, synced, _, _ := r.State(); synced != 3 {
		t.Errorf("synced %d after OP_SYNC at 3", synced)
	}
	must(t, r, writeOp(2, 0, "more"))
	if s, err := r.Sync(); err != nil || s != 4 {
		t.Errorf("Sync() = %d, %v; want 4", s, err)
	}
	r.crash()
	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	if applied, synced, _, _ := r.State(); synced != 4 || applied != 4 {
		t.Errorf("after a crash: applied %d synced %d, want 4 and 4", applied, synced)
	}
}

func TestOpsSince(t *testing.T) {
	r := openTest(t, t.TempDir(), ReplicaOptions{MaxLogOps: 5})
	defer r.Close()
	for i := uint64(0); i < 8; i++ {
		must(t, r, mkdirOp(1, string(rune('a'+i)), i+2, 0o755))
	}
	ops, err := r.OpsSince(5)
	if err != nil || len(ops) != 3 || ops[0].Seq != 6 || ops[2].Name != "h" {
		t.Fatalf("OpsSince(5) = %v, %v", ops, err)
	}
	if ops, err := r.OpsSince(8); err != nil || len(ops) != 0 {
		t.Errorf("OpsSince(applied) = %v, %v", ops, err)
	}
	if _, err := r.OpsSince(2); !errors.Is(err, ErrLogTruncated) {
		t.Errorf("OpsSince(2) with 5 ops kept: %v, want ErrLogTruncated", err)
	}
	if _, err := r.OpsSince(9); !errors.Is(err, ErrGap) {
		t.Errorf("OpsSince beyond applied: %v, want ErrGap", err)
	}
	resp, _ := r.Fence(0)
	if resp.LogFirstSeq != 4 {
		t.Errorf("log_first_seq %d, want 4", resp.LogFirstSeq)
	}
	small := openTest(t, t.TempDir(), ReplicaOptions{MaxLogBytes: 3000})
	defer small.Close()
	for i := uint64(0); i < 10; i++ {
		must(t, small, &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: string(rune('a' + i)), Fid: i + 2, Mode: 0o755})
		must(t, small, &brickpb.Op{Type: brickpb.OpType_OP_SETXATTR, Fid: i + 2, Xattr: "user.x", Data: make([]byte, 1000)})
	}
	if _, err := small.OpsSince(10); !errors.Is(err, ErrLogTruncated) {
		t.Errorf("byte-bounded log still holds op 11: %v", err)
	}
	if ops, err := small.OpsSince(18); err != nil || len(ops) != 2 {
		t.Errorf("byte-bounded log: %d ops, %v", len(ops), err)
	}
}

// TestBigLogRecords: big write ops are logged, scanned, replaced (a stale
// tail), trimmed and counted like the small ones, also across a reopen
// (which finds segments holding records trimmed before).
func TestBigLogRecords(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, dir, ReplicaOptions{MaxLogBytes: 1 << 20})
	must(t, r, createOp(1, "f", 2, 0o644))
	data := make([]byte, 100<<10)
	for i := range 30 { // 3 MiB through a 1 MiB log
		for j := range data {
			data[j] = byte(i)
		}
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 2, Offset: int64(i) * int64(len(data)), Data: data})
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: 2, Valid: uint32(brickpb.SetattrBit_SETATTR_MODE), Mode: 0o600 + uint32(i%2)})
	}
	check := func(r *Replica) {
		t.Helper()
		r.mu.Lock()
		first, last, size := r.logFirst, r.logLast, r.logBytes
		r.mu.Unlock()
		if last != 61 || size > 1<<20 || size < 512<<10 {
			t.Fatalf("log %d..%d, %d bytes: want it to end at 61 and fill most of 1 MiB", first, last, size)
		}
		ops, err := r.OpsSince(first - 1)
		if err != nil || uint64(len(ops)) != last-first+1 {
			t.Fatalf("OpsSince(%d): %d ops, %v", first-1, len(ops), err)
		}
		var sum int64
		for _, op := range ops {
			if op.Type == brickpb.OpType_OP_WRITE && (len(op.Data) != len(data) || op.Data[0] != byte(op.Offset/int64(len(data)))) {
				t.Fatalf("op %d: %d bytes starting %d", op.Seq, len(op.Data), op.Data[0])
			}
			enc, _ := encodeLogRec(op)
			sum += int64(walHdr + len(enc))
		}
		if sum != size {
			t.Fatalf("log bytes counted %d, records hold %d", size, sum)
		}
		if op, err := r.logged(last - 1); err != nil || op == nil || op.Type != brickpb.OpType_OP_WRITE {
			t.Fatalf("logged(%d): %v, %v", last-1, op, err)
		}
	}
	check(r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openTest(t, dir, ReplicaOptions{MaxLogBytes: 1 << 20})
	defer r.Close()
	check(r)
}
