package fuse

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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
		// The space of an unlinked file is freed when the kernel forgets
		// it, which it does on its own time: allow it a few seconds.
		var werr2 error
		for i := 0; i < 50; i++ {
			if werr2 = os.WriteFile(filepath.Join(dir, "after"), make([]byte, 512<<10), 0o644); werr2 == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if werr2 != nil {
			t.Errorf("write after freeing space: %v", werr2)
		}
	})
}

// The kernel writes a big file back in many concurrent requests, out of
// order; a file that fits must fit however many of them are in flight.
// (Each used to hold its whole growth past the size the node knew: 16
// writes of 1 MiB in flight held 136 MiB.) The room is twice the file: a
// backend that applies an op inside Do counts it before Do returns, so
// what the file's ops in flight hold (at most the file) may be counted
// twice for a moment.
func TestQuotaSequentialWriteThatFits(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		const mib = 1 << 20
		_, dir := mount(t, open()(t), Options{QuotaBytes: 2 * 88 * mib})
		name := filepath.Join(dir, "seq")
		buf := make([]byte, mib)
		for round, flags := range []int{os.O_CREATE, 0, os.O_TRUNC} { // new, overwrite in place, truncate and rewrite
			f, err := os.OpenFile(name, os.O_WRONLY|flags, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			for j := 0; j < 88; j++ {
				if _, err := f.Write(buf); err != nil {
					t.Fatalf("round %d: writing MiB %d of 88 into a 176 MiB volume: %v", round, j, err)
				}
			}
			if err := f.Sync(); err != nil {
				t.Errorf("round %d: fsync of 88 MiB in a 176 MiB volume: %v", round, err)
			}
			if err := f.Close(); err != nil {
				t.Errorf("round %d: close: %v", round, err)
			}
		}
	})
}
