package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

// backendFactory opens the same volume again each time it is called (for
// remount tests) and says whether it can report usage.
type backendFactory func(t *testing.T) Backend

// memFactory returns a factory whose backends all share one memBackend.
func memFactory() backendFactory {
	m := newMemBackend()
	return func(t *testing.T) Backend { return m }
}

// suites runs fn once per backend kind available.
func suites(t *testing.T, fn func(t *testing.T, open func() backendFactory)) {
	requireFUSE(t)
	t.Run("mem", func(t *testing.T) { fn(t, memFactory) })
	for name, f := range extraBackends {
		t.Run(name, func(t *testing.T) { fn(t, func() backendFactory { return f(t) }) })
	}
}

// extraBackends are further backends to run the targeted tests on, keyed by
// name; each entry returns a factory over a fresh volume.
var extraBackends = map[string]func(t *testing.T) backendFactory{}

func stat(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

func TestModesSurvive(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		_, dir := mount(t, open()(t), Options{})
		old := syscall.Umask(0o022)
		defer syscall.Umask(old)

		f := filepath.Join(dir, "f")
		fd, err := syscall.Open(f, syscall.O_CREAT|syscall.O_WRONLY, 0o777)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(fd)
		if got := stat(t, f).Mode; got != syscall.S_IFREG|0o755 {
			t.Errorf("create 0777 under umask 022: mode %o, want %o", got, syscall.S_IFREG|0o755)
		}
		for _, m := range []uint32{0o4755, 0o2755, 0o6711, 0o1777, 0o0000, 0o7777} {
			if err := syscall.Chmod(f, m); err != nil {
				t.Fatal(err)
			}
			if got := stat(t, f).Mode & 0o7777; got != m {
				t.Errorf("chmod %o: mode %o", m, got)
			}
		}
		sticky := filepath.Join(dir, "tmp")
		syscall.Umask(0)
		if err := syscall.Mkdir(sticky, 0o1777); err != nil {
			t.Fatal(err)
		}
		if got := stat(t, sticky).Mode; got != syscall.S_IFDIR|0o1777 {
			t.Errorf("mkdir 01777: mode %o", got)
		}
		suid := filepath.Join(dir, "suid")
		if fd, err := syscall.Open(suid, syscall.O_CREAT|syscall.O_WRONLY, 0o4755); err != nil {
			t.Fatal(err)
		} else {
			syscall.Close(fd)
		}
		if got := stat(t, suid).Mode; got != syscall.S_IFREG|0o4755 {
			t.Errorf("create 04755: mode %o", got)
		}

		// A setgid directory passes its group on, and its setgid bit to
		// subdirectories.
		sg := filepath.Join(dir, "sgid")
		if err := syscall.Mkdir(sg, 0o775); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(sg, 0, 4321); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(sg, 0o2775); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sg, "f"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, filepath.Join(sg, "f")); st.Gid != 4321 || st.Uid != 0 {
			t.Errorf("file in setgid dir: uid %d gid %d, want 0 4321", st.Uid, st.Gid)
		}
		if err := syscall.Mkdir(filepath.Join(sg, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, filepath.Join(sg, "d")); st.Gid != 4321 || st.Mode&syscall.S_ISGID == 0 {
			t.Errorf("dir in setgid dir: gid %d mode %o, want gid 4321 and setgid", st.Gid, st.Mode)
		}
		// Ownership comes from the caller.
		if err := os.Chown(f, 1000, 2000); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, f); st.Uid != 1000 || st.Gid != 2000 {
			t.Errorf("chown 1000:2000: got %d:%d", st.Uid, st.Gid)
		}
	})
}

func TestLongNames(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		_, dir := mount(t, open()(t), Options{})
		name := strings.Repeat("n", 255)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatalf("create a 255-byte name: %v", err)
		}
		if err := os.Mkdir(filepath.Join(dir, strings.Repeat("d", 255)), 0o755); err != nil {
			t.Fatalf("mkdir a 255-byte name: %v", err)
		}
		names, err := readNames(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) != 2 || names[0] != strings.Repeat("d", 255) || names[1] != name {
			t.Errorf("readdir: %d names, want the two 255-byte ones", len(names))
		}
		long := filepath.Join(dir, strings.Repeat("n", 256))
		if err := os.WriteFile(long, nil, 0o644); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("create a 256-byte name: %v, want ENAMETOOLONG", err)
		}
		if err := os.Rename(p, long); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("rename to a 256-byte name: %v, want ENAMETOOLONG", err)
		}
	})
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err == nil {
		sort.Strings(names)
	}
	return names, err
}

