package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sort"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/membership"
)

// Version is reported in gossip metadata.
var version = "dev"

// meta is what this daemon gossips about itself.
func (d *Daemon) meta() membership.Meta {
	capacity, free := d.diskSpace()
	return membership.Meta{
		BrickID:  string(d.id),
		GRPCAddr: d.cfg.addr(d.cfg.GRPCPort),
		RaftAddr: d.cfg.addr(d.cfg.RaftPort),
		Capacity: capacity,
		Free:     free,
		NoDisk:   d.cfg.NoDisk,
		Version:  version,
		Cluster:  d.clusterID(),
	}
}

func (d *Daemon) diskSpace() (capacity, free uint64) {
	if d.cfg.NoDisk {
		return 0, 0
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(d.cfg.DataDir, &fs); err != nil {
		d.log.Warn("measuring free space", "dir", d.cfg.DataDir, "err", err)
		return 0, 0
	}
	return fs.Blocks * uint64(fs.Bsize), fs.Bavail * uint64(fs.Bsize)
}

// bootstrapLoop decides whether this daemon starts a new Raft cluster
// (design.md, "Cluster"): a daemon with Raft state never does; with
// --bootstrap-expect 1 a daemon that names no other peer bootstraps alone;
// with N > 1 the first N daemons (by name) that gossip sees, none of which
// belongs to a cluster yet, bootstrap together. Everyone else waits for the
// leader to add it.
func (d *Daemon) bootstrapLoop(ctx context.Context) {
	has, err := d.node.HasState()
	if err != nil {
		d.log.Error("cannot tell whether this daemon has raft state; not bootstrapping", "err", err)
		return
	}
	if has {
		d.log.Info("raft state found: rejoining the existing cluster")
		return
	}
	self := raft.Server{ID: raft.ServerID(d.id), Address: raft.ServerAddress(d.cfg.addr(d.cfg.RaftPort)), Suffrage: raft.Voter}
	if d.cfg.BootstrapExpect == 1 && len(d.otherPeers()) == 0 {
		d.log.Info("bootstrapping a new single-voter cluster (no other peers named)")
		if err := d.node.Bootstrap([]raft.Server{self}); err != nil {
			d.log.Error("bootstrap failed", "err", err)
		}
		return
	}
	if d.cfg.BootstrapExpect == 1 {
		d.log.Info("joining: waiting for the cluster's leader to add this daemon", "peers", d.cfg.Peers)
		return
	}
	d.log.Info("waiting for peers to bootstrap together", "expect", d.cfg.BootstrapExpect)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if d.node.Leader() != "" {
			return // someone added us
		}
		var alive []membership.Member
		for _, m := range d.members.Members() {
			if m.State != membership.StateAlive || m.Meta.RaftAddr == "" {
				continue
			}
			if m.Meta.Cluster != "" {
				d.log.Info("a peer already belongs to a cluster: waiting to be added to it", "peer", m.Name)
				return
			}
			alive = append(alive, m)
		}
		if len(alive) < d.cfg.BootstrapExpect {
			continue
		}
		sort.Slice(alive, func(i, j int) bool { return alive[i].Name < alive[j].Name })
		var servers []raft.Server
		mine := false
		for _, m := range alive[:d.cfg.BootstrapExpect] {
			servers = append(servers, raft.Server{ID: raft.ServerID(m.Meta.BrickID), Address: raft.ServerAddress(m.Meta.RaftAddr), Suffrage: raft.Voter})
			mine = mine || m.Meta.BrickID == string(d.id)
		}
		if mine {
			d.log.Info("bootstrapping raft together with peers", "voters", len(servers))
			if err := d.node.Bootstrap(servers); err != nil {
				d.log.Error("bootstrap failed", "err", err)
			}
		}
		return
	}
}

