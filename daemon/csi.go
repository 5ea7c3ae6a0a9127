package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/plugin/csi"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

// startCSI serves the CSI driver on --csi-endpoint when it is set, until
// the daemon stops. The driver talks to the cluster through csiCluster, the
// same control service the CLI uses, called in-process.
func (d *Daemon) startCSI() error {
	if d.cfg.CSIEndpoint == "" {
		return nil
	}
	drv, err := csi.New(csi.Config{
		NodeID:    d.cfg.Name,
		Version:   version,
		PathRoots: []string{d.cfg.CSIKubeletDir},
		Expand:    true,
		Logger:    d.log,
	}, &csiCluster{d: d, s: &controlService{d: d}})
	if err != nil {
		return err
	}
	l, err := csi.Listen(d.cfg.CSIEndpoint)
	if err != nil {
		return err
	}
	path, _ := csi.ParseEndpoint(d.cfg.CSIEndpoint)
	srv := drv.NewServer()
	d.serve(func() error { return srv.Serve(l) })
	d.goLoop(func(ctx context.Context) {
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			srv.Stop()
		}
		os.Remove(path)
	})
	d.log.Info("serving CSI", "endpoint", path, "driver", csi.DriverName, "kubelet_dir", d.cfg.CSIKubeletDir)
	return nil
}

// csiCluster implements csi.Cluster on this daemon's control service: the
// catalog through Raft (forwarded to the leader like any CLI request) and
// this host's mounts.
type csiCluster struct {
	d *Daemon
	s *controlService
}

func (c *csiCluster) header() *brickpb.Header {
	return c.d.selfHeader()
}

// csiErr maps a control-service error to the driver's sentinels, keeping
// the message.
func csiErr(err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(toStatus(err))
	var kind error
	switch st.Code() {
	case codes.NotFound:
		kind = csi.ErrNotFound
	case codes.AlreadyExists:
		kind = csi.ErrExists
	case codes.FailedPrecondition, codes.Aborted:
		kind = csi.ErrHeld
	case codes.InvalidArgument:
		kind = csi.ErrInvalid
	case codes.Unavailable:
		kind = csi.ErrUnavailable
	case codes.DeadlineExceeded:
		kind = context.DeadlineExceeded
	case codes.Canceled:
		kind = context.Canceled
	default:
		return errors.New(st.Message())
	}
	return &kindError{kind: kind, msg: st.Message()}
}

// kindError is a control-service error's message classified as one of the
// driver's sentinels.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func (c *csiCluster) Status(ctx context.Context) (csi.Status, error) {
	resp, err := c.s.ClusterStatus(ctx, &brickpb.ClusterStatusRequest{Header: c.header()})
	if err != nil {
		return csi.Status{}, csiErr(err)
	}
	return csi.Status{ClusterID: resp.ClusterId, Health: resp.Health}, nil
}

func (c *csiCluster) HasNode(ctx context.Context, name string) (bool, error) {
	_, err := brickByName(c.d.node.FSM().State(), name)
	return err == nil, nil
}

func (c *csiCluster) CreateVolume(ctx context.Context, spec volspec.Spec) (*csi.Volume, error) {
	resp, err := c.s.CreateVolume(ctx, &brickpb.CreateVolumeRequest{Header: c.header(), Name: spec.Name, SizeBytes: spec.SizeBytes,
		Replicas: uint32(spec.Layout.Replicas), EcData: uint32(spec.Layout.ECData), EcParity: uint32(spec.Layout.ECParity),
		Access: spec.Access, MinIsr: uint32(spec.MinISR), Labels: spec.Labels})
	if err != nil {
		return nil, csiErr(err)
	}
	return csiVolume(resp.Volume), nil
}

func (c *csiCluster) DeleteVolume(ctx context.Context, id string) error {
	v, err := c.Volume(ctx, id)
	if err != nil {
		return err
	}
	_, err = c.s.DeleteVolume(ctx, &brickpb.DeleteVolumeRequest{Header: c.header(), Name: v.Name})
	return csiErr(err)
}

// Volume finds a volume by ID in the leader's catalog (the control service
// addresses volumes by name).
func (c *csiCluster) Volume(ctx context.Context, id string) (*csi.Volume, error) {
	vols, err := c.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		if v.ID == id {
			return v, nil
		}
	}
	return nil, fmt.Errorf("volume %s: %w", id, csi.ErrNotFound)
}

func (c *csiCluster) VolumeByName(ctx context.Context, name string) (*csi.Volume, error) {
	resp, err := c.s.GetVolume(ctx, &brickpb.GetVolumeRequest{Header: c.header(), Name: name})
	if err != nil {
		return nil, csiErr(err)
	}
	return csiVolume(resp.Volume), nil
}