// TestDeepPath builds a directory chain whose full path is longer than
// PATH_MAX by walking it with openat, as tar and rm -r do.
func TestDeepPath(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		_, dir := mount(t, open()(t), Options{})
		name := strings.Repeat("p", 250)
		fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		depth := 0
		for total := len(dir); total <= 2*4096; total += len(name) + 1 {
			if err := syscall.Mkdirat(fd, name, 0o755); err != nil {
				t.Fatalf("mkdirat at depth %d: %v", depth, err)
			}
			next, err := syscall.Openat(fd, name, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
			if err != nil {
				t.Fatalf("openat at depth %d: %v", depth, err)
			}
			syscall.Close(fd)
			fd = next
			depth++
		}
		leaf, err := syscall.Openat(fd, "leaf", syscall.O_CREAT|syscall.O_RDWR, 0o644)
		syscall.Close(fd)
		if err != nil {
			t.Fatalf("create at depth %d: %v", depth, err)
		}
		if _, err := syscall.Pwrite(leaf, []byte("deep"), 0); err != nil {
			t.Fatal(err)
		}
		syscall.Close(leaf)

		// Walk down again from the top and read the leaf back.
		fd, _ = syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
		for i := 0; i < depth; i++ {
			next, err := syscall.Openat(fd, name, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
			syscall.Close(fd)
			if err != nil {
				t.Fatalf("walk at depth %d: %v", i, err)
			}
			fd = next
		}
		leaf, err = syscall.Openat(fd, "leaf", syscall.O_RDONLY, 0)
		syscall.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, _ := syscall.Read(leaf, buf)
		syscall.Close(leaf)
		if string(buf[:n]) != "deep" {
			t.Errorf("leaf at depth %d: %q", depth, buf[:n])
		}
		full := dir + strings.Repeat("/"+name, depth) + "/leaf"
		if _, err := os.Stat(full); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Logf("stat of the %d-byte path: %v", len(full), err)
		}
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			t.Errorf("RemoveAll of the deep tree: %v", err)
		}
	})
}

func TestRename(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		_, dir := mount(t, open()(t), Options{})
		a, b := filepath.Join(dir, "a"), filepath.Join(dir, "sub", "b")
		if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, a, "A")
		write(t, b, "B")
		inoA := stat(t, a).Ino
		if err := os.Rename(a, b); err != nil {
			t.Fatalf("rename over an existing file across directories: %v", err)
		}
		if got := read(t, b); got != "A" || stat(t, b).Ino != inoA {
			t.Errorf("after rename: %q ino %d, want A ino %d", got, stat(t, b).Ino, inoA)
		}
		if _, err := os.Stat(a); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("source still there: %v", err)
		}

		write(t, a, "A2")
		if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
			t.Errorf("RENAME_NOREPLACE over an existing file: %v, want EEXIST", err)
		}
		if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
			t.Fatalf("RENAME_EXCHANGE: %v", err)
		}
		if read(t, a) != "A" || read(t, b) != "A2" {
			t.Errorf("after exchange: a=%q b=%q, want A A2", read(t, a), read(t, b))
		}
		c := filepath.Join(dir, "c")
		if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, c, unix.RENAME_NOREPLACE); err != nil {
			t.Errorf("RENAME_NOREPLACE to a free name: %v", err)
		}
		// Directories: over an empty one works, over a full one does not.
		d1, d2 := filepath.Join(dir, "d1"), filepath.Join(dir, "d2")
		os.Mkdir(d1, 0o755)
		os.Mkdir(d2, 0o755)
		if err := syscall.Rename(d1, d2); err != nil {
			t.Errorf("rename a directory over an empty one: %v", err)
		}
		write(t, filepath.Join(d2, "x"), "x")
		os.Mkdir(d1, 0o755)
		if err := syscall.Rename(d1, d2); !errors.Is(err, syscall.ENOTEMPTY) {
			t.Errorf("rename over a non-empty directory: %v, want ENOTEMPTY", err)
		}
	})
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHardLinksShareInode(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		_, dir := mount(t, open()(t), Options{})
		a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
		write(t, a, "shared")
		if err := os.Link(a, b); err != nil {
			t.Fatal(err)
		}
		sa, sb := stat(t, a), stat(t, b)
		if sa.Ino != sb.Ino || sa.Nlink != 2 || sb.Nlink != 2 {
			t.Errorf("links: ino %d/%d nlink %d/%d, want one inode with nlink 2", sa.Ino, sb.Ino, sa.Nlink, sb.Nlink)
		}
		write(t, b, "changed")
		if read(t, a) != "changed" {
			t.Errorf("a write through one link is not seen through the other")
		}
		if err := os.Remove(a); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, b); st.Nlink != 1 || st.Ino != sa.Ino {
			t.Errorf("after unlinking one link: nlink %d ino %d", st.Nlink, st.Ino)
		}
	})
}