// otherPeers are the configured peers that are not this daemon.
func (d *Daemon) otherPeers() []string {
	var out []string
	for _, p := range d.cfg.Peers {
		host, port, err := SplitPeer(p, d.cfg.GossipPort)
		if err != nil || (host == d.cfg.Bind && port == d.cfg.GossipPort) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// leaderLoop does the leader's duties whenever this daemon leads: give the
// cluster an ID, keep the brick catalog in step with gossip, and keep the
// Raft membership right (add joiners, promote to MaxVoters voters, remove
// voters dead past DeadVoterTimeout).
func (d *Daemon) leaderLoop(ctx context.Context) {
	events, unsubscribe := d.members.Subscribe(64)
	defer unsubscribe()
	t := time.NewTicker(d.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case leading := <-d.node.LeaderCh():
			d.mu.Lock()
			if leading {
				d.leaderSince = time.Now()
				d.log.Info("this daemon is now the raft leader")
			} else {
				d.leaderSince = time.Time{}
				d.log.Info("this daemon is no longer the raft leader")
			}
			d.mu.Unlock()
		case <-events:
		case <-t.C:
		}
		if d.node.IsLeader() {
			d.leaderDuties(ctx)
		}
	}
}

func (d *Daemon) leaderDuties(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st := d.node.FSM().State()
	if st.ClusterID == "" {
		var b [8]byte
		rand.Read(b[:])
		id := "c-" + hex.EncodeToString(b[:])
		if _, err := d.node.Propose(ctx, control.Command{Type: control.CmdInitCluster, InitCluster: &control.InitCluster{ClusterID: id}}); err != nil {
			d.log.Warn("setting the cluster ID", "err", err)
			return
		}
		d.log.Info("new cluster", "cluster_id", id)
		st = d.node.FSM().State()
	}
	members := d.members.Members()
	d.syncBricks(ctx, st, members)
	d.syncRaft(members)
}

// syncBricks records every alive daemon of this cluster as a brick, and
// refreshes its addresses and space when they changed noticeably.
func (d *Daemon) syncBricks(ctx context.Context, st *control.State, members []membership.Member) {
	for _, m := range members {
		if m.State != membership.StateAlive || m.Meta.BrickID == "" || (m.Meta.Cluster != "" && m.Meta.Cluster != st.ClusterID) {
			continue
		}
		want := &control.Brick{ID: control.BrickID(m.Meta.BrickID), Name: m.Name, Addr: m.Meta.GRPCAddr, RaftAddr: m.Meta.RaftAddr,
			CapacityBytes: m.Meta.Capacity, FreeBytes: m.Meta.Free, NoDisk: m.Meta.NoDisk}
		if have, ok := st.Bricks[want.ID]; ok && !brickChanged(have, want) {
			continue
		}
		_, err := d.node.Propose(ctx, control.Command{Type: control.CmdUpsertBrick, UpsertBrick: want})
		switch {
		case errors.Is(err, control.ErrExists):
			d.log.Warn("a daemon reuses the name of another brick; it is not added to the catalog until the old brick is removed",
				"name", m.Name, "brick_id", want.ID, "err", err)
		case err != nil:
			d.log.Warn("recording brick", "name", m.Name, "err", err)
		}
	}
}

func brickChanged(have, want *control.Brick) bool {
	if have.Name != want.Name || have.Addr != want.Addr || have.RaftAddr != want.RaftAddr ||
		have.NoDisk != want.NoDisk || have.CapacityBytes != want.CapacityBytes {
		return true
	}
	diff := int64(have.FreeBytes) - int64(want.FreeBytes)
	if diff < 0 {
		diff = -diff
	}
	return uint64(diff) > want.CapacityBytes/100
}

// syncRaft is a small autopilot.
func (d *Daemon) syncRaft(members []membership.Member) {
	cfg, err := d.node.Configuration()
	if err != nil {
		d.log.Warn("reading raft configuration", "err", err)
		return
	}
	byID := map[string]membership.Member{}
	for _, m := range members {
		if m.Meta.BrickID != "" {
			byID[m.Meta.BrickID] = m
		}
	}
	inCfg := map[raft.ServerID]raft.ServerSuffrage{}
	voters := 0
	for _, s := range cfg.Servers {
		inCfg[s.ID] = s.Suffrage
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	clusterID := d.clusterID()
	// Remove servers gone for longer than the timeout.
	d.mu.Lock()
	since := d.leaderSince
	d.mu.Unlock()
	for _, s := range cfg.Servers {
		if s.ID == raft.ServerID(d.id) {
			continue
		}
		m, known := byID[string(s.ID)]
		goneSince := since
		if known {
			if m.State == membership.StateAlive || m.State == membership.StateSuspect {
				continue
			}
			goneSince = m.Since
		}
		if time.Since(goneSince) < d.cfg.DeadVoterTimeout {
			continue
		}
		d.log.Warn("removing a raft member that has been gone past the dead-voter timeout", "brick_id", s.ID,
			"name", m.Name, "gone_for", time.Since(goneSince).Round(time.Second))
		if err := d.node.RemoveServer(control.BrickID(s.ID)); err != nil {
			d.log.Warn("removing raft member", "err", err)
			return
		}
		if s.Suffrage == raft.Voter {
			voters--
		}
		delete(inCfg, s.ID)
	}
	// Add joiners, and promote non-voters while there is room.
	names := make([]string, 0, len(byID))
	for id := range byID {
		names = append(names, id)
	}
	sort.Strings(names) // deterministic order of promotion
	for _, id := range names {
		m := byID[id]
		if m.State != membership.StateAlive || m.Meta.RaftAddr == "" || (m.Meta.Cluster != "" && m.Meta.Cluster != clusterID) {
			continue
		}
		suff, in := inCfg[raft.ServerID(id)]
		switch {
		case in && suff == raft.Voter:
		case voters < d.cfg.MaxVoters:
			d.log.Info("adding raft voter", "name", m.Name, "brick_id", id, "promoted", in)
			if err := d.node.AddVoter(control.BrickID(id), m.Meta.RaftAddr); err != nil {
				d.log.Warn("adding raft voter", "name", m.Name, "err", err)
				return
			}
			voters++
		case !in:
			d.log.Info("adding raft non-voter (voters are full)", "name", m.Name, "brick_id", id, "voters", voters)
			if err := d.node.AddNonvoter(control.BrickID(id), m.Meta.RaftAddr); err != nil {
				d.log.Warn("adding raft non-voter", "name", m.Name, "err", err)
				return
			}
		}
	}
}

// capacityLoop re-measures free space and re-gossips it when it moved, and
// publishes the cluster ID once this daemon learns it.
func (d *Daemon) capacityLoop(ctx context.Context) {
	last := d.meta()
	t := time.NewTicker(d.cfg.CapacityInterval)
	defer t.Stop()
	for {
		changed := d.node.FSM().Changed()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
			if d.clusterID() == last.Cluster {
				continue
			}
		}
		m := d.meta()
		diff := int64(m.Free) - int64(last.Free)
		if diff < 0 {
			diff = -diff
		}
		if m.Cluster == last.Cluster && m.Capacity == last.Capacity && uint64(diff) <= m.Capacity/100 {
			continue
		}
		if err := d.members.UpdateMeta(m); err != nil {
			d.log.Warn("gossiping new metadata", "err", err)
			continue
		}
		last = m
	}
}

// reconcileLoop keeps this brick's replica directories in line with the
// catalog: every volume placed here has one, and a tombstoned volume's is
// removed (a brick that was down during a delete catches up here).
func (d *Daemon) reconcileLoop(ctx context.Context) {
	if d.cfg.NoDisk {
		return
	}
	t := time.NewTicker(d.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		changed := d.node.FSM().Changed()
		d.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
	}
}

// fenceToCatalog raises this brick's epoch promise for v to the catalog's
// epoch. A new head fences the bricks it can reach; this covers the ones it
// could not (a paused or cut-off daemon): as soon as this daemon's Raft log
// shows the takeover, its brick refuses the deposed head's ops too.
func (d *Daemon) fenceToCatalog(v *control.Volume) {
	if v.Epoch == 0 {
		return
	}
	r, err := d.replicas.lookup(string(v.ID))
	if err != nil {
		return // reported where the replica is served
	}
	if _, _, promised, _ := r.State(); promised >= v.Epoch {
		return
	}
	if _, err := r.Fence(v.Epoch); err != nil {
		d.log.Warn("fencing the local replica at the catalog's epoch", "volume", v.Name, "epoch", v.Epoch, "err", err)
		return
	}
	d.log.Info("local replica fenced at the catalog's epoch", "volume", v.Name, "epoch", v.Epoch, "head", d.nameOf(d.node.FSM().State(), v.Head))
}

func (d *Daemon) reconcile() {
	st := d.node.FSM().State()
	for _, v := range st.Volumes {
		for _, b := range v.Placement {
			if b == d.id {
				if _, err := d.store.Ensure(string(v.ID)); err != nil {
					d.log.Warn("creating replica", "volume", v.Name, "err", err)
				}
				d.fenceToCatalog(v)
			}
		}
	}
	ids, err := d.store.List()
	if err != nil {
		d.log.Warn("listing replicas", "err", err)
		return
	}
	for _, id := range ids {
		if _, dead := st.Tombstones[control.VolumeID(id)]; dead {
			d.replicas.close(id)
			if err := d.store.Remove(id); err != nil {
				d.log.Warn("removing the replica of a deleted volume", "id", id, "err", err)
			} else {
				d.log.Info("removed the replica of a deleted volume", "id", id)
			}
		}
	}
}
