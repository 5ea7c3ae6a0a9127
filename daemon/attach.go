package daemon

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/membership"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

func (s *controlService) AttachVolume(ctx context.Context, req *brickpb.AttachVolumeRequest) (*brickpb.VolumeResponse, error) {
	if err := volspec.ValidateName(req.Name); err != nil {
		return nil, invalid("%v", err)
	}
	if req.Host == "" {
		req.Host = s.d.cfg.Name // the host the user asked from, fixed before any forward
	}
	return onLeader(ctx, s.d, req, func(ctx context.Context, req *brickpb.AttachVolumeRequest) (*brickpb.VolumeResponse, error) {
		if req.TakeHead {
			return s.d.takeHead(ctx, req.Name, req.Host, req.Force, req.ExpectEpoch, req.Endpoint)
		}
		if req.Endpoint != "" {
			if _, _, err := net.SplitHostPort(req.Endpoint); err != nil {
				return nil, invalid("endpoint %q: %v", req.Endpoint, err)
			}
		}
		return s.d.attach(ctx, req.Name, req.Host, req.Force, req.Renew, req.ExpectEpoch, req.Endpoint)
	}, func(ctx context.Context, c brickpb.ControlClient, req *brickpb.AttachVolumeRequest) (*brickpb.VolumeResponse, error) {
		return c.AttachVolume(ctx, req)
	})
}

func (s *controlService) DetachVolume(ctx context.Context, req *brickpb.DetachVolumeRequest) (*brickpb.VolumeResponse, error) {
	if err := volspec.ValidateName(req.Name); err != nil {
		return nil, invalid("%v", err)
	}
	if req.Host == "" {
		req.Host = s.d.cfg.Name
	}
	return onLeader(ctx, s.d, req, func(ctx context.Context, req *brickpb.DetachVolumeRequest) (*brickpb.VolumeResponse, error) {
		return s.d.detach(ctx, req.Name, req.Host)
	}, func(ctx context.Context, c brickpb.ControlClient, req *brickpb.DetachVolumeRequest) (*brickpb.VolumeResponse, error) {
		return c.DetachVolume(ctx, req)
	})
}

func (s *controlService) SetISR(ctx context.Context, req *brickpb.SetISRRequest) (*brickpb.VolumeResponse, error) {
	if req.VolumeId == "" || req.Epoch == 0 {
		return nil, invalid("set-isr needs a volume ID and an epoch")
	}
	return onLeader(ctx, s.d, req, func(ctx context.Context, req *brickpb.SetISRRequest) (*brickpb.VolumeResponse, error) {
		isr := make([]control.BrickID, len(req.Isr))
		for i, id := range req.Isr {
			isr[i] = control.BrickID(id)
		}
		res, err := s.d.node.Propose(ctx, control.Command{Type: control.CmdSetISR,
			SetISR: &control.SetISR{Volume: control.VolumeID(req.VolumeId), Epoch: req.Epoch, ISR: isr}})
		if err != nil {
			return nil, fmt.Errorf("setting the in-sync set of %s at epoch %d: %w", req.VolumeId, req.Epoch, err)
		}
		s.d.log.Warn("in-sync replica set changed", "volume", res.Volume.Name, "epoch", req.Epoch, "isr", req.Isr,
			"by", req.Header.SenderId)
		return &brickpb.VolumeResponse{Volume: s.d.volumeInfo(s.d.node.FSM().State(), res.Volume), RaftIndex: res.Index}, nil
	}, func(ctx context.Context, c brickpb.ControlClient, req *brickpb.SetISRRequest) (*brickpb.VolumeResponse, error) {
		return c.SetISR(ctx, req)
	})
}

// brickByName resolves a daemon name to its brick ID in the catalog.
func brickByName(st *control.State, name string) (control.BrickID, error) {
	for id, b := range st.Bricks {
		if b.Name == name {
			return id, nil
		}
	}
	return "", fmt.Errorf("host %q is not a brick of this cluster: %w", name, control.ErrNotFound)
}