func TestInodesStableAcrossRemount(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		factory := open()
		dir := t.TempDir()
		srv := mountAt(t, dir, factory(t), Options{})
		write(t, filepath.Join(dir, "f"), "x")
		os.Mkdir(filepath.Join(dir, "d"), 0o755)
		write(t, filepath.Join(dir, "d", "g"), "y")
		want := map[string]uint64{}
		for _, p := range []string{".", "f", "d", "d/g"} {
			want[p] = stat(t, filepath.Join(dir, p)).Ino
		}
		if want["."] != RootFID {
			t.Errorf("root inode %d, want %d", want["."], RootFID)
		}
		if err := srv.Unmount(); err != nil {
			t.Fatal(err)
		}
		mountAt(t, dir, factory(t), Options{})
		for p, ino := range want {
			if got := stat(t, filepath.Join(dir, p)).Ino; got != ino {
				t.Errorf("%s: inode %d after remount, was %d", p, got, ino)
			}
		}
		write(t, filepath.Join(dir, "h"), "z")
		for p, ino := range want {
			if got := stat(t, filepath.Join(dir, "h")).Ino; got == ino {
				t.Errorf("a new file reuses the inode number of %s", p)
			}
		}
	})
}

func TestFsyncCallsSync(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		b := &faultyBackend{Backend: open()(t)}
		_, dir := mount(t, b, Options{})
		check := func(what string, do func() error) {
			t.Helper()
			before := b.syncs.Load()
			if err := do(); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if b.syncs.Load() == before {
				t.Errorf("%s did not call Backend.Sync", what)
			}
		}
		f, err := os.Create(filepath.Join(dir, "f"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Write([]byte("data"))
		check("fsync", f.Sync)
		f.Write([]byte("more"))
		check("fdatasync", func() error { return syscall.Fdatasync(int(f.Fd())) })
		d, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		check("directory fsync", d.Sync)
		for _, flags := range []int{syscall.O_SYNC, syscall.O_DSYNC, syscall.O_SYNC | syscall.O_DIRECT, syscall.O_DSYNC | syscall.O_DIRECT} {
			fd, err := syscall.Open(filepath.Join(dir, "f"), syscall.O_WRONLY|flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			buf := alignedBuf(4096)
			check("an O_SYNC/O_DSYNC write", func() error { _, err := syscall.Pwrite(fd, buf, 0); return err })
			syscall.Close(fd)
		}
	})
}

// alignedBuf returns a page-aligned buffer, as O_DIRECT needs.
func alignedBuf(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return b
}

func TestODirectRoundTrip(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		_, dir := mount(t, open()(t), Options{})
		p := filepath.Join(dir, "direct")
		fd, err := syscall.Open(p, syscall.O_CREAT|syscall.O_RDWR|syscall.O_DIRECT, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		data := alignedBuf(1 << 20)
		for i := range data {
			data[i] = byte(i * 31)
		}
		if n, err := syscall.Pwrite(fd, data, 4096); err != nil || n != len(data) {
			t.Fatalf("O_DIRECT write: %d, %v", n, err)
		}
		back := alignedBuf(len(data))
		if n, err := syscall.Pread(fd, back, 4096); err != nil || n != len(data) || !bytes.Equal(back, data) {
			t.Fatalf("O_DIRECT read: %d, %v, equal %v", n, err, bytes.Equal(back, data))
		}
		got := read(t, p)
		if len(got) != 4096+len(data) || got[4096:] != string(data) || got[:4096] != string(make([]byte, 4096)) {
			t.Errorf("buffered read after O_DIRECT write: %d bytes, content mismatch", len(got))
		}
	})
}

// orphanBackend records OP_FORGETs.
type orphanBackend struct {
	Backend
	mu        sync.Mutex
	forgotten []uint64
}

func (b *orphanBackend) Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	if op.Type == brickpb.OpType_OP_FORGET {
		b.mu.Lock()
		b.forgotten = append(b.forgotten, op.Fid)
		b.mu.Unlock()
	}
	// An unlink may forget the file with its last name (UnlinkForget).
	withForget := op.Type == brickpb.OpType_OP_UNLINK && op.Flags&brickpb.UnlinkForget != 0
	fid := op.Fid
	res, err := b.Backend.Do(ctx, op)
	if withForget && err == nil && res.GetErrno() == 0 && res.GetAttr().GetFid() == fid && res.GetAttr().GetNlink() == 0 {
		b.mu.Lock()
		b.forgotten = append(b.forgotten, fid)
		b.mu.Unlock()
	}
	return res, err
}

