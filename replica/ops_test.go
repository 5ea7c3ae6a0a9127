package replica

import (
	"google.golang.org/protobuf/proto"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

func TestOpenCreatesLayout(t *testing.T) {
	r := newTest(t)
	for _, p := range []string{"data", "fids", "meta.db"} {
		if _, err := os.Stat(filepath.Join(r.Dir(), p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	a := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETATTR, Fid: 1}).Attr
	if a.Fid != 1 || a.Mode != unix.S_IFDIR|0o755 {
		t.Errorf("root attr = %v, want fid 1 mode 040755", a)
	}
	if os.Geteuid() == 0 && (a.Uid != 0 || a.Gid != 0) {
		t.Errorf("root owned by %d:%d, want 0:0", a.Uid, a.Gid)
	}
}

// TestOpErrnos applies one op after another, each with its expected errno,
// over a tree the earlier rows built.
func TestOpErrnos(t *testing.T) {
	r := newTest(t)
	type T = brickpb.OpType
	op := func(typ T, o *brickpb.Op) *brickpb.Op { o.Type = typ; return o }
	long := strings.Repeat("n", 255)
	rows := []struct {
		name string
		op   *brickpb.Op
		want syscall.Errno
	}{
		{"mkdir", mkdirOp(1, "d", 2, 0o755), 0},
		{"mkdir existing", mkdirOp(1, "d", 3, 0o755), unix.EEXIST},
		{"create", createOp(2, "f", 4, 0o644), 0},
		{"create existing", createOp(2, "f", 5, 0o644), unix.EEXIST},
		{"create reusing a file ID", createOp(2, "g", 4, 0o644), unix.EEXIST},
		{"create reusing a directory ID", createOp(2, "g", 2, 0o644), unix.EEXIST},
		{"create with file ID 0", createOp(2, "g", 0, 0o644), unix.EINVAL},
		{"create in a missing dir", createOp(99, "g", 5, 0o644), unix.ENOENT},
		{"create in a file", createOp(4, "g", 5, 0o644), unix.ENOTDIR},
		{"create empty name", createOp(1, "", 5, 0o644), unix.EINVAL},
		{"create dot", createOp(1, ".", 5, 0o644), unix.EINVAL},
		{"create dotdot", createOp(1, "..", 5, 0o644), unix.EINVAL},
		{"create slash", createOp(1, "a/b", 5, 0o644), unix.EINVAL},
		{"create NUL", createOp(1, "a\x00b", 5, 0o644), unix.EINVAL},
		{"create 256-byte name", createOp(1, long+"x", 5, 0o644), unix.ENAMETOOLONG},
		{"create 255-byte name", createOp(1, long, 5, 0o644), 0},
		{"create with a dir type", createOp(1, "g", 6, unix.S_IFDIR|0o644), unix.EINVAL},
		{"unlink missing", unlinkOp(2, "nope"), unix.ENOENT},
		{"unlink a dir", unlinkOp(1, "d"), unix.EISDIR},
		{"rmdir non-empty", op(brickpb.OpType_OP_RMDIR, &brickpb.Op{Parent: 1, Name: "d"}), unix.ENOTEMPTY},
		{"rmdir a file", op(brickpb.OpType_OP_RMDIR, &brickpb.Op{Parent: 2, Name: "f"}), unix.ENOTDIR},
		{"rmdir missing", op(brickpb.OpType_OP_RMDIR, &brickpb.Op{Parent: 2, Name: "nope"}), unix.ENOENT},
		{"link", op(brickpb.OpType_OP_LINK, &brickpb.Op{Fid: 4, Parent: 1, Name: "l"}), 0},
		{"link a dir", op(brickpb.OpType_OP_LINK, &brickpb.Op{Fid: 2, Parent: 1, Name: "l2"}), unix.EPERM},
		{"link a missing file", op(brickpb.OpType_OP_LINK, &brickpb.Op{Fid: 77, Parent: 1, Name: "l2"}), unix.ENOENT},
		{"link over a name", op(brickpb.OpType_OP_LINK, &brickpb.Op{Fid: 4, Parent: 2, Name: "f"}), unix.EEXIST},
		{"symlink", op(brickpb.OpType_OP_SYMLINK, &brickpb.Op{Parent: 1, Name: "s", Fid: 6, Target: "d/f"}), 0},
		{"symlink empty target", op(brickpb.OpType_OP_SYMLINK, &brickpb.Op{Parent: 1, Name: "s2", Fid: 7, Target: ""}), unix.ENOENT},
		{"symlink huge target", op(brickpb.OpType_OP_SYMLINK, &brickpb.Op{Parent: 1, Name: "s2", Fid: 7, Target: strings.Repeat("a", 4096)}), unix.ENAMETOOLONG},
		{"mknod fifo", op(brickpb.OpType_OP_MKNOD, &brickpb.Op{Parent: 1, Name: "p", Fid: 7, Mode: unix.S_IFIFO | 0o640}), 0},
		{"mknod regular", op(brickpb.OpType_OP_MKNOD, &brickpb.Op{Parent: 1, Name: "r", Fid: 8, Mode: unix.S_IFREG | 0o640}), 0},
		{"mknod dir", op(brickpb.OpType_OP_MKNOD, &brickpb.Op{Parent: 1, Name: "x", Fid: 9, Mode: unix.S_IFDIR | 0o640}), unix.EINVAL},
		{"write", writeOp(4, 0, "hello world"), 0},
		{"write a dir", writeOp(2, 0, "x"), unix.EISDIR},
		{"write a fifo", writeOp(7, 0, "x"), unix.EINVAL},
		{"write a symlink", writeOp(6, 0, "x"), unix.EINVAL},
		{"write a missing file", writeOp(99, 0, "x"), unix.ENOENT},
		{"write at a negative offset", writeOp(4, -1, "x"), unix.EINVAL},
		{"truncate", op(brickpb.OpType_OP_TRUNCATE, &brickpb.Op{Fid: 4, Size: 5}), 0},
		{"truncate negative", op(brickpb.OpType_OP_TRUNCATE, &brickpb.Op{Fid: 4, Size: -1}), unix.EINVAL},
		{"truncate a dir", op(brickpb.OpType_OP_TRUNCATE, &brickpb.Op{Fid: 2, Size: 0}), unix.EISDIR},
		{"fallocate", op(brickpb.OpType_OP_FALLOCATE, &brickpb.Op{Fid: 8, Offset: 0, Size: 4096}), 0},
		{"fallocate keep size", op(brickpb.OpType_OP_FALLOCATE, &brickpb.Op{Fid: 8, Offset: 4096, Size: 4096, Flags: unix.FALLOC_FL_KEEP_SIZE}), 0},
		{"punch hole", op(brickpb.OpType_OP_FALLOCATE, &brickpb.Op{Fid: 8, Offset: 0, Size: 10, Flags: unix.FALLOC_FL_KEEP_SIZE | unix.FALLOC_FL_PUNCH_HOLE}), 0},
		{"punch hole without keep size", op(brickpb.OpType_OP_FALLOCATE, &brickpb.Op{Fid: 8, Offset: 0, Size: 10, Flags: unix.FALLOC_FL_PUNCH_HOLE}), unix.EOPNOTSUPP},
		{"collapse range", op(brickpb.OpType_OP_FALLOCATE, &brickpb.Op{Fid: 8, Offset: 0, Size: 4096, Flags: unix.FALLOC_FL_COLLAPSE_RANGE}), unix.EOPNOTSUPP},
		{"fallocate zero length", op(brickpb.OpType_OP_FALLOCATE, &brickpb.Op{Fid: 8, Offset: 0, Size: 0}), unix.EINVAL},
		{"setattr mode", op(brickpb.OpType_OP_SETATTR, &brickpb.Op{Fid: 4, Valid: uint32(brickpb.SetattrBit_SETATTR_MODE), Mode: 0o600}), 0},
		{"setattr unknown bit", op(brickpb.OpType_OP_SETATTR, &brickpb.Op{Fid: 4, Valid: 64}), unix.EINVAL},
		{"setattr size of a dir", op(brickpb.OpType_OP_SETATTR, &brickpb.Op{Fid: 2, Valid: uint32(brickpb.SetattrBit_SETATTR_SIZE)}), unix.EISDIR},
		{"setattr size of a fifo", op(brickpb.OpType_OP_SETATTR, &brickpb.Op{Fid: 7, Valid: uint32(brickpb.SetattrBit_SETATTR_SIZE)}), unix.EINVAL},
		{"setattr missing", op(brickpb.OpType_OP_SETATTR, &brickpb.Op{Fid: 99, Valid: uint32(brickpb.SetattrBit_SETATTR_MODE)}), unix.ENOENT},
		{"setxattr", op(brickpb.OpType_OP_SETXATTR, &brickpb.Op{Fid: 4, Xattr: "user.a", Data: []byte("1")}), 0},
		{"setxattr on a dir", op(brickpb.OpType_OP_SETXATTR, &brickpb.Op{Fid: 2, Xattr: "user.d", Data: []byte("2")}), 0},
		{"setxattr create existing", op(brickpb.OpType_OP_SETXATTR, &brickpb.Op{Fid: 4, Xattr: "user.a", Data: []byte("x"), Flags: unix.XATTR_CREATE}), unix.EEXIST},
		{"setxattr replace missing", op(brickpb.OpType_OP_SETXATTR, &brickpb.Op{Fid: 4, Xattr: "user.b", Data: []byte("x"), Flags: unix.XATTR_REPLACE}), unix.ENODATA},
		{"setxattr the brick's own", op(brickpb.OpType_OP_SETXATTR, &brickpb.Op{Fid: 4, Xattr: fidXattr, Data: encodeFID(9)}), unix.EPERM},
		{"setxattr the brick's prefix", op(brickpb.OpType_OP_SETXATTR, &brickpb.Op{Fid: 1, Xattr: "trusted.brick.x", Data: []byte("1")}), unix.EPERM},
		{"setxattr too big", op(brickpb.OpType_OP_SETXATTR, &brickpb.Op{Fid: 4, Xattr: "user.big", Data: make([]byte, 65537)}), unix.E2BIG},
		{"setxattr bad flags", op(brickpb.OpType_OP_SETXATTR, &brickpb.Op{Fid: 4, Xattr: "user.a", Flags: 3}), unix.EINVAL},
		{"removexattr missing", op(brickpb.OpType_OP_REMOVEXATTR, &brickpb.Op{Fid: 4, Xattr: "user.zz"}), unix.ENODATA},
		{"removexattr the brick's own", op(brickpb.OpType_OP_REMOVEXATTR, &brickpb.Op{Fid: 4, Xattr: fidXattr}), unix.EPERM},
		{"forget a linked file", op(brickpb.OpType_OP_FORGET, &brickpb.Op{Fid: 4}), unix.EBUSY},
		{"forget a dir", op(brickpb.OpType_OP_FORGET, &brickpb.Op{Fid: 2}), unix.EINVAL},
		{"forget an unknown file", op(brickpb.OpType_OP_FORGET, &brickpb.Op{Fid: 999}), 0},
		{"rename missing", renameOp(1, "nope", 1, "x", 0), unix.ENOENT},
		{"rename whiteout", renameOp(1, "l", 1, "x", unix.RENAME_WHITEOUT), unix.EINVAL},
		{"rename exchange+noreplace", renameOp(1, "l", 1, "s", unix.RENAME_EXCHANGE|unix.RENAME_NOREPLACE), unix.EINVAL},
		{"rename noreplace onto a name", renameOp(1, "l", 1, "s", unix.RENAME_NOREPLACE), unix.EEXIST},
		{"rename a dir into itself", renameOp(1, "d", 2, "x", 0), unix.EINVAL},
		{"rename a file over a dir", renameOp(1, "l", 1, "d", 0), unix.EISDIR},
		{"rename to a bad name", renameOp(1, "l", 1, "..", 0), unix.EINVAL},
		{"exchange with a missing name", renameOp(1, "l", 1, "nope", unix.RENAME_EXCHANGE), unix.ENOENT},
		{"unknown op", &brickpb.Op{Type: 99}, unix.EINVAL},
		{"unspecified op", &brickpb.Op{}, unix.EINVAL},
	}
	for _, row := range rows {
		if _, got := do(t, r, row.op); got != row.want {
			t.Errorf("%s: errno %v, want %v", row.name, got, row.want)
		}
	}
	if s, _ := readAll(t, r, 4); s != "hello" {
		t.Errorf("file 4 holds %q, want hello", s)
	}
	a, _ := lookup(t, r, 1, "l")
	if a == nil || a.Fid != 4 || a.Nlink != 2 || a.Mode != unix.S_IFREG|0o600 {
		t.Errorf("lookup l = %v, want fid 4, 2 links, mode 0100600", a)
	}
	if a, _ := lookup(t, r, 1, long); a == nil || a.Fid != 5 {
		t.Errorf("lookup of the 255-byte name = %v", a)
	}
	if resp := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READLINK, Fid: 6}); resp.Target != "d/f" {
		t.Errorf("readlink = %v", resp)
	}
	if resp := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READLINK, Fid: 4}); resp.Errno != uint32(unix.EINVAL) {
		t.Errorf("readlink of a file = %v, want EINVAL", resp)
	}
	a = meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETATTR, Fid: 8}).Attr
	if a.Size != 4096 || a.Mode != unix.S_IFREG|0o640 {
		t.Errorf("getattr 8 = %v, want size 4096 mode 0100640", a)
	}
	if a := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETATTR, Fid: 7}).Attr; a.Mode != unix.S_IFIFO|0o640 {
		t.Errorf("fifo mode %o", a.Mode)
	}
}