func volumeByName(st *control.State, name string) (*control.Volume, error) {
	for _, v := range st.Volumes {
		if v.Name == name {
			return v, nil
		}
	}
	return nil, fmt.Errorf("volume %q: %w", name, control.ErrNotFound)
}

// attach records host as attached to the volume (leader only). A
// single-access volume held by another host is taken over only with force,
// or when gossip has seen the holder dead (or gone) for the failover
// timeout; otherwise the refusal names the holder and how it is doing.
// Every takeover is conditioned on the epoch it judged, so two hosts racing
// for a dead holder's volume cannot both win.
func (d *Daemon) attach(ctx context.Context, name, host string, force, renew bool, expect uint64, endpoint string) (*brickpb.VolumeResponse, error) {
	st, vol, bid, err := d.volumeAndBrick(name, host)
	if err != nil {
		return nil, err
	}
	if expect != 0 && expect != vol.Epoch {
		return nil, status.Errorf(codes.Aborted, "attach %s to %s: the volume moved on to epoch %d (expected %d)", name, host, vol.Epoch, expect)
	}
	cmd := &control.Attach{Volume: vol.ID, Brick: bid, Force: force, Renew: renew, ExpectEpoch: vol.Epoch, Endpoint: endpoint}
	var takeover string
	if holders := otherHolders(vol, bid); vol.Access == control.AccessSingle && len(holders) > 0 {
		dead, why := d.holderGone(holders[0])
		switch {
		case force:
			takeover = "forced: " + why
		case dead:
			takeover = why
			cmd.Force = true
		default:
			return nil, status.Errorf(codes.FailedPrecondition,
				"volume %s is attached to %s (%s); detach it there, wait until %s has been dead for the failover timeout (%v), or attach with --force to take it over and fence that host",
				name, d.nameOf(st, holders[0].Brick), why, d.nameOf(st, holders[0].Brick), d.cfg.FailoverTimeout)
		}
		d.log.Warn("taking over a volume", "volume", name, "from", d.nameOf(st, holders[0].Brick), "to", host,
			"old_epoch", vol.Epoch, "reason", takeover)
	}
	res, err := d.node.Propose(ctx, control.Command{Type: control.CmdAttach, Attach: cmd})
	if err != nil {
		return nil, fmt.Errorf("attaching %q to %s: %w", name, host, err)
	}
	d.log.Info("volume attached", "volume", name, "host", host, "epoch", res.Volume.Epoch, "force", force,
		"renew", renew, "takeover", takeover != "")
	return &brickpb.VolumeResponse{Volume: d.volumeInfo(d.node.FSM().State(), res.Volume), RaftIndex: res.Index}, nil
}