func TestOpenUnlinkedFile(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		b := &orphanBackend{Backend: open()(t)}
		srv, dir := mount(t, b, Options{})
		p := filepath.Join(dir, "f")
		kept := filepath.Join(dir, "kept")
		write(t, p, "still here")
		write(t, kept, "linked")
		if err := os.Link(kept, filepath.Join(dir, "kept2")); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		ino := stat(t, p).Ino
		keptIno := stat(t, kept).Ino
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(kept); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 || st.Ino != ino {
			t.Errorf("fstat after unlink: %v nlink %d ino %d, want nlink 0 ino %d", err, st.Nlink, st.Ino, ino)
		}
		if _, err := f.WriteAt([]byte("STILL"), 0); err != nil {
			t.Errorf("write after unlink: %v", err)
		}
		if err := f.Sync(); err != nil {
			t.Errorf("fsync after unlink: %v", err)
		}
		buf := make([]byte, 10)
		if n, err := f.ReadAt(buf, 0); err != nil || string(buf[:n]) != "STILL here" {
			t.Errorf("read after unlink: %q, %v", buf[:n], err)
		}
		f.Close()

		// A file with no name and no descriptor is forgotten, so its space
		// is freed: at once when the kernel's RELEASE of the last descriptor
		// came first, else when it comes (the kernel sends it after close(2)
		// returns, asynchronously).
		write(t, filepath.Join(dir, "closed"), "x")
		write(t, filepath.Join(dir, "victim"), "y")
		closedIno, victimIno := stat(t, filepath.Join(dir, "closed")).Ino, stat(t, filepath.Join(dir, "victim")).Ino
		if err := os.Remove(filepath.Join(dir, "closed")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "kept2"), filepath.Join(dir, "victim")); err != nil {
			t.Fatal(err)
		}
		var now []uint64
		for i := 0; i < 50; i++ {
			b.mu.Lock()
			now = append([]uint64(nil), b.forgotten...)
			b.mu.Unlock()
			if slices.Contains(now, closedIno) && slices.Contains(now, victimIno) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !slices.Contains(now, closedIno) || !slices.Contains(now, victimIno) {
			t.Errorf("OP_FORGET sent for %v before unmount, want %d (unlinked) and %d (renamed over) among them", now, closedIno, victimIno)
		}

		if err := srv.Unmount(); err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		slices.Sort(b.forgotten)
		want := []uint64{ino, closedIno, victimIno}
		slices.Sort(want)
		if !slices.Equal(b.forgotten, want) {
			t.Errorf("OP_FORGET sent for %v, want exactly %v (not the still-linked %d)", b.forgotten, want, keptIno)
		}
	})
}

func TestSpecialFilesAndTimes(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		_, dir := mount(t, open()(t), Options{})
		old := syscall.Umask(0)
		defer syscall.Umask(old)
		fifo := filepath.Join(dir, "fifo")
		if err := syscall.Mkfifo(fifo, 0o640); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, fifo); st.Mode != syscall.S_IFIFO|0o640 {
			t.Errorf("mkfifo: mode %o", st.Mode)
		}
		dev := filepath.Join(dir, "null")
		rdev := int(unix.Mkdev(1, 3))
		if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, rdev); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, dev); st.Mode != syscall.S_IFCHR|0o666 || st.Rdev != uint64(rdev) {
			t.Errorf("mknod c 1 3: mode %o rdev %x", st.Mode, st.Rdev)
		}
		sock := filepath.Join(dir, "sock")
		if err := syscall.Mknod(sock, syscall.S_IFSOCK|0o600, 0); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, sock); st.Mode != syscall.S_IFSOCK|0o600 {
			t.Errorf("mknod socket: mode %o", st.Mode)
		}

		f := filepath.Join(dir, "f")
		write(t, f, "x")
		set := []unix.Timespec{{Sec: 1_000_000_000, Nsec: 123}, {Sec: 1_100_000_000, Nsec: 456}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, f, set, 0); err != nil {
			t.Fatal(err)
		}
		st := stat(t, f)
		if st.Atim.Sec != 1_000_000_000 || st.Atim.Nsec != 123 || st.Mtim.Sec != 1_100_000_000 || st.Mtim.Nsec != 456 {
			t.Errorf("utimensat: atime %v mtime %v", st.Atim, st.Mtim)
		}
		before := time.Now().Add(-time.Second)
		now := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, f, now, 0); err != nil {
			t.Fatal(err)
		}
		st = stat(t, f)
		if st.Atim.Sec != 1_000_000_000 {
			t.Errorf("UTIME_OMIT changed atime to %v", st.Atim)
		}
		if mt := time.Unix(st.Mtim.Unix()); mt.Before(before) || mt.After(time.Now().Add(time.Second)) {
			t.Errorf("UTIME_NOW set mtime %v, want about now", mt)
		}

		// Listings carry . and .. with the right inode numbers.
		os.Mkdir(filepath.Join(dir, "d"), 0o755)
		fd, err := syscall.Open(filepath.Join(dir, "d"), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		buf := make([]byte, 4096)
		n, err := syscall.ReadDirent(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := countDirents(buf[:n]); got != 2 {
			t.Errorf("an empty directory lists %d entries, want . and ..", got)
		}
	})
}