func TestReaddirAndLookupAnswerFileIDs(t *testing.T) {
	r := newTest(t)
	must(t, r, mkdirOp(1, "d", 10, 0o755))
	must(t, r, createOp(1, "f", 11, 0o644))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYMLINK, Parent: 1, Name: "s", Fid: 12, Target: "/etc"})
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_MKNOD, Parent: 10, Name: "p", Fid: 13, Mode: unix.S_IFIFO | 0o600})
	// An operator's stray file has no file ID: not the volume's.
	if err := os.WriteFile(filepath.Join(r.Dir(), "data", "stray"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: 1}).Entries
	want := []*brickpb.DirEntry{{Name: "d", Fid: 10, Mode: unix.S_IFDIR}, {Name: "f", Fid: 11, Mode: unix.S_IFREG}, {Name: "s", Fid: 12, Mode: unix.S_IFLNK}}
	if len(got) != len(want) {
		t.Fatalf("readdir / = %v, want %v", got, want)
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Fid != want[i].Fid || got[i].Mode != want[i].Mode {
			t.Errorf("entry %d = %v, want %v", i, got[i], want[i])
		}
	}
	resp := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: 10})
	if e := resp.Entries; len(e) != 1 || e[0].Fid != 13 || e[0].Mode != unix.S_IFIFO {
		t.Errorf("readdir /d = %v", e)
	}
	// The directory's own attributes come along: what a GETATTR says.
	if a, want := resp.Attr, meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETATTR, Fid: 10}).Attr; a == nil ||
		a.Fid != 10 || a.Mode != want.Mode || a.Nlink != want.Nlink || a.MtimeNs != want.MtimeNs || a.Size != want.Size {
		t.Errorf("readdir /d attr = %v, want %v", a, want)
	}
	if resp := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: 11}); resp.Errno != uint32(unix.ENOTDIR) {
		t.Errorf("readdir of a file: %v, want ENOTDIR", resp)
	}
	if _, e := lookup(t, r, 1, "stray"); e != unix.ENOENT {
		t.Errorf("lookup of a stray file: %v, want ENOENT", e)
	}
	if a, _ := lookup(t, r, 1, "d"); a.Fid != 10 || a.Nlink != 2 {
		t.Errorf("lookup d = %v", a)
	}
	if a, _ := lookup(t, r, 1, "f"); a.Fid != 11 || a.Nlink != 1 {
		t.Errorf("lookup f = %v (nlink must not count fids/)", a)
	}
	if _, e := lookup(t, r, 1, ".."); e != unix.EINVAL {
		t.Errorf("lookup ..: %v", e)
	}
	if _, e := lookup(t, r, 11, "x"); e != unix.ENOTDIR {
		t.Errorf("lookup in a file: %v", e)
	}
	st := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_STATFS}).Statfs
	if st == nil || st.Blocks == 0 || st.Bsize == 0 || st.Namelen != 255 {
		t.Errorf("statfs = %v", st)
	}
}

