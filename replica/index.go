package replica

import (
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// rebuildIndex recomputes the directory map and the highest file ID from
// the tree itself (every directory's file ID tag, every name in fids/),
// replacing what meta.db held. It runs when meta.db cannot be trusted to
// match the tree: after a power loss, or when data/ is found without its
// meta.db. Untagged directories are not the volume's and are left out.
// Caller holds applyMu.
func (r *Replica) rebuildIndex() error {
	dirs := map[uint64]dirRec{}
	maxFID := uint64(rootFID)
	var walk func(fd int, parent uint64, depth int) error
	walk = func(fd int, parent uint64, depth int) error {
		if depth > maxDepth {
			return fmt.Errorf("%w: the tree is deeper than %d", ErrCorrupt, maxDepth)
		}
		ents, err := listDir(fd)
		if err != nil {
			return err
		}
		for _, e := range ents {
			fid, err := fidAt(fd, e.name)
			if err != nil {
				continue // untagged
			}
			maxFID = max(maxFID, fid)
			st, err := lstatAt(fd, e.name)
			if err != nil || !isDir(&st) || checkName(e.name) != nil {
				continue
			}
			dirs[fid] = dirRec{parent: parent, name: e.name}
			sub, err := openat(fd, e.name, oDir, 0)
			if err != nil {
				return err
			}
			err = walk(sub, fid, depth+1)
			closeFD(sub)
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(r.dataFD, rootFID, 0); err != nil {
		return fmt.Errorf("rebuilding the directory map: %w", err)
	}
	ents, err := listDir(r.fidsFD)
	if err != nil {
		return fmt.Errorf("listing fids/: %w", err)
	}
	for _, e := range ents {
		if fid, err := strconv.ParseUint(e.name, 10, 64); err == nil {
			maxFID = max(maxFID, fid)
		}
	}
	r.mu.Lock()
	r.maxFID = max(r.maxFID, maxFID)
	clear(r.pendDirs)
	r.mu.Unlock()
	r.fds.closeAll()
	err = r.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketDirs); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketDirs)
		if err != nil {
			return err
		}
		for fid, d := range dirs {
			if err := b.Put(u64Key(fid), encodeDirRec(d)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rewriting the directory map: %w", err)
	}
	r.log.Warn("rebuilt the directory map from the tree", "directories", len(dirs), "max_fid", maxFID)
	return nil
}
