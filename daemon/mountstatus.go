package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/mounter"
	"github.com/brickvol/brick/proto/brickpb"
)

// statusFile is where the mount process of volume keeps its status.
func (d *Daemon) statusFile(volume string) string {
	return filepath.Join(d.mountsDir(), volume+".status.json")
}

// withLocalMounts adds what only this host knows to a volume's catalog
// view: that its own mount of the volume has been fenced by a newer head,
// or, on the head's host, the head's own state and heal progress. Other
// hosts ask the head's host (local=false) so `volume status` shows heal
// progress wherever it is run.
func (d *Daemon) withLocalMounts(ctx context.Context, v *brickpb.Volume, local bool) {
	if v == nil {
		return
	}
	for _, r := range d.records() {
		if r.Volume != v.Name || !processAlive(r.PID) {
			continue
		}
		if r.Epoch < v.Epoch && v.Head != string(d.id) {
			holder := firstNonEmpty(v.HeadName, v.Head, "a detach")
			v.State = StateFenced
			v.StateReason = fmt.Sprintf("this host's mount at %s (epoch %d) was fenced by %s at epoch %d: it fails every operation; unmount it",
				r.Dir, r.Epoch, holder, v.Epoch)
			return
		}
		if v.Head == string(d.id) && r.Epoch == v.Epoch {
			d.fromStatusFile(v)
			return
		}
	}
	if local || v.Head == "" || v.Head == string(d.id) {
		return
	}
	st := d.node.FSM().State()
	b, ok := st.Bricks[control.BrickID(v.Head)]
	if !ok || b.Addr == "" {
		return
	}
	c, err := d.peers.control(b.Addr)
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := c.GetVolume(cctx, &brickpb.GetVolumeRequest{Header: d.peers.header(1), Name: v.Name, LocalOnly: true})
	if err != nil || resp.GetVolume().GetEpoch() != v.Epoch {
		return // the head's host is down or behind: the catalog view stands
	}
	v.Heals = resp.Volume.Heals
	if hs := resp.Volume.State; hs != "" && v.State != StateUnavailable {
		v.State, v.StateReason = hs, resp.Volume.StateReason
	}
}

// fromStatusFile takes the head's own view from its status file, if fresh.
func (d *Daemon) fromStatusFile(v *brickpb.Volume) {
	s, err := mounter.ReadStatusFile(d.statusFile(v.Name))
	if err != nil || s.Epoch != v.Epoch || time.Since(s.Written) > 5*mounter.StatusInterval {
		return
	}
	if v.State != StateUnavailable && s.State != "" {
		v.State, v.StateReason = s.State, s.Reason
	}
	st := d.node.FSM().State()
	for _, h := range s.Heals {
		v.Heals = append(v.Heals, &brickpb.HealProgress{BrickId: h.Brick, BrickName: d.nameOf(st, control.BrickID(h.Brick)),
			State: h.State, Phase: h.Phase, BytesRemaining: h.BytesRemaining, BytesTotal: h.BytesTotal,
			OpsRemaining: h.OpsRemaining, FilesRemaining: -1, RateBytesPerSec: h.Rate, EtaMs: h.ETAMillis, Reason: h.Reason})
	}
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
