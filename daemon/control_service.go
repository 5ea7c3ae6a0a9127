package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/membership"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

// controlService answers the CLI. Writes and the reads that must see them
// run on the Raft leader; any other daemon forwards them there.
type controlService struct {
	brickpb.UnimplementedControlServer
	d *Daemon
}

// leaderWait is how long a request waits for an election in progress
// before it is refused for want of a leader.
const leaderWait = 3 * time.Second

// leaderAddr is the leader's gRPC address, or "" when this daemon leads. An
// election in progress is waited for, up to leaderWait.
func (d *Daemon) leaderAddr(ctx context.Context) (string, error) {
	deadline := time.Now().Add(leaderWait)
	for d.node.Leader() == "" && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	if d.node.IsLeader() {
		return "", nil
	}
	lid := d.node.Leader()
	if lid == "" {
		return "", fmt.Errorf("%w: %s", errNoLeader, d.quorumNote())
	}
	for _, m := range d.members.Members() {
		if control.BrickID(m.Meta.BrickID) == lid && m.Meta.GRPCAddr != "" {
			return m.Meta.GRPCAddr, nil
		}
	}
	if b, ok := d.node.FSM().State().Bricks[lid]; ok && b.Addr != "" {
		return b.Addr, nil
	}
	return "", fmt.Errorf("%w: the leader %s is not known to gossip yet", errNoLeader, lid)
}

// quorumNote says how many voters this daemon can see, for errors.
func (d *Daemon) quorumNote() string {
	cfg, err := d.node.Configuration()
	if err != nil || len(cfg.Servers) == 0 {
		return "this daemon has not joined a cluster yet"
	}
	alive := map[string]bool{}
	for _, m := range d.members.Members() {
		if m.State == membership.StateAlive {
			alive[m.Meta.BrickID] = true
		}
	}
	voters, up := 0, 0
	for _, s := range cfg.Servers {
		if s.Suffrage.String() == "Voter" {
			voters++
			if alive[string(s.ID)] {
				up++
			}
		}
	}
	return fmt.Sprintf("%d of %d Raft voters reachable, %d needed for a quorum", up, voters, voters/2+1)
}

