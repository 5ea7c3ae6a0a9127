package fuse

import (
	"context"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/brickvol/brick/replica"
)

func init() {
	extraBackends["local"] = localFactory
}

// localBackend is replica.Local plus the usage count its replica's
// directory tree gives: the sum of the sizes of its regular files, each
// inode once (data/ and the by-ID links in fids/ share inodes).
type localBackend struct {
	*replica.Local
	dir string
}

func (b *localBackend) UsedBytes(ctx context.Context) (int64, error) {
	seen := map[uint64]bool{}
	var used int64
	for _, sub := range []string{"data", "fids"} {
		err := filepath.WalkDir(filepath.Join(b.dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(p, &st); err != nil {
				return nil // removed meanwhile
			}
			if !seen[st.Ino] {
				seen[st.Ino] = true
				used += st.Size
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return used, nil
}

// localFactory returns a factory over one replica directory: each call
// closes the replica the previous call opened (its mount must be gone) and
// opens the directory again, as a remount after a restart would.
func localFactory(t *testing.T) backendFactory {
	dir := t.TempDir()
	var cur *replica.Replica
	t.Cleanup(func() {
		if cur != nil {
			cur.Close()
		}
	})
	return func(t *testing.T) Backend {
		if cur != nil {
			if err := cur.Close(); err != nil {
				t.Fatalf("closing the replica: %v", err)
			}
		}
		r, err := replica.OpenReplica(dir, replica.ReplicaOptions{Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("OpenReplica: %v", err)
		}
		cur = r
		return &localBackend{Local: replica.NewLocal(r), dir: dir}
	}
}

func TestPosixLocal(t *testing.T) {
	runPosix(t, func(t *testing.T) Backend { return localFactory(t)(t) })
}