func TestLongNamesAndDeepPaths(t *testing.T) {
	r := newTest(t)
	parent, fid, total := uint64(1), uint64(2), 0
	for i := 0; total <= 2*4096; i++ {
		name := strings.Repeat(string(rune('a'+i%26)), 255)
		must(t, r, mkdirOp(parent, name, fid, 0o755))
		parent, fid, total = fid, fid+1, total+256
	}
	must(t, r, createOp(parent, strings.Repeat("z", 255), fid, 0o644))
	must(t, r, writeOp(fid, 0, "deep"))
	r.fds.closeAll() // make the next ops walk the whole path
	if s, _ := readAll(t, r, fid); s != "deep" {
		t.Errorf("read at depth: %q", s)
	}
	if a, e := lookup(t, r, parent, strings.Repeat("z", 255)); e != 0 || a.Fid != fid {
		t.Errorf("lookup at depth: %v %v", a, e)
	}
	// Rename the top directory: every directory below keeps its ID.
	must(t, r, renameOp(1, strings.Repeat("a", 255), 1, "top", 0))
	r.fds.closeAll()
	must(t, r, createOp(parent, "after-rename", fid+1, 0o644))
	if e := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: parent}).Entries; len(e) != 2 {
		t.Errorf("readdir at depth = %v", e)
	}
	if _, err := Digest(r); err != nil {
		t.Errorf("Digest of a deep tree: %v", err)
	}
}