// onLeader runs local on the leader, or forwards the request there. A
// leadership change noticed before anything was proposed (the barrier) is
// retried against the new leader.
func onLeader[Req headered, Resp any](ctx context.Context, d *Daemon, req Req,
	local func(context.Context, Req) (Resp, error),
	remote func(context.Context, brickpb.ControlClient, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	for attempt := 0; ; attempt++ {
		addr, err := d.leaderAddr(ctx)
		if err != nil {
			return zero, err
		}
		if addr != "" {
			c, err := d.peers.control(addr)
			if err != nil {
				return zero, err
			}
			req.GetHeader().Hops++
			return remote(ctx, c, req)
		}
		if err := d.node.Barrier(ctx); err != nil {
			if errors.Is(err, control.ErrNotLeader) && attempt < 3 {
				continue
			}
			return zero, err
		}
		return local(ctx, req)
	}
}

func (s *controlService) ClusterStatus(ctx context.Context, req *brickpb.ClusterStatusRequest) (*brickpb.ClusterStatusResponse, error) {
	d := s.d
	st := d.node.FSM().State()
	resp := &brickpb.ClusterStatusResponse{
		ClusterId:  st.ClusterID,
		Peers:      d.peerInfos(),
		AnsweredBy: d.cfg.Name,
		Health:     "healthy",
	}
	if lid := d.node.Leader(); lid != "" {
		resp.Leader = d.nameOf(st, lid)
	} else {
		resp.Health = "unavailable"
	}
	for _, p := range resp.Peers {
		if resp.Health == "healthy" && p.RaftRole != "none" && p.GossipState != "alive" {
			resp.Health = "degraded"
		}
	}
	resp.Volumes = d.volumeInfos(st)
	return resp, nil
}

func (s *controlService) ListPeers(ctx context.Context, req *brickpb.ListPeersRequest) (*brickpb.ListPeersResponse, error) {
	return &brickpb.ListPeersResponse{Peers: s.d.peerInfos(), AnsweredBy: s.d.cfg.Name}, nil
}

func (s *controlService) GetVolume(ctx context.Context, req *brickpb.GetVolumeRequest) (*brickpb.VolumeResponse, error) {
	if err := volspec.ValidateName(req.Name); err != nil {
		return nil, invalid("%v", err)
	}
	local := func(ctx context.Context, req *brickpb.GetVolumeRequest) (*brickpb.VolumeResponse, error) {
		st := s.d.node.FSM().State()
		for _, v := range st.Volumes {
			if v.Name == req.Name {
				return &brickpb.VolumeResponse{Volume: s.d.volumeInfo(st, v)}, nil
			}
		}
		return nil, fmt.Errorf("volume %q: %w", req.Name, control.ErrNotFound)
	}
	if req.LocalOnly {
		resp, err := local(ctx, req)
		if err == nil {
			s.d.withLocalMounts(ctx, resp.Volume, true)
		}
		return resp, err
	}
	// Only the daemon the request came to knows which mounts are "this
	// host's": a forwarded request is answered from the catalog alone.
	origin := req.GetHeader().GetHops() == 0
	resp, err := readOnLeader(ctx, s.d, req, local, func(ctx context.Context, c brickpb.ControlClient, req *brickpb.GetVolumeRequest) (*brickpb.VolumeResponse, error) {
		return c.GetVolume(ctx, req)
	})
	if err == nil && origin {
		s.d.withLocalMounts(ctx, resp.Volume, false)
	}
	return resp, err
}

func (s *controlService) ListVolumes(ctx context.Context, req *brickpb.ListVolumesRequest) (*brickpb.ListVolumesResponse, error) {
	origin := req.GetHeader().GetHops() == 0
	resp, err := readOnLeader(ctx, s.d, req, func(ctx context.Context, req *brickpb.ListVolumesRequest) (*brickpb.ListVolumesResponse, error) {
		return &brickpb.ListVolumesResponse{Volumes: s.d.volumeInfos(s.d.node.FSM().State())}, nil
	}, func(ctx context.Context, c brickpb.ControlClient, req *brickpb.ListVolumesRequest) (*brickpb.ListVolumesResponse, error) {
		return c.ListVolumes(ctx, req)
	})
	if err == nil && origin {
		for _, v := range resp.Volumes {
			s.d.withLocalMounts(ctx, v, true) // a listing stays fast: no calls to heads
		}
	}
	return resp, err
}

// readOnLeader is onLeader for reads: without a leader, this daemon's own
// (possibly stale) copy of the catalog is better than no answer.
func readOnLeader[Req headered, Resp any](ctx context.Context, d *Daemon, req Req,
	local func(context.Context, Req) (Resp, error),
	remote func(context.Context, brickpb.ControlClient, Req) (Resp, error)) (Resp, error) {
	resp, err := onLeader(ctx, d, req, local, remote)
	if errors.Is(err, errNoLeader) {
		d.log.Debug("no leader: answering a read from the local catalog", "err", err)
		return local(ctx, req)
	}
	return resp, err
}

func (s *controlService) CreateVolume(ctx context.Context, req *brickpb.CreateVolumeRequest) (*brickpb.VolumeResponse, error) {
	spec, err := specFromRequest(req)
	if err != nil {
		return nil, invalid("%v", err)
	}
	return onLeader(ctx, s.d, req, func(ctx context.Context, req *brickpb.CreateVolumeRequest) (*brickpb.VolumeResponse, error) {
		return s.d.createVolume(ctx, spec)
	}, func(ctx context.Context, c brickpb.ControlClient, req *brickpb.CreateVolumeRequest) (*brickpb.VolumeResponse, error) {
		return c.CreateVolume(ctx, req)
	})
}

func (s *controlService) ResizeVolume(ctx context.Context, req *brickpb.ResizeVolumeRequest) (*brickpb.VolumeResponse, error) {
	if err := volspec.ValidateName(req.Name); err != nil {
		return nil, invalid("%v", err)
	}
	if req.SizeBytes == 0 || req.SizeBytes > volspec.MaxSize {
		return nil, invalid("size %d bytes: want 1 to %d", req.SizeBytes, uint64(volspec.MaxSize))
	}
	return onLeader(ctx, s.d, req, func(ctx context.Context, req *brickpb.ResizeVolumeRequest) (*brickpb.VolumeResponse, error) {
		res, err := s.d.node.Propose(ctx, control.Command{Type: control.CmdResizeVolume,
			ResizeVolume: &control.ResizeVolume{Name: req.Name, SizeBytes: req.SizeBytes}})
		if err != nil {
			return nil, fmt.Errorf("resizing %q to %d bytes: %w", req.Name, req.SizeBytes, err)
		}
		s.d.log.Info("volume resized", "volume", req.Name, "size_bytes", req.SizeBytes)
		return &brickpb.VolumeResponse{Volume: s.d.volumeInfo(s.d.node.FSM().State(), res.Volume), RaftIndex: res.Index}, nil
	}, func(ctx context.Context, c brickpb.ControlClient, req *brickpb.ResizeVolumeRequest) (*brickpb.VolumeResponse, error) {
		return c.ResizeVolume(ctx, req)
	})
}

func (s *controlService) DeleteVolume(ctx context.Context, req *brickpb.DeleteVolumeRequest) (*brickpb.DeleteVolumeResponse, error) {
	if err := volspec.ValidateName(req.Name); err != nil {
		return nil, invalid("%v", err)
	}
	return onLeader(ctx, s.d, req, func(ctx context.Context, req *brickpb.DeleteVolumeRequest) (*brickpb.DeleteVolumeResponse, error) {
		return s.d.deleteVolume(ctx, req.Name, req.Force)
	}, func(ctx context.Context, c brickpb.ControlClient, req *brickpb.DeleteVolumeRequest) (*brickpb.DeleteVolumeResponse, error) {
		return c.DeleteVolume(ctx, req)
	})
}

// specFromRequest validates a create request into a complete spec with
// defaults filled in. It runs on whichever daemon got the request, so bad
// input is refused before anything is forwarded or proposed.
func specFromRequest(req *brickpb.CreateVolumeRequest) (volspec.Spec, error) {
	spec := volspec.Spec{
		Name:      req.Name,
		SizeBytes: req.SizeBytes,
		Layout:    volspec.Layout{Replicas: int(req.Replicas), ECData: int(req.EcData), ECParity: int(req.EcParity)},
		Access:    req.Access,
		MinISR:    int(req.MinIsr),
		Labels:    req.Labels,
	}
	if req.Replicas > 0 && (req.EcData > 0 || req.EcParity > 0) {
		return spec, errors.New("set either replicas or ec, not both")
	}
	spec.Defaults()
	if err := spec.Validate(); err != nil {
		return spec, err
	}
	return spec, nil
}

// createVolume places, records and creates a volume; leader only.
func (d *Daemon) createVolume(ctx context.Context, spec volspec.Spec) (*brickpb.VolumeResponse, error) {
	st := d.node.FSM().State()
	for _, v := range st.Volumes {
		if v.Name == spec.Name {
			return nil, fmt.Errorf("volume %q already exists (id %s): %w", spec.Name, v.ID, control.ErrExists)
		}
	}
	layout := control.Layout{Replicas: spec.Layout.Replicas, ECData: spec.Layout.ECData, ECParity: spec.Layout.ECParity}
	placement, err := control.PlaceLayout(d.liveBricks(st), volumesOf(st), layout)
	if err != nil {
		return nil, fmt.Errorf("placing volume %q (%s): %w", spec.Name, spec.Layout, err)
	}
	vol := &control.Volume{
		ID:        control.VolumeID(newVolumeID()),
		Name:      spec.Name,
		SizeBytes: spec.SizeBytes,
		Layout:    layout,
		Access:    control.Access(spec.Access),
		MinISR:    spec.MinISR,
		Labels:    spec.Labels,
		Placement: placement,
	}
	res, err := d.node.Propose(ctx, control.Command{Type: control.CmdCreateVolume, CreateVolume: vol})
	if err != nil {
		return nil, fmt.Errorf("creating volume %q: %w", spec.Name, err)
	}
	if err := d.forEachBrick(ctx, st, placement, func(ctx context.Context, c brickpb.PeerClient) error {
		_, err := c.EnsureReplica(ctx, &brickpb.ReplicaRequest{Header: d.peers.header(0), VolumeId: string(vol.ID), VolumeName: vol.Name})
		return err
	}); err != nil {
		// Undo: the tombstone makes every brick's reconciler remove what
		// was created.
		if _, derr := d.node.Propose(context.WithoutCancel(ctx), control.Command{Type: control.CmdDeleteVolume,
			DeleteVolume: &control.DeleteVolume{Name: vol.Name, Force: true}}); derr != nil {
			d.log.Error("rolling back a failed volume create", "volume", vol.Name, "err", derr)
		}
		return nil, fmt.Errorf("creating volume %q: a brick could not create its replica, nothing was created: %w", spec.Name, err)
	}
	d.log.Info("volume created", "volume", vol.Name, "id", vol.ID, "layout", spec.Layout.String(), "placement", placement)
	st = d.node.FSM().State()
	return &brickpb.VolumeResponse{Volume: d.volumeInfo(st, res.Volume)}, nil
}

func (d *Daemon) deleteVolume(ctx context.Context, name string, force bool) (*brickpb.DeleteVolumeResponse, error) {
	st := d.node.FSM().State()
	var vol *control.Volume
	for _, v := range st.Volumes {
		if v.Name == name {
			vol = v
		}
	}
	if vol == nil {
		return nil, fmt.Errorf("volume %q: %w", name, control.ErrNotFound)
	}
	if _, err := d.node.Propose(ctx, control.Command{Type: control.CmdDeleteVolume,
		DeleteVolume: &control.DeleteVolume{Name: name, Force: force}}); err != nil {
		return nil, fmt.Errorf("removing volume %q: %w", name, err)
	}
	// Best effort: a brick that is down removes its replica through its
	// reconciler when it returns (the ID is tombstoned).
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := d.forEachBrick(rctx, st, vol.Placement, func(ctx context.Context, c brickpb.PeerClient) error {
		_, err := c.RemoveReplica(ctx, &brickpb.ReplicaRequest{Header: d.peers.header(0), VolumeId: string(vol.ID), VolumeName: name})
		return err
	}); err != nil {
		d.log.Warn("volume removed from the catalog; a brick will remove its replica when it is back", "volume", name, "err", err)
	}
	d.log.Info("volume removed", "volume", name, "id", vol.ID, "force", force)
	return &brickpb.DeleteVolumeResponse{VolumeId: string(vol.ID)}, nil
}

// forEachBrick calls f on every brick's Peer service at once and returns
// the first error, naming the brick.
func (d *Daemon) forEachBrick(ctx context.Context, st *control.State, ids []control.BrickID,
	f func(context.Context, brickpb.PeerClient) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, ok := st.Bricks[id]
			if !ok {
				errs[i] = fmt.Errorf("brick %s is not in the catalog", id)
				return
			}
			c, err := d.peers.peer(b.Addr)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err = f(cctx, c)
				cancel()
			}
			if err != nil {
				errs[i] = fmt.Errorf("brick %s (%s): %w", b.Name, id, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func newVolumeID() string {
	var b [8]byte
	rand.Read(b[:])
	return "v-" + hex.EncodeToString(b[:])
}

func volumesOf(st *control.State) []*control.Volume {
	vs := make([]*control.Volume, 0, len(st.Volumes))
	for _, v := range st.Volumes {
		vs = append(vs, v)
	}
	return vs
}

// selfHeader is the header of a request this daemon makes of its own
// control service (mounts, the Docker and CSI adapters): it goes through
// the same validation and forwarding as a CLI request.
func (d *Daemon) selfHeader() *brickpb.Header {
	return &brickpb.Header{ClusterId: d.clusterID(), SenderId: string(d.id), ProtocolVersion: brickpb.ProtocolVersion}
}
