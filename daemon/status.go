package daemon

import (
	"sort"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/membership"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

// Volume state words, the same in the CLI, the logs and every API
// (design.md, "What an operator should see").
const (
	StateHealthy     = "healthy"
	StateDegraded    = "degraded"
	StateHealing     = "healing"
	StateReadOnly    = "read-only"
	StateFenced      = "fenced"
	StateUnavailable = "unavailable"
)

// gossipStates maps brick IDs to their gossip member as this daemon sees it.
func (d *Daemon) gossipStates() map[control.BrickID]membership.Member {
	out := map[control.BrickID]membership.Member{}
	for _, m := range d.members.Members() {
		if m.Meta.BrickID == "" {
			continue
		}
		id := control.BrickID(m.Meta.BrickID)
		// A name can come back with a new brick ID; keep the freshest.
		if prev, ok := out[id]; !ok || m.Since.After(prev.Since) {
			out[id] = m
		}
	}
	return out
}

// liveBricks are the catalog's bricks that gossip sees alive and that hold
// data: the candidates for placement.
func (d *Daemon) liveBricks(st *control.State) []*control.Brick {
	g := d.gossipStates()
	var out []*control.Brick
	for id, b := range st.Bricks {
		if m, ok := g[id]; ok && m.State == membership.StateAlive && !b.NoDisk {
			out = append(out, b)
		}
	}
	return out
}

func (d *Daemon) nameOf(st *control.State, id control.BrickID) string {
	if b, ok := st.Bricks[id]; ok {
		return b.Name
	}
	if m, ok := d.gossipStates()[id]; ok {
		return m.Name
	}
	return string(id)
}

// peerInfos is every daemon gossip knows, with its Raft role.
func (d *Daemon) peerInfos() []*brickpb.PeerInfo {
	var out []*brickpb.PeerInfo
	seen := map[string]bool{}
	for _, m := range d.members.Members() {
		seen[m.Meta.BrickID] = true
		out = append(out, &brickpb.PeerInfo{
			Name:              m.Name,
			BrickId:           m.Meta.BrickID,
			Address:           m.Meta.GRPCAddr,
			GossipState:       m.State.String(),
			GossipSinceUnixMs: m.Since.UnixMilli(),
			RaftRole:          d.node.Role(control.BrickID(m.Meta.BrickID)),
			CapacityBytes:     m.Meta.Capacity,
			FreeBytes:         m.Meta.Free,
		})
	}
	// Raft members gossip has never seen (e.g. dead since before this
	// daemon started) still deserve a line.
	if cfg, err := d.node.Configuration(); err == nil {
		st := d.node.FSM().State()
		for _, s := range cfg.Servers {
			if seen[string(s.ID)] {
				continue
			}
			p := &brickpb.PeerInfo{Name: d.nameOf(st, control.BrickID(s.ID)), BrickId: string(s.ID),
				GossipState: "unknown", RaftRole: d.node.Role(control.BrickID(s.ID))}
			if b, ok := st.Bricks[control.BrickID(s.ID)]; ok {
				p.Address, p.CapacityBytes, p.FreeBytes = b.Addr, b.CapacityBytes, b.FreeBytes
			}
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (d *Daemon) volumeInfos(st *control.State) []*brickpb.Volume {
	out := make([]*brickpb.Volume, 0, len(st.Volumes))
	for _, v := range st.Volumes {
		out = append(out, d.volumeInfo(st, v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// volumeInfo renders a volume with its state word, judged from the catalog
// and this daemon's view of gossip.
func (d *Daemon) volumeInfo(st *control.State, v *control.Volume) *brickpb.Volume {
	g := d.gossipStates()
	inISR := map[control.BrickID]bool{}
	for _, id := range v.ISR {
		inISR[id] = true
	}
	pv := &brickpb.Volume{
		Id: string(v.ID), Name: v.Name, SizeBytes: v.SizeBytes,
		Layout:   volspec.Layout{Replicas: v.Layout.Replicas, ECData: v.Layout.ECData, ECParity: v.Layout.ECParity}.String(),
		Replicas: uint32(v.Layout.Replicas), EcData: uint32(v.Layout.ECData), EcParity: uint32(v.Layout.ECParity),
		Access: string(v.Access), MinIsr: uint32(v.MinISR), Labels: v.Labels,
		Epoch: v.Epoch, Head: string(v.Head), CreatedUnixMs: v.CreatedAt.UnixMilli(),
	}
	if v.Head != "" {
		pv.HeadName = d.nameOf(st, v.Head)
	}
	aliveISR, down := 0, 0
	for _, id := range v.Placement {
		gs := "unknown"
		if m, ok := g[id]; ok {
			gs = m.State.String()
		}
		if gs != "alive" {
			down++
		} else if inISR[id] {
			aliveISR++
		}
		pv.Placement = append(pv.Placement, &brickpb.Placement{BrickId: string(id), BrickName: d.nameOf(st, id),
			InSync: inISR[id], GossipState: gs})
	}
	for _, id := range v.ISR {
		pv.Isr = append(pv.Isr, string(id))
	}
	for _, a := range v.Attachments {
		pv.Attachments = append(pv.Attachments, &brickpb.Attachment{BrickId: string(a.Brick), BrickName: d.nameOf(st, a.Brick),
			Epoch: a.Epoch, SinceUnixMs: a.Since.UnixMilli(), Endpoint: a.Endpoint})
	}
	switch {
	case aliveISR == 0:
		pv.State, pv.StateReason = StateUnavailable, "no in-sync brick is reachable"
	case aliveISR < v.MinISR:
		pv.State, pv.StateReason = StateReadOnly, "fewer reachable in-sync bricks than min-isr"
	case down > 0 || len(v.ISR) < len(v.Placement):
		pv.State, pv.StateReason = StateDegraded, "a brick is down or out of the in-sync set"
	default:
		pv.State = StateHealthy
	}
	return pv
}
