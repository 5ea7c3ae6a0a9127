package fuse

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

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
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "fuse: NOT ROOT: every test that mounts the file system is SKIPPED")
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Fprintln(os.Stderr, "fuse: NO /dev/fuse: every test that mounts the file system is SKIPPED")
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
