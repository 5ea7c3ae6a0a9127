package fuse

import (
	"os"
	"path/filepath"
	"strings"
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