// countDirents counts the linux_dirent64 records in buf.
func countDirents(buf []byte) int {
	n := 0
	for len(buf) >= 19 {
		reclen := int(buf[16]) | int(buf[17])<<8
		if reclen == 0 || reclen > len(buf) {
			break
		}
		n++
		buf = buf[reclen:]
	}
	return n
}

// hideOnce answers ENOENT to the first lookup of name, as if another
// creator made the file between the kernel's lookup and its create.
type hideOnce struct {
	Backend
	name string
	once sync.Once
}

func (b *hideOnce) Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	hide := false
	if req.Kind == brickpb.MetaKind_META_LOOKUP && req.Name == b.name {
		b.once.Do(func() { hide = true })
	}
	if hide {
		return &brickpb.MetaResponse{Errno: uint32(syscall.ENOENT)}, nil
	}
	return b.Backend.Meta(ctx, req)
}

func TestCreateRacingCreator(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		inner := open()(t)
		srv, dir := mount(t, inner, Options{})
		write(t, filepath.Join(dir, "racy"), "old content")
		ino := stat(t, filepath.Join(dir, "racy")).Ino
		if err := srv.Unmount(); err != nil {
			t.Fatal(err)
		}
		_, dir = mount(t, &hideOnce{Backend: inner, name: "racy"}, Options{})
		p := filepath.Join(dir, "racy")
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the first lookup should miss: %v", err)
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatalf("open(O_CREAT|O_TRUNC) of a file created meanwhile: %v", err)
		}
		f.Write([]byte("new"))
		f.Close()
		if got := read(t, p); got != "new" {
			t.Errorf("content %q, want the file truncated and rewritten", got)
		}
		if got := stat(t, p).Ino; got != ino {
			t.Errorf("inode %d, want the existing file's %d", got, ino)
		}
		if f, err := os.OpenFile(filepath.Join(dir, "other"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err != nil {
			t.Fatal(err)
		} else {
			f.Close()
		}
	})
}

// Two mounts of one backend stand for two hosts of a shared volume: with
// AppendAtBackendEOF an O_APPEND write lands at the backend's end of file
// even when this mount's kernel last saw the file shorter; without it the
// second host overwrites the first one's record.
func TestAppendAtBackendEOF(t *testing.T) {
	requireFUSE(t)
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("on=%v", on), func(t *testing.T) {
			b := newMemBackend()
			opts := Options{NoWritebackCache: true, AttrTimeout: time.Hour, AppendAtBackendEOF: on}
			a, c := t.TempDir(), t.TempDir()
			mountAt(t, a, b, opts)
			mountAt(t, c, b, opts)
			write(t, filepath.Join(a, "log"), "")
			fa, err := os.OpenFile(filepath.Join(a, "log"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fa.Close()
			fc, err := os.OpenFile(filepath.Join(c, "log"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fc.Close()
			for i := range 3 {
				if _, err := fa.WriteString(fmt.Sprintf("a%d\n", i)); err != nil {
					t.Fatal(err)
				}
				if _, err := fc.WriteString(fmt.Sprintf("c%d\n", i)); err != nil {
					t.Fatal(err)
				}
			}
			got := read(t, filepath.Join(a, "log"))
			want := "a0\nc0\na1\nc1\na2\nc2\n"
			if on && got != want {
				t.Fatalf("appends from two mounts: %q, want %q", got, want)
			}
			if !on && got == want {
				t.Fatalf("without the option the second mount's kernel appended at the right place too: the test proves nothing")
			}
		})
	}
}
