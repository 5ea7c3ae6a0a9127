package daemon

import (
	"fmt"
	"os"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/replica"
)

// replicas opens this brick's replicas on first use and keeps them open.
// Only a volume the catalog places on this brick is served: a request for
// anything else is NotFound, whoever sends it.
type replicas struct {
	d  *Daemon
	mu sync.Mutex
	m  map[string]*replica.Replica
}

func (rs *replicas) lookup(volumeID string) (*replica.Replica, error) {
	st := rs.d.node.FSM().State()
	name := volumeID
	if _, dead := st.Tombstones[control.VolumeID(volumeID)]; dead {
		return nil, status.Errorf(codes.NotFound, "volume %s was deleted", volumeID)
	}
	if v, ok := st.Volumes[control.VolumeID(volumeID)]; ok {
		name = v.Name
		if !slices.Contains(v.Placement, rs.d.id) {
			return nil, status.Errorf(codes.NotFound, "volume %s (%s) has no replica on brick %s", v.Name, volumeID, rs.d.id)
		}
	} else if p, err := rs.d.store.Path(volumeID); err != nil || !dirExists(p) {
		return nil, status.Errorf(codes.NotFound, "volume %s is not in the catalog", volumeID)
	}
	// Otherwise the replica exists on disk but this daemon, just restarted,
	// has not replayed the catalog that far yet: serve it, so a restart of
	// brickd costs the mounts of this host a pause, not a replica.
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r, ok := rs.m[volumeID]; ok {
		return r, nil
	}
	dir, err := rs.d.store.Ensure(volumeID)
	if err != nil {
		return nil, err
	}
	r, err := replica.OpenReplica(dir, rs.d.cfg.replicaOptions(rs.d.log.With("volume", name)))
	if err != nil {
		return nil, fmt.Errorf("opening the replica of %s: %w", name, err)
	}
	rs.m[volumeID] = r
	return r, nil
}

// close closes the replica of volumeID if it is open (before its removal).
func (rs *replicas) close(volumeID string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r, ok := rs.m[volumeID]; ok {
		r.Close()
		delete(rs.m, volumeID)
	}
}

func (rs *replicas) closeAll() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for id, r := range rs.m {
		r.Close()
		delete(rs.m, id)
	}
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