func TestModesExactDespiteUmask(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	r := newTest(t)
	cases := []struct {
		op   *brickpb.Op
		want uint32
	}{
		{createOp(1, "suid", 2, 0o4755), unix.S_IFREG | 0o4755},
		{createOp(1, "sgid", 3, 0o2775), unix.S_IFREG | 0o2775},
		{createOp(1, "open", 4, 0o666), unix.S_IFREG | 0o666},
		{mkdirOp(1, "tmp", 5, 0o1777), unix.S_IFDIR | 0o1777},
		{mkdirOp(1, "shared", 6, 0o2770), unix.S_IFDIR | 0o2770},
		{mkdirOp(6, "plain", 7, 0o700), unix.S_IFDIR | 0o700}, // no inherited setgid
		{&brickpb.Op{Type: brickpb.OpType_OP_MKNOD, Parent: 1, Name: "fifo", Fid: 8, Mode: unix.S_IFIFO | 0o666}, unix.S_IFIFO | 0o666},
		{&brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: 4, Valid: uint32(brickpb.SetattrBit_SETATTR_MODE), Mode: 0o6711}, unix.S_IFREG | 0o6711},
	}
	for _, c := range cases {
		if a := must(t, r, c.op); a.Mode != c.want {
			t.Errorf("%s %q: mode %07o, want %07o", c.op.Type, c.op.Name, a.Mode, c.want)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(r.Dir(), "data", "suid"), &st); err != nil || st.Mode != unix.S_IFREG|0o4755 {
		t.Errorf("on disk: %07o %v", st.Mode, err)
	}
}

