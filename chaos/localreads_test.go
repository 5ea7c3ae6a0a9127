package chaos

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/chaos/harness"
	"github.com/brickvol/brick/mounter"
)

// The mount reads its host's replica straight from the brick's tree
// (mounter's local reads) and, when that replica was wiped and rebuilt by a
// full resync while the mount stayed up, reads the rebuilt tree, never the
// files it held open in the old one.
func TestLocalReadsFollowTheLocalReplica(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netLocalReads)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "reads", "--replicas", "3", "--size", "1G")
	dir := mount(t, ds[0], "reads")
	vol := volumeOf(t, ds[0], "reads")
	status := filepath.Join(ds[0].DataDir, "mounts", "reads.status.json")
	name := filepath.Join(dir, "f")
	old, cur := bytes.Repeat([]byte("old tree "), 1<<17), bytes.Repeat([]byte("new data "), 1<<17)
	writeSynced(t, dir, "f", old)

	localReads := func() uint64 {
		st, err := mounter.ReadStatusFile(status)
		if err != nil {
			return 0
		}
		return st.Counters.ReadsLocal
	}
	// readsLocally reads the file (uncached) until a read of it was
	// answered from the local tree, checking every read.
	readsLocally := func(what string, want []byte) {
		t.Helper()
		before := localReads()
		harness.Eventually(t, 30*time.Second, what, func() (bool, string) {
			if got := uncachedRead(t, name); !bytes.Equal(got, want) {
				t.Fatalf("%s: read %d bytes starting %q, want %q", what, len(got), got[:min(len(got), 18)], want[:18])
			}
			n := localReads()
			return n > before, fmt.Sprintf("local reads %d (before %d)", n, before)
		})
	}
	readsLocally("the mount reads its host's replica", old)

	// The mounting host's brickd dies; the file changes without its brick.
	ds[0].Kill()
	writeSynced(t, dir, "f", cur) // waits out the replica timeout, which drops the brick
	waitISR(t, ds[1], "reads", 2, 60*time.Second)
	if got := uncachedRead(t, name); !bytes.Equal(got, cur) {
		t.Fatalf("read without the local brick: %q...", got[:18])
	}
	// It comes back with its replica gone: a full resync rebuilds it.
	if err := os.RemoveAll(filepath.Dir(replicaDir(ds[0], vol.ID))); err != nil {
		t.Fatal(err)
	}
	ds[0].Start()
	waitISR(t, ds[1], "reads", 3, 120*time.Second)
	readsLocally("the mount reads the rebuilt replica", cur)
}

// uncachedRead drops the kernel's cached pages of name and reads it whole,
// so the reads reach the mount process.
func uncachedRead(t *testing.T, name string) []byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("dropping the cached pages of %s: %v", name, err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return buf.Bytes()
}
