package fuse

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStatfsShowsQuota(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		const quota = 64 << 20
		_, dir := mount(t, open()(t), Options{QuotaBytes: quota})
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if got := st.Blocks * uint64(st.Bsize); got != quota {
			t.Errorf("statfs total %d bytes (%d × %d), want the quota %d", got, st.Blocks, st.Bsize, quota)
		}
		if st.Bfree != st.Blocks || st.Namelen != 255 {
			t.Errorf("empty volume: bfree %d of %d, namelen %d", st.Bfree, st.Blocks, st.Namelen)
		}
		f, err := os.Create(filepath.Join(dir, "f"))
		if err != nil {
			t.Fatal(err)
		}
		f.Write(make([]byte, 1<<20))
		f.Close()
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if want := uint64(quota-1<<20) / uint64(st.Bsize); st.Bfree != want || st.Bavail != want {
			t.Errorf("after writing 1 MiB: bfree %d bavail %d, want %d", st.Bfree, st.Bavail, want)
		}
		if out, err := exec.Command("df", "-T", dir).CombinedOutput(); err == nil {
			if !bytes.Contains(out, []byte("brick:test")) || !bytes.Contains(out, []byte("fuse.brick")) {
				t.Errorf("df does not show the mount as brick:test of type fuse.brick:\n%s", out)
			}
		}
	})
}

func TestQuotaENOSPC(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		const quota = 1 << 20
		_, dir := mount(t, open()(t), Options{QuotaBytes: quota})
		full := filepath.Join(dir, "full")
		if err := os.WriteFile(full, make([]byte, quota-8192), 0o644); err != nil {
			t.Fatalf("filling to just under the quota: %v", err)
		}

		// A buffered write past the quota fails at write, fsync or close.
		f, err := os.Create(filepath.Join(dir, "over"))
		if err != nil {
			t.Fatal(err)
		}
		_, werr := f.Write(make([]byte, 64<<10))
		serr := f.Sync()
		cerr := f.Close()
		t.Logf("buffered write past the quota: write %v, fsync %v, close %v", werr, serr, cerr)
		if !errors.Is(werr, syscall.ENOSPC) && !errors.Is(serr, syscall.ENOSPC) && !errors.Is(cerr, syscall.ENOSPC) {
			t.Errorf("buffered write past the quota: write %v, fsync %v, close %v; want ENOSPC from one", werr, serr, cerr)
		}

		// O_DIRECT and fallocate fail at once; truncate too.
		fd, err := syscall.Open(filepath.Join(dir, "direct"), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_DIRECT, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := syscall.Pwrite(fd, alignedBuf(64<<10), 0); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("O_DIRECT write past the quota: %v, want ENOSPC", err)
		}
		if err := syscall.Fallocate(fd, 0, 0, 64<<10); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("fallocate past the quota: %v, want ENOSPC", err)
		}
		syscall.Close(fd)
		if err := os.Truncate(filepath.Join(dir, "direct"), 2*quota); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("truncate past the quota: %v, want ENOSPC", err)
		}

		// Freeing space lets writes through again; overwrites never grow.
		if err := os.WriteFile(full, make([]byte, quota-8192), 0o644); err != nil {
			t.Errorf("overwriting in place at the quota: %v", err)
		}
		if err := os.Remove(full); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "after"), make([]byte, 512<<10), 0o644); err != nil {
			t.Errorf("write after freeing space: %v", err)
		}
	})
}

// mmapHelperEnv makes the test binary act as the mmap helper: the file
// system's own process must not fault on its mount's pages (package doc,
// deadlock 1), so the mmap I/O runs in a child.
const mmapHelperEnv = "BRICK_FUSE_MMAP_HELPER"

func TestMain(m *testing.M) {
	if path := os.Getenv(mmapHelperEnv); path != "" {
		if err := mmapWrite(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// mmapPattern is what the helper writes through a shared mapping.
var mmapPattern = bytes.Repeat([]byte("mmap!"), 3000)

func mmapWrite(path string) error {
	fd, err := syscall.Open(path, syscall.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	mem, err := syscall.Mmap(fd, 0, 4*4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	copy(mem[100:], mmapPattern)
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync: %w", err)
	}
	return syscall.Munmap(mem)
}

func TestMmapSharedWrite(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		b := open()(t)
		_, dir := mount(t, b, Options{})
		p := filepath.Join(dir, "mapped")
		if err := os.WriteFile(p, make([]byte, 4*4096), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), mmapHelperEnv+"="+p)
		cmd.Dir = os.TempDir()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mmap helper: %v\n%s", err, out)
		}
		want := make([]byte, 4*4096)
		copy(want[100:], mmapPattern)
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Errorf("read through a fresh open after msync: %v, equal %v", err, bytes.Equal(got, want))
		}
		// msync(MS_SYNC) wrote the pages back: the backend has them.
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		data, err := b.Read(t.Context(), st.Ino, 0, len(want)+10)
		if err != nil || !bytes.Equal(data, want) {
			t.Errorf("backend after msync: %v, equal %v", err, bytes.Equal(data, want))
		}
	})
}