func TestOwners(t *testing.T) {
	needRoot(t)
	r := newTest(t)
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "g", Fid: 2, Mode: 0o2775, Uid: 1000, Gid: 2000})
	a := must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 2, Name: "f", Fid: 3, Mode: 0o4750, Uid: 1001, Gid: 1002})
	if a.Uid != 1001 || a.Gid != 1002 || a.Mode != unix.S_IFREG|0o4750 {
		t.Errorf("create in a setgid dir: %v, want 1001:1002 mode 0104750", a)
	}
	a = must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYMLINK, Parent: 2, Name: "s", Fid: 4, Target: "f", Uid: 7, Gid: 8})
	if a.Uid != 7 || a.Gid != 8 {
		t.Errorf("symlink owner %d:%d", a.Uid, a.Gid)
	}
	a = must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_MKNOD, Parent: 2, Name: "null", Fid: 5, Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3), Uid: 9, Gid: 9})
	if a.Rdev != unix.Mkdev(1, 3) || a.Uid != 9 {
		t.Errorf("mknod chr: %v", a)
	}
	a = must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: 3,
		Valid: uint32(brickpb.SetattrBit_SETATTR_UID | brickpb.SetattrBit_SETATTR_MODE), Uid: 5, Mode: 0o6755})
	if a.Uid != 5 || a.Gid != 1002 || a.Mode != unix.S_IFREG|0o6755 {
		t.Errorf("setattr uid+mode: %v", a)
	}
	a = must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: 4, Valid: uint32(brickpb.SetattrBit_SETATTR_GID), Gid: 33})
	if a.Gid != 33 || a.Uid != 7 {
		t.Errorf("setattr gid of a symlink: %v", a)
	}
	a = must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: 2,
		Valid: uint32(brickpb.SetattrBit_SETATTR_ATIME | brickpb.SetattrBit_SETATTR_MTIME), AtimeNs: 1e9, MtimeNs: 2e9 + 5})
	if a.AtimeNs != 1e9 || a.MtimeNs != 2e9+5 {
		t.Errorf("setattr times: %v", a)
	}
}

func TestRenames(t *testing.T) {
	r := newTest(t)
	must(t, r, mkdirOp(1, "a", 2, 0o755))
	must(t, r, mkdirOp(1, "b", 3, 0o755))
	must(t, r, mkdirOp(2, "sub", 4, 0o755))
	must(t, r, createOp(2, "x", 5, 0o644))
	must(t, r, writeOp(5, 0, "x"))
	must(t, r, createOp(3, "y", 6, 0o644))
	must(t, r, writeOp(6, 0, "y"))

	// Across directories, over an existing file: y's inode stays in fids/.
	if a := must(t, r, renameOp(2, "x", 3, "y", 0)); a.Fid != 5 {
		t.Errorf("rename result %v", a)
	}
	if a, _ := lookup(t, r, 3, "y"); a.Fid != 5 {
		t.Errorf("b/y is %v, want file 5", a)
	}
	if s, _ := readAll(t, r, 6); s != "y" {
		t.Errorf("the replaced file reads %q", s)
	}
	// A directory moves: its ID follows, and ops under it still work.
	must(t, r, renameOp(2, "sub", 3, "moved", 0))
	r.fds.closeAll()
	must(t, r, createOp(4, "in-moved", 7, 0o644))
	if a, e := lookup(t, r, 3, "moved"); e != 0 || a.Fid != 4 {
		t.Errorf("b/moved = %v %v", a, e)
	}
	// Exchange a directory and a file across parents.
	must(t, r, renameOp(3, "moved", 1, "a", unix.RENAME_EXCHANGE))
	r.fds.closeAll()
	if a, _ := lookup(t, r, 1, "a"); a.Fid != 4 {
		t.Errorf("/a is %v after exchange, want dir 4", a)
	}
	if a, _ := lookup(t, r, 3, "moved"); a.Fid != 2 {
		t.Errorf("/b/moved is %v after exchange, want dir 2", a)
	}
	must(t, r, createOp(2, "still-works", 8, 0o644))
	if a, _ := lookup(t, r, 3, "moved"); a.Nlink != 2 {
		t.Errorf("b/moved: %v", a)
	}
	must(t, r, createOp(4, "also", 9, 0o644))
	if _, e := lookup(t, r, 1, "a"); e != 0 {
		t.Fatal(e)
	}
	if a, _ := lookup(t, r, 4, "also"); a.Fid != 9 {
		t.Errorf("/a/also: %v", a)
	}
	// Exchange two files.
	must(t, r, createOp(1, "f1", 10, 0o644))
	must(t, r, createOp(1, "f2", 11, 0o600))
	must(t, r, renameOp(1, "f1", 1, "f2", unix.RENAME_EXCHANGE))
	if a, _ := lookup(t, r, 1, "f1"); a.Fid != 11 {
		t.Errorf("f1 after exchange: %v", a)
	}
	// A directory replacing an empty one: the old one leaves the map.
	must(t, r, mkdirOp(1, "empty", 12, 0o755))
	must(t, r, mkdirOp(1, "full", 13, 0o755))
	must(t, r, createOp(13, "f", 14, 0o644))
	must(t, r, renameOp(1, "full", 1, "empty", 0))
	r.fds.closeAll()
	if _, e := do(t, r, createOp(12, "g", 15, 0o644)); e != unix.ENOENT {
		t.Errorf("create in the replaced dir: %v, want ENOENT", e)
	}
	if a, _ := lookup(t, r, 13, "f"); a == nil || a.Fid != 14 {
		t.Errorf("full/f after the move: %v", a)
	}
	// Renaming a name onto itself and hard links onto each other: no-ops.
	must(t, r, renameOp(1, "f1", 1, "f1", 0))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_LINK, Fid: 11, Parent: 1, Name: "f1-link"})
	must(t, r, renameOp(1, "f1", 1, "f1-link", 0))
	if a, e := lookup(t, r, 1, "f1"); e != 0 || a.Nlink != 2 {
		t.Errorf("hard links renamed onto each other: %v %v", a, e)
	}
}

