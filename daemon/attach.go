package daemon

import (
	"context"
	"fmt"

	"github.com/brickvol/brick/control"
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
		return s.d.attach(ctx, req.Name, req.Host, req.Force)
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

// attach records host as attached to the volume (leader only).
func (d *Daemon) attach(ctx context.Context, name, host string, force bool) (*brickpb.VolumeResponse, error) {
	st := d.node.FSM().State()
	vol, err := volumeByName(st, name)
	if err != nil {
		return nil, err
	}
	bid, err := brickByName(st, host)
	if err != nil {
		return nil, err
	}
	res, err := d.node.Propose(ctx, control.Command{Type: control.CmdAttach,
		Attach: &control.Attach{Volume: vol.ID, Brick: bid, Force: force}})
	if err != nil {
		return nil, fmt.Errorf("attaching %q to %s: %w", name, host, err)
	}
	d.log.Info("volume attached", "volume", name, "host", host, "epoch", res.Volume.Epoch, "force", force)
	return &brickpb.VolumeResponse{Volume: d.volumeInfo(d.node.FSM().State(), res.Volume)}, nil
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
