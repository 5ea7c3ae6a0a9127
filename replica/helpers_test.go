package replica

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/brickvol/brick/proto/brickpb"
)

// testLogger routes a replica's logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func openTest(t testing.TB, dir string, opts ReplicaOptions) *Replica {
	t.Helper()
	needRoot(t)
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	r, err := OpenReplica(dir, opts)
	if err != nil {
		t.Fatalf("OpenReplica(%s): %v", dir, err)
	}
	return r
}

// newTest opens a fresh replica, closed at the end of the test.
func newTest(t testing.TB) *Replica {
	t.Helper()
	r := openTest(t, filepath.Join(t.TempDir(), "vol"), ReplicaOptions{})
	t.Cleanup(func() { r.Close() })
	return r
}

// next fills in op's seq and epoch so that it is the replica's next op.
func next(r *Replica, op *brickpb.Op) *brickpb.Op {
	applied, _, promised, _ := r.State()
	op.Seq, op.Epoch = applied+1, max(op.Epoch, promised)
	return op
}

// do applies op as the replica's next op and returns its errno.
func do(t testing.TB, r *Replica, op *brickpb.Op) (*brickpb.Attr, syscall.Errno) {
	t.Helper()
	res, err := r.Apply([]*brickpb.Op{next(r, op)})
	if err != nil {
		t.Fatalf("applying op %d (%s fid %d parent %d %q): %v", op.Seq, op.Type, op.Fid, op.Parent, op.Name, err)
	}
	return res[0].Attr, syscall.Errno(res[0].Errno)
}

// must applies op and fails the test unless it succeeds.
func must(t testing.TB, r *Replica, op *brickpb.Op) *brickpb.Attr {
	t.Helper()
	a, e := do(t, r, op)
	if e != 0 {
		t.Fatalf("%s %q: %v", op.Type, op.Name, e)
	}
	return a
}

func mkdirOp(parent uint64, name string, fid uint64, mode uint32) *brickpb.Op {
	return &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: parent, Name: name, Fid: fid, Mode: mode}
}

func createOp(parent uint64, name string, fid uint64, mode uint32) *brickpb.Op {
	return &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: parent, Name: name, Fid: fid, Mode: mode}
}

func writeOp(fid uint64, off int64, data string) *brickpb.Op {
	return &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: fid, Offset: off, Data: []byte(data)}
}

func renameOp(parent uint64, name string, np uint64, nn string, flags uint32) *brickpb.Op {
	return &brickpb.Op{Type: brickpb.OpType_OP_RENAME, Parent: parent, Name: name, NewParent: np, NewName: nn, Flags: flags}
}

func unlinkOp(parent uint64, name string) *brickpb.Op {
	return &brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: parent, Name: name}
}

func meta(t testing.TB, r *Replica, req *brickpb.MetaRequest) *brickpb.MetaResponse {
	t.Helper()
	_, _, promised, _ := r.State()
	req.Ref = &brickpb.VolumeRef{Epoch: promised}
	resp, err := r.Meta(context.Background(), req)
	if err != nil {
		t.Fatalf("Meta %v: %v", req, err)
	}
	return resp
}

func lookup(t testing.TB, r *Replica, parent uint64, name string) (*brickpb.Attr, syscall.Errno) {
	t.Helper()
	resp := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_LOOKUP, Parent: parent, Name: name})
	return resp.Attr, syscall.Errno(resp.Errno)
}

func readAll(t testing.TB, r *Replica, fid uint64) (string, syscall.Errno) {
	t.Helper()
	_, _, promised, _ := r.State()
	resp, err := r.Read(context.Background(), &brickpb.ReadRequest{
		Ref: &brickpb.VolumeRef{Epoch: promised}, Fid: fid, Size: 1 << 20})
	if err != nil {
		t.Fatalf("Read %d: %v", fid, err)
	}
	return string(resp.Data), syscall.Errno(resp.Errno)
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root: a replica tags every inode with a trusted.* xattr (CAP_SYS_ADMIN), " +
			"and ops chown and mknod; CI runs as root")
	}
}

func digest(t testing.TB, r *Replica) string {
	t.Helper()
	d, err := Digest(r)
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	return d
}

// sameTrees fails the test, showing the difference, unless a and b hold
// the same files.
func sameTrees(t testing.TB, a, b *Replica) {
	t.Helper()
	ma, err := Manifest(a)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := Manifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if hashLines(ma) == hashLines(mb) {
		return
	}
	in := map[string]int{}
	for _, l := range ma {
		in[l]++
	}
	for _, l := range mb {
		in[l]--
	}
	for l, n := range in {
		switch {
		case n > 0:
			t.Errorf("only in %s: %s", a.Dir(), l)
		case n < 0:
			t.Errorf("only in %s: %s", b.Dir(), l)
		}
	}
	t.FailNow()
}

// crash abandons r as a killed process would: nothing pending is written
// and meta.db is not marked clean (what earlier NoSync commits wrote stays,
// as it would in the page cache).
func (r *Replica) crash() {
	r.mu.Lock()
	r.closed = true
	if r.progress != nil {
		close(r.progress)
		r.progress = nil
	}
	r.mu.Unlock()
	r.readers.Wait()
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.release()
}