// takeHead makes host, attached to a shared volume, its head at a new
// epoch: allowed when the current head's host has been dead or gone in
// gossip for the failover timeout (or force), or when there is no head.
// Conditioned on expect (the epoch the caller saw the dead head at), so of
// several hosts racing to take over exactly one wins.
func (d *Daemon) takeHead(ctx context.Context, name, host string, force bool, expect uint64, endpoint string) (*brickpb.VolumeResponse, error) {
	st, vol, bid, err := d.volumeAndBrick(name, host)
	if err != nil {
		return nil, err
	}
	if vol.Access != control.AccessShared {
		return nil, invalid("volume %s is %s: only a shared volume's head is taken over this way (attach --force takes a single volume)", name, vol.Access)
	}
	if expect == 0 {
		expect = vol.Epoch
	}
	if expect != vol.Epoch {
		return nil, status.Errorf(codes.Aborted, "take over the head of %s: the volume moved on to epoch %d (expected %d)", name, vol.Epoch, expect)
	}
	why := "no head"
	if vol.Head != "" && vol.Head != bid {
		i := slices.IndexFunc(vol.Attachments, func(a control.Attachment) bool { return a.Brick == vol.Head })
		var dead bool
		if i >= 0 {
			dead, why = d.holderGone(vol.Attachments[i])
		} else {
			dead, why = true, "not attached"
		}
		if !dead && !force {
			return nil, status.Errorf(codes.FailedPrecondition,
				"the head of %s is %s (%s); it is taken over once that host has been dead for the failover timeout (%v)",
				name, d.nameOf(st, vol.Head), why, d.cfg.FailoverTimeout)
		}
		d.log.Warn("taking over the head of a shared volume", "volume", name, "from", d.nameOf(st, vol.Head), "to", host,
			"old_epoch", vol.Epoch, "reason", why, "force", force)
	}
	res, err := d.node.Propose(ctx, control.Command{Type: control.CmdAttach, Attach: &control.Attach{
		Volume: vol.ID, Brick: bid, ExpectEpoch: expect, TakeHead: true, Endpoint: endpoint}})
	if err != nil {
		return nil, fmt.Errorf("taking over the head of %q on %s: %w", name, host, err)
	}
	d.log.Info("shared volume head", "volume", name, "head", d.nameOf(d.node.FSM().State(), res.Volume.Head), "epoch", res.Volume.Epoch, "reason", why)
	return &brickpb.VolumeResponse{Volume: d.volumeInfo(d.node.FSM().State(), res.Volume), RaftIndex: res.Index}, nil
}

// volumeAndBrick resolves a volume name and a host name in the current
// catalog.
func (d *Daemon) volumeAndBrick(name, host string) (*control.State, *control.Volume, control.BrickID, error) {
	st := d.node.FSM().State()
	vol, err := volumeByName(st, name)
	if err != nil {
		return nil, nil, "", err
	}
	bid, err := brickByName(st, host)
	if err != nil {
		return nil, nil, "", err
	}
	return st, vol, bid, nil
}

// otherHolders are the attachments of vol other than bid's.
func otherHolders(vol *control.Volume, bid control.BrickID) []control.Attachment {
	var out []control.Attachment
	for _, a := range vol.Attachments {
		if a.Brick != bid {
			out = append(out, a)
		}
	}
	return out
}

// holderGone says whether the holder of an attachment has been dead or gone
// in gossip for at least the failover timeout, and describes its state in
// words for logs and refusals ("alive for 3m2s", "dead for 4s").
func (d *Daemon) holderGone(a control.Attachment) (bool, string) {
	m, ok := d.gossipStates()[a.Brick]
	if !ok {
		// Never seen since this leader started: count from its start.
		since := time.Since(d.started).Round(time.Second)
		return since >= d.cfg.FailoverTimeout, fmt.Sprintf("not seen by gossip for %v", since)
	}
	for_ := time.Since(m.Since).Round(100 * time.Millisecond)
	word := m.State.String()
	gone := m.State == membership.StateDead || m.State == membership.StateLeft
	return gone && for_ >= d.cfg.FailoverTimeout, fmt.Sprintf("%s for %v", word, for_)
}

func (d *Daemon) detach(ctx context.Context, name, host string) (*brickpb.VolumeResponse, error) {
	st := d.node.FSM().State()
	vol, err := volumeByName(st, name)
	if err != nil {
		return nil, err
	}
	bid, err := brickByName(st, host)
	if err != nil {
		return nil, err
	}
	res, err := d.node.Propose(ctx, control.Command{Type: control.CmdDetach,
		Detach: &control.Detach{Volume: vol.ID, Brick: bid}})
	if err != nil {
		return nil, fmt.Errorf("detaching %q from %s: %w", name, host, err)
	}
	d.log.Info("volume detached", "volume", name, "host", host)
	return &brickpb.VolumeResponse{Volume: d.volumeInfo(d.node.FSM().State(), res.Volume)}, nil
}
