package replica

import (
	"testing"

	"github.com/brickvol/brick/proto/brickpb"
)

// A barrier fsyncs the files that only convergent ops changed since the
// last flush, and falls back to a syncfs of the whole file system for
// anything else: the namespace, a directory, a meta.db commit, too many
// files, a file it cannot open.
func TestSyncFlushesWhatChanged(t *testing.T) {
	r := newTest(t)
	if !r.metaWithTree {
		t.Skip("meta.db is not on the tree's file system: every barrier is a syncfs there")
	}
	sync := func() {
		t.Helper()
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYNC})
	}
	setattr := func(fid uint64, mode uint32) *brickpb.Op {
		return &brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: fid, Valid: uint32(brickpb.SetattrBit_SETATTR_MODE), Mode: mode}
	}
	steps := []struct {
		name string
		ops  []*brickpb.Op
		file bool // a barrier of fsyncs, else a syncfs
	}{
		{"creates", []*brickpb.Op{createOp(1, "a", 2, 0o644), createOp(1, "b", 3, 0o644), createOp(1, "c", 4, 0o644)}, false},
		{"one file written", []*brickpb.Op{writeOp(2, 0, "hello"), setattr(2, 0o600)}, true},
		{"nothing new", nil, true},
		{"two files", []*brickpb.Op{writeOp(2, 5, " world"), writeOp(3, 0, "x"),
			{Type: brickpb.OpType_OP_TRUNCATE, Fid: 3, Size: 1}}, true},
		{"three files", []*brickpb.Op{writeOp(2, 0, "a"), writeOp(3, 0, "b"), writeOp(4, 0, "c")}, false},
		{"xattr set unconditionally", []*brickpb.Op{{Type: brickpb.OpType_OP_SETXATTR, Fid: 2, Xattr: "user.k", Data: []byte("v")}}, true},
		{"xattr created", []*brickpb.Op{{Type: brickpb.OpType_OP_SETXATTR, Fid: 2, Xattr: "user.n", Data: []byte("v"), Flags: 1}}, false},
		{"write then mkdir", []*brickpb.Op{writeOp(2, 0, "b"), mkdirOp(1, "d", 5, 0o755)}, false},
		{"directory's mode", []*brickpb.Op{setattr(5, 0o700)}, false},
		{"write then unlink", []*brickpb.Op{writeOp(4, 0, "z"), unlinkOp(1, "c")}, false},
		{"one file again", []*brickpb.Op{writeOp(3, 0, "y")}, true},
	}
	for _, s := range steps {
		files, fs := r.fileSyncs, r.fsSyncs
		for _, op := range s.ops {
			must(t, r, op)
		}
		sync()
		gotFile, gotFS := r.fileSyncs-files, r.fsSyncs-fs
		if len(s.ops) == 0 {
			// Nothing applied since the last barrier but the barrier itself.
			if gotFS != 0 || gotFile > 1 {
				t.Errorf("%s: %d file barriers and %d syncfs, want at most one file barrier", s.name, gotFile, gotFS)
			}
			continue
		}
		if s.file && (gotFile != 1 || gotFS != 0) || !s.file && (gotFS != 1 || gotFile != 0) {
			t.Errorf("%s: %d file barriers and %d syncfs, want file barrier %v", s.name, gotFile, gotFS, s.file)
		}
		if _, synced, _, _ := r.State(); synced == 0 {
			t.Errorf("%s: synced seq still 0", s.name)
		}
	}

	// A commit of meta.db (the applied position, every so often) is made
	// durable by the next barrier, which is then a syncfs.
	must(t, r, writeOp(2, 0, "c"))
	r.applyMu.Lock()
	if err := r.commit(false, nil); err != nil {
		t.Fatal(err)
	}
	r.applyMu.Unlock()
	fs := r.fsSyncs
	sync()
	if r.fsSyncs != fs+1 {
		t.Errorf("barrier after a commit: %d syncfs, want 1", r.fsSyncs-fs)
	}

	// Close flushes the op log and meta.db that file barriers left to the
	// page cache, even with nothing applied since the last barrier.
	must(t, r, writeOp(2, 0, "d"))
	sync()
	fs = r.fsSyncs
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if r.fsSyncs != fs+1 {
		t.Errorf("Close after a file barrier: %d syncfs, want 1", r.fsSyncs-fs)
	}
}
