package fuse

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// As root, no thread of the serving process waits in read(2) on
// /dev/fuse: the requests are read through the runtime's poller
// (device.go), so no reader holds the mount process's P while it waits.
// go-fuse's own server always keeps one there.
func TestDeviceReadsInPoller(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the device loop serves mounts made as root; this one goes through fusermount3")
	}
	srv, dir := mount(t, newMemBackend(), Options{})
	if _, ok := srv.srv.(*device); !ok {
		t.Fatalf("a mount made as root is served by %T, want *device", srv.srv)
	}
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The loop is back to reading once the last reply went out; give it
	// time to block there if it would.
	time.Sleep(100 * time.Millisecond)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		wchan, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "wchan"))
		if err != nil {
			continue // the thread exited
		}
		if strings.Contains(string(wchan), "fuse_dev") {
			t.Errorf("thread %s waits in %s, want no thread blocked reading /dev/fuse", task.Name(), wchan)
		}
	}
}

// Replies with a payload the request sizes (reads, listings, xattrs) and
// the biggest requests (1 MiB writes) come through the device loop's
// buffers whole; so does a link target of PATH_MAX, the biggest reply
// without one.
func TestDeviceBigRequestsAndReplies(t *testing.T) {
	requireFUSE(t)
	_, dir := mount(t, newMemBackend(), Options{})

	p := filepath.Join(dir, "big")
	want := alignedBuf(4 << 20)
	for i := range want {
		want[i] = byte(i * 7 / 4096)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_DIRECT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := 0; off < len(want); off += 1 << 20 {
		if _, err := f.WriteAt(want[off:off+1<<20], int64(off)); err != nil {
			t.Fatalf("1 MiB O_DIRECT write at %d: %v", off, err)
		}
	}
	got := alignedBuf(len(want))
	for off := 0; off < len(got); off += 1 << 20 {
		if n, err := f.ReadAt(got[off:off+1<<20], int64(off)); err != nil || n != 1<<20 {
			t.Fatalf("1 MiB O_DIRECT read at %d: %d bytes, %v", off, n, err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("4 MiB read back through 1 MiB requests differ from what was written")
	}

	target := strings.Repeat("t/", 2047) + "x" // 4095 bytes
	if err := os.Symlink(target, filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(dir, "l")); err != nil || got != target {
		t.Fatalf("readlink of a %d-byte target: %d bytes, %v", len(target), len(got), err)
	}

	val := bytes.Repeat([]byte("v"), 60<<10)
	if err := syscall.Setxattr(p, "user.big", val, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	if n, err := syscall.Getxattr(p, "user.big", buf); err != nil || !bytes.Equal(buf[:n], val) {
		t.Fatalf("getxattr of a %d-byte value: %d bytes, %v", len(val), n, err)
	}
	if n, err := syscall.Listxattr(p, buf); err != nil || !strings.Contains(string(buf[:n]), "user.big") {
		t.Fatalf("listxattr: %q, %v", buf[:max(n, 0)], err)
	}

	sub := filepath.Join(dir, "many")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 1500
	for i := range files {
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("a-rather-long-file-name-%04d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(sub)
	if err != nil || len(ents) != files {
		t.Fatalf("listing %d files: %d entries, %v", files, len(ents), err)
	}
}
