package replica

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/brickvol/brick/fuse"
	"github.com/brickvol/brick/proto/brickpb"
)

var _ fuse.Backend = (*Local)(nil)

func TestLocalBackend(t *testing.T) {
	r := newTest(t)
	if _, err := r.Fence(3); err != nil {
		t.Fatal(err)
	}
	l := NewLocal(r)
	ctx := context.Background()
	dir := l.NewFID()
	if dir != 2 {
		t.Errorf("first NewFID = %d, want 2", dir)
	}
	res, err := l.Do(ctx, &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: fuse.RootFID, Name: "d", Fid: dir, Mode: 0o755})
	if err != nil || res.Errno != 0 || res.Attr.Fid != dir {
		t.Fatalf("mkdir: %v %v", res, err)
	}
	f := l.NewFID()
	op := &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: dir, Name: "f", Fid: f, Mode: 0o644}
	if res, err := l.Do(ctx, op); err != nil || res.Errno != 0 {
		t.Fatalf("create: %v %v", res, err)
	}
	if op.Seq != 2 || op.Epoch != 3 {
		t.Errorf("Do filled in seq %d epoch %d, want 2 and 3", op.Seq, op.Epoch)
	}
	if res, _ := l.Do(ctx, &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: dir, Name: "f", Fid: l.NewFID()}); res.Errno != uint32(syscall.EEXIST) {
		t.Errorf("second create: %v, want EEXIST", res)
	}
	if _, err := l.Do(ctx, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: f, Offset: 3, Data: []byte("abc")}); err != nil {
		t.Fatal(err)
	}
	data, err := l.Read(ctx, f, 0, 100)
	if err != nil || string(data) != "\x00\x00\x00abc" {
		t.Errorf("read: %q %v", data, err)
	}
	if _, err := l.Read(ctx, dir, 0, 10); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("read of a dir: %v, want EISDIR", err)
	}
	resp, err := l.Meta(ctx, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_LOOKUP, Parent: dir, Name: "f"})
	if err != nil || resp.Attr.Fid != f || resp.Attr.Size != 6 {
		t.Errorf("lookup: %v %v", resp, err)
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if applied, synced, _, _ := r.State(); synced != applied {
		t.Errorf("synced %d, applied %d after Sync", synced, applied)
	}
	// A file ID the caller picked itself keeps NewFID above it.
	if res, _ := l.Do(ctx, &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: "g", Fid: 100}); res.Errno != 0 {
		t.Fatal(res)
	}
	if n := l.NewFID(); n <= 100 {
		t.Errorf("NewFID after file 100: %d", n)
	}
	// A new Local over a reopened replica starts above its max file ID.
	dirPath := r.Dir()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Do(ctx, &brickpb.Op{Type: brickpb.OpType_OP_SYNC}); !errors.Is(err, ErrClosed) {
		t.Errorf("Do on a closed replica: %v", err)
	}
	r2 := openTest(t, dirPath, ReplicaOptions{})
	defer r2.Close()
	if n := NewLocal(r2).NewFID(); n != 101 {
		t.Errorf("NewFID after reopening: %d, want 101", n)
	}
}