func TestUnlinkForgetsWithTheLastName(t *testing.T) {
	r := newTest(t)
	must(t, r, createOp(1, "f", 2, 0o644))
	must(t, r, writeOp(2, 0, "0123456789"))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_LINK, Fid: 2, Parent: 1, Name: "g"})
	must(t, r, createOp(1, "other", 3, 0o644))
	used := func() int64 { r.mu.Lock(); defer r.mu.Unlock(); return r.used }
	if u := used(); u != 10 {
		t.Fatalf("used %d, want 10", u)
	}
	forget := func(name string, fid uint64) *brickpb.Op {
		op := unlinkOp(1, name)
		op.Flags, op.Fid = brickpb.UnlinkForget, fid
		return op
	}
	// Not the last name: nothing is forgotten.
	if a := must(t, r, forget("f", 2)); a == nil || a.Nlink != 1 {
		t.Fatalf("unlink of one of two names: %v, want nlink 1", a)
	}
	// The name is another file's: that one is not forgotten either.
	must(t, r, createOp(1, "h", 4, 0o644))
	if a := must(t, r, forget("h", 2)); a == nil || a.Fid != 4 || a.Nlink != 0 {
		t.Fatalf("unlink of h naming fid 2: %v", a)
	}
	if _, e := readAll(t, r, 4); e != 0 {
		t.Fatalf("a file the unlink did not name was forgotten: %v", e)
	}
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_FORGET, Fid: 4})
	// The last name: forgotten in the same op, its bytes no longer counted.
	if a := must(t, r, forget("g", 2)); a == nil || a.Fid != 2 || a.Nlink != 0 || a.Size != 10 {
		t.Fatalf("unlink of the last name: %v, want fid 2 nlink 0 size 10", a)
	}
	if _, e := readAll(t, r, 2); e != unix.ENOENT {
		t.Fatalf("read after an unlink that forgets: %v, want ENOENT", e)
	}
	if u := used(); u != 0 {
		t.Fatalf("used %d after the forget, want 0", u)
	}
	if err := r.countUsed(); err != nil || used() != 0 {
		t.Fatalf("recount: %v, used %d", err, used())
	}
	if ents, _ := os.ReadDir(filepath.Join(r.Dir(), "fids")); len(ents) != 1 {
		t.Errorf("fids/ holds %v, want only fid 3's link", ents)
	}
}

func TestUnlinkedFileReadableUntilForget(t *testing.T) {
	r := newTest(t)
	must(t, r, createOp(1, "f", 2, 0o644))
	must(t, r, writeOp(2, 0, "still here"))
	if a := must(t, r, unlinkOp(1, "f")); a == nil || a.Nlink != 0 || a.Fid != 2 {
		t.Errorf("unlink result %v, want fid 2 with no links", a)
	}
	if _, e := lookup(t, r, 1, "f"); e != unix.ENOENT {
		t.Errorf("lookup after unlink: %v", e)
	}
	if s, e := readAll(t, r, 2); s != "still here" || e != 0 {
		t.Errorf("read after unlink: %q %v", s, e)
	}
	must(t, r, writeOp(2, 0, "STILL"))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_LINK, Fid: 2, Parent: 1, Name: "back"})
	must(t, r, unlinkOp(1, "back"))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_FORGET, Fid: 2})
	if _, e := readAll(t, r, 2); e != unix.ENOENT {
		t.Errorf("read after forget: %v", e)
	}
	if _, e := do(t, r, &brickpb.Op{Type: brickpb.OpType_OP_FORGET, Fid: 2}); e != 0 {
		t.Errorf("second forget: %v, want success", e)
	}
	if ents, _ := os.ReadDir(filepath.Join(r.Dir(), "fids")); len(ents) != 0 {
		t.Errorf("fids/ still holds %v", ents)
	}
}

func TestXattrsHideTheBricksOwn(t *testing.T) {
	r := newTest(t)
	must(t, r, mkdirOp(1, "d", 2, 0o755))
	must(t, r, createOp(2, "f", 3, 0o644))
	for _, fid := range []uint64{1, 2, 3} {
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SETXATTR, Fid: fid, Xattr: "user.k", Data: []byte("v")})
		names := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_LISTXATTR, Fid: fid}).Names
		if len(names) != 1 || names[0] != "user.k" {
			t.Errorf("listxattr %d = %q, want [user.k]", fid, names)
		}
		resp := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETXATTR, Fid: fid, Xattr: "user.k"})
		if string(resp.Data) != "v" || resp.Errno != 0 {
			t.Errorf("getxattr %d = %v", fid, resp)
		}
		resp = meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETXATTR, Fid: fid, Xattr: fidXattr})
		if resp.Errno != uint32(unix.ENODATA) || len(resp.Data) != 0 {
			t.Errorf("getxattr %s of %d = %v, want ENODATA", fidXattr, fid, resp)
		}
		must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_REMOVEXATTR, Fid: fid, Xattr: "user.k"})
		resp = meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETXATTR, Fid: fid, Xattr: "user.k"})
		if resp.Errno != uint32(unix.ENODATA) {
			t.Errorf("getxattr after removal: %v", resp)
		}
	}
	// ext4 refuses a value larger than a block with ENOSPC: a limit of the
	// file system, so a result, not the brick's failure.
	big := make([]byte, 65536)
	if _, e := do(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SETXATTR, Fid: 3, Xattr: "user.big", Data: big}); e == 0 {
		if resp := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETXATTR, Fid: 3, Xattr: "user.big"}); len(resp.Data) != len(big) {
			t.Errorf("64 KiB xattr read back as %d bytes (errno %d)", len(resp.Data), resp.Errno)
		}
	} else {
		t.Logf("a 64 KiB xattr: %v (file system limit)", e)
	}
}