func (c *csiCluster) Volumes(ctx context.Context) ([]*csi.Volume, error) {
	resp, err := c.s.ListVolumes(ctx, &brickpb.ListVolumesRequest{Header: c.header()})
	if err != nil {
		return nil, csiErr(err)
	}
	out := make([]*csi.Volume, len(resp.Volumes))
	for i, v := range resp.Volumes {
		out[i] = csiVolume(v)
	}
	return out, nil
}

func (c *csiCluster) Attach(ctx context.Context, id, node string) (*csi.Volume, error) {
	v, err := c.Volume(ctx, id)
	if err != nil {
		return nil, err
	}
	resp, err := c.s.AttachVolume(ctx, &brickpb.AttachVolumeRequest{Header: c.header(), Name: v.Name, Host: node})
	if err != nil {
		return nil, csiErr(err)
	}
	return csiVolume(resp.Volume), nil
}

func (c *csiCluster) Detach(ctx context.Context, id, node string) error {
	v, err := c.Volume(ctx, id)
	if err != nil {
		return err
	}
	_, err = c.s.DetachVolume(ctx, &brickpb.DetachVolumeRequest{Header: c.header(), Name: v.Name, Host: node})
	return csiErr(err)
}

func (c *csiCluster) Mount(ctx context.Context, id, dir string) error {
	v, err := c.Volume(ctx, id)
	if err != nil {
		return err
	}
	_, err = c.s.MountVolume(ctx, &brickpb.MountVolumeRequest{Header: c.header(), Name: v.Name, Dir: dir})
	return csiErr(err)
}

func (c *csiCluster) Unmount(ctx context.Context, dir string) error {
	_, err := c.s.UnmountVolume(ctx, &brickpb.UnmountVolumeRequest{Header: c.header(), Dir: dir, KeepAttached: true})
	return csiErr(err)
}

// MountedAt reads this host's mount record for dir; a record whose mount
// process died is no mount.
func (c *csiCluster) MountedAt(ctx context.Context, dir string) (string, error) {
	r, err := c.d.readRecord(filepath.Clean(dir))
	if errors.Is(err, os.ErrNotExist) || err == nil && !processAlive(r.PID) {
		return "", fmt.Errorf("%s: no brick mount: %w", dir, csi.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading the mount record of %s: %w", dir, err)
	}
	return r.VolumeID, nil
}

// Capacity is what placement would find for one more volume of the layout:
// the headroom (free space minus the quotas already placed there) of the
// Width()-th roomiest live brick with a disk; zero with fewer such bricks.
func (c *csiCluster) Capacity(ctx context.Context, layout volspec.Layout) (uint64, error) {
	st := c.d.node.FSM().State()
	committed := map[control.BrickID]uint64{}
	for _, v := range st.Volumes {
		for _, id := range v.Placement {
			committed[id] += v.SizeBytes
		}
	}
	var room []uint64
	for _, b := range c.d.liveBricks(st) {
		r := uint64(0)
		if b.FreeBytes > committed[b.ID] {
			r = b.FreeBytes - committed[b.ID]
		}
		room = append(room, r)
	}
	w := layout.Width()
	if w < 1 || len(room) < w {
		return 0, nil
	}
	sort.Slice(room, func(i, j int) bool { return room[i] > room[j] })
	return room[w-1], nil
}

// Expand grows the volume's size quota through the catalog (ResizeVolume).
func (c *csiCluster) Expand(ctx context.Context, id string, size uint64) (*csi.Volume, error) {
	v, err := c.Volume(ctx, id)
	if err != nil {
		return nil, err
	}
	resp, err := c.s.ResizeVolume(ctx, &brickpb.ResizeVolumeRequest{Header: c.header(), Name: v.Name, SizeBytes: size})
	if err != nil {
		return nil, csiErr(err)
	}
	return csiVolume(resp.Volume), nil
}

func csiVolume(v *brickpb.Volume) *csi.Volume {
	out := &csi.Volume{
		ID: v.Id, Name: v.Name, SizeBytes: v.SizeBytes,
		Layout: volspec.Layout{Replicas: int(v.Replicas), ECData: int(v.EcData), ECParity: int(v.EcParity)},
		Access: v.Access, MinISR: int(v.MinIsr), Labels: v.Labels,
		State: v.State, StateReason: v.StateReason, Epoch: v.Epoch,
	}
	for _, a := range v.Attachments {
		out.AttachedTo = append(out.AttachedTo, a.BrickName)
	}
	return out
}