// TestNoEscapeThroughSymlinks: nothing outside data/ may change, whatever
// symlinks the tree holds, made by ops or planted by hand.
func TestNoEscapeThroughSymlinks(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("intact"), 0o640); err != nil {
		t.Fatal(err)
	}
	before, err := TreeDigest(outside)
	if err != nil {
		t.Fatal(err)
	}
	r := newTest(t)
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYMLINK, Parent: 1, Name: "esc", Fid: 2, Target: outside})
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYMLINK, Parent: 1, Name: "v", Fid: 3, Target: victim})
	for _, op := range []*brickpb.Op{
		createOp(2, "x", 10, 0o644),
		mkdirOp(2, "x", 10, 0o755),
		writeOp(3, 0, "pwned"),
		{Type: brickpb.OpType_OP_TRUNCATE, Fid: 3},
		{Type: brickpb.OpType_OP_SETATTR, Fid: 3, Valid: uint32(brickpb.SetattrBit_SETATTR_MODE | brickpb.SetattrBit_SETATTR_SIZE), Mode: 0o777},
		{Type: brickpb.OpType_OP_SETATTR, Fid: 3, Valid: uint32(brickpb.SetattrBit_SETATTR_MODE | brickpb.SetattrBit_SETATTR_MTIME), Mode: 0o777},
		{Type: brickpb.OpType_OP_SETXATTR, Fid: 3, Xattr: "user.x", Data: []byte("1")},
		{Type: brickpb.OpType_OP_LINK, Fid: 3, Parent: 2, Name: "l"},
		renameOp(1, "v", 2, "moved", 0),
		unlinkOp(2, "victim"),
	} {
		do(t, r, op) // errno or not, the outside must not change
	}
	if _, e := lookup(t, r, 2, "victim"); e != unix.ENOTDIR {
		t.Errorf("lookup through a symlink: %v, want ENOTDIR", e)
	}
	if _, e := readAll(t, r, 3); e != unix.EINVAL {
		t.Errorf("read of a symlink: %v, want EINVAL", e)
	}
	// A directory swapped for a symlink to / behind the brick's back.
	must(t, r, mkdirOp(1, "d", 20, 0o755))
	must(t, r, mkdirOp(20, "e", 21, 0o755))
	data := filepath.Join(r.Dir(), "data")
	if err := os.Rename(filepath.Join(data, "d"), filepath.Join(data, "d.real")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(data, "d")); err != nil {
		t.Fatal(err)
	}
	r.fds.closeAll()
	res, err := r.Apply([]*brickpb.Op{next(r, createOp(21, "victim", 22, 0o644))})
	if err == nil && res[0].Errno == 0 {
		t.Errorf("create below a planted symlink succeeded")
	}
	t.Logf("create below a planted symlink: %v %v", res, err)
	if r.Suspect() == "" {
		t.Errorf("a tree that does not match the map must make the replica suspect")
	}
	if _, err := r.Meta(t.Context(), &brickpb.MetaRequest{Ref: &brickpb.VolumeRef{}, Kind: brickpb.MetaKind_META_READDIR, Fid: 21}); err == nil {
		t.Errorf("readdir below a planted symlink succeeded")
	}
	after, err := TreeDigest(outside)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		m, _ := TreeManifest(outside)
		t.Fatalf("the outside changed: %q", m)
	}
}

func TestChunkSums(t *testing.T) {
	r := newTest(t)
	must(t, r, createOp(1, "f", 2, 0o644))
	data := make([]byte, 2*ChunkSize+100)
	for i := range data {
		data[i] = byte(i * 7)
	}
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: 2, Data: data})
	want := func() []uint32 {
		var out []uint32
		for off := 0; off < len(data); off += ChunkSize {
			out = append(out, crc32c(data[off:min(off+ChunkSize, len(data))]))
		}
		return out
	}
	check := func(r *Replica, what string) {
		t.Helper()
		got, size, err := r.ChunkSums(2)
		if err != nil || size != int64(len(data)) {
			t.Fatalf("%s: ChunkSums: size %d, %v", what, size, err)
		}
		w := want()
		if len(got) != len(w) {
			t.Fatalf("%s: %d sums, want %d", what, len(got), len(w))
		}
		for i := range w {
			if got[i] != w[i] {
				t.Errorf("%s: chunk %d: %08x, want %08x", what, i, got[i], w[i])
			}
		}
	}
	check(r, "fresh")
	check(r, "stored")
	must(t, r, writeOp(2, ChunkSize+5, "XYZ"))
	copy(data[ChunkSize+5:], "XYZ")
	check(r, "after a write")
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_TRUNCATE, Fid: 2, Size: ChunkSize + 10})
	data = data[:ChunkSize+10]
	check(r, "after a truncate")
	must(t, r, writeOp(2, 2*ChunkSize, "tail")) // grows: chunk 1 gains zeros
	data = append(data, make([]byte, 2*ChunkSize-len(data))...)
	data = append(data, "tail"...)
	check(r, "after growing")
	dir := r.Dir()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openTest(t, dir, ReplicaOptions{})
	defer r.Close()
	check(r, "after reopening")
	if _, _, err := r.ChunkSums(1); !isErrno(err, unix.EISDIR) {
		t.Errorf("ChunkSums of a dir: %v", err)
	}
}

func crc32c(b []byte) uint32 { return crc32Checksum(b) }

func isErrno(err error, e syscall.Errno) bool {
	got, ok := errnoOf(err)
	return ok && got == e
}

func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// A create or mkdir the head stamped with times (it answered the op with
// them already) keeps exactly those times on every replica; without a
// stamp the brick's clock decides.
func TestCreateKeepsStampedTimes(t *testing.T) {
	r := newTest(t)
	const at, mt = int64(1_600_000_000_123_456_789), int64(1_600_000_001_987_654_321)
	d := must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_MKDIR, Parent: 1, Name: "d", Fid: 2, Mode: 0o755, AtimeNs: at, MtimeNs: mt})
	f := must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 2, Name: "f", Fid: 3, Mode: 0o644, AtimeNs: at, MtimeNs: mt})
	if f.AtimeNs != at || f.MtimeNs != mt {
		t.Errorf("create answered times %d %d, want %d %d", f.AtimeNs, f.MtimeNs, at, mt)
	}
	if d.AtimeNs != at || d.MtimeNs != mt {
		t.Errorf("mkdir answered times %d %d, want %d %d", d.AtimeNs, d.MtimeNs, at, mt)
	}
	if a, errno := lookup(t, r, 2, "f"); errno != 0 || a.MtimeNs != mt || a.AtimeNs != at {
		t.Errorf("lookup after create: %v %v", a, errno)
	}
	u := must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: "u", Fid: 4, Mode: 0o644})
	if time.Since(time.Unix(0, u.MtimeNs)) > time.Hour {
		t.Errorf("unstamped create got mtime %v, want the brick's clock", time.Unix(0, u.MtimeNs))
	}
}

// A listing with attributes gives, for every entry, what a LOOKUP of its
// name answers (the mount answers those lookups with it).
func TestReaddirWithAttrsMatchesLookup(t *testing.T) {
	r := newTest(t)
	must(t, r, mkdirOp(1, "d", 2, 0o755))
	must(t, r, createOp(2, "f", 3, 0o640))
	must(t, r, writeOp(3, 0, "hello"))
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_SYMLINK, Parent: 2, Name: "s", Fid: 4, Target: "f"})
	must(t, r, &brickpb.Op{Type: brickpb.OpType_OP_LINK, Parent: 2, Name: "f2", Fid: 3})
	must(t, r, mkdirOp(2, "sub", 5, 0o700))
	resp := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: 2, WithAttrs: true})
	if len(resp.Entries) != 4 {
		t.Fatalf("entries: %v", resp.Entries)
	}
	for _, e := range resp.Entries {
		want, errno := lookup(t, r, 2, e.Name)
		if errno != 0 || !proto.Equal(e.Attr, want) || e.Fid != want.Fid {
			t.Errorf("%s: listed %v, lookup %v (%v)", e.Name, e.Attr, want, errno)
		}
	}
	plain := meta(t, r, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: 2})
	for _, e := range plain.Entries {
		if e.Attr != nil {
			t.Errorf("%s: attributes listed unasked", e.Name)
		}
	}
}

// A file being forgotten loses its fids/ link before its cached
// descriptor: a reader in between hears ENOENT, as after, not ENOTDIR
// (seen as a failed open in posixtest's OpenSymlinkRace on a shared
// volume).
func TestReaderBetweenForgetSteps(t *testing.T) {
	r := newTest(t)
	must(t, r, createOp(1, "f", 2, 0o644)) // the create caches its descriptor
	if _, err := readAll(t, r, 2); err != 0 {
		t.Fatal(err)
	}
	must(t, r, unlinkOp(1, "f"))
	// dropFIDLink's first step, alone.
	if err := unix.Unlinkat(r.fidsFD, fidName(2), 0); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []brickpb.MetaKind{brickpb.MetaKind_META_GETATTR, brickpb.MetaKind_META_READLINK, brickpb.MetaKind_META_LISTXATTR} {
		if resp := meta(t, r, &brickpb.MetaRequest{Kind: kind, Fid: 2}); resp.Errno != uint32(unix.ENOENT) {
			t.Errorf("%v of a file being forgotten: errno %d, want ENOENT", kind, resp.Errno)
		}
	}
}
