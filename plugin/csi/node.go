package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func (d *Driver) NodeGetCapabilities(ctx context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	types := []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_VOLUME_CONDITION,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
	if d.cfg.Expand {
		types = append(types, csi.NodeServiceCapability_RPC_EXPAND_VOLUME)
	}
	caps := make([]*csi.NodeServiceCapability, len(types))
	for i, t := range types {
		caps[i] = &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}}
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo: the node ID is the daemon's name; the topology is the
// cluster, so a daemon that has not joined one yet is Unavailable.
func (d *Driver) NodeGetInfo(ctx context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	st, err := d.cluster.Status(ctx)
	if err != nil {
		return nil, toStatus(err, "node %s: reading the cluster's status", d.cfg.NodeID)
	}
	if st.ClusterID == "" {
		return nil, status.Errorf(codes.Unavailable, "node %s has not joined a brick cluster yet (no cluster ID); retry", d.cfg.NodeID)
	}
	return &csi.NodeGetInfoResponse{
		NodeId:             d.cfg.NodeID,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyKey: st.ClusterID}},
	}, nil
}

// underRoot cleans an absolute path and checks that it lies strictly below
// one of the configured roots, also once symbolic links in its existing
// part are resolved.
func (d *Driver) underRoot(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	p = filepath.Clean(p)
	resolved := resolveExisting(p)
	for _, r := range d.cfg.PathRoots {
		rr := resolveExisting(r)
		if strings.HasPrefix(p, r+"/") && strings.HasPrefix(resolved, rr+"/") {
			return p, nil
		}
	}
	return "", fmt.Errorf("path %s is outside the kubelet directory (%s)", p, strings.Join(d.cfg.PathRoots, ", "))
}

// resolveExisting resolves symbolic links in the longest existing prefix
// of p and appends the rest unchanged.
func resolveExisting(p string) string {
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// NodeStageVolume starts the volume's mount process at the staging path
// (attaching the volume to this host at a new epoch). Staged already at
// that path is done; another volume there is FailedPrecondition.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id := req.GetVolumeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "NodeStageVolume: the volume ID is empty")
	case req.GetStagingTargetPath() == "":
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: NodeStageVolume without a staging path", id)
	case req.GetVolumeCapability() == nil:
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: NodeStageVolume without a volume capability", id)
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
	}
	dir, err := d.underRoot(req.GetStagingTargetPath())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: staging %v", id, err)
	}
	unlock, err := d.lock("node/"+id, "volume "+id+" on this node")
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := d.cluster.Volume(ctx, id)
	if err != nil {
		return nil, toStatus(err, "staging volume %s at %s", id, dir)
	}
	if why := fitsAccess(v.Access, []*csi.VolumeCapability{req.GetVolumeCapability()}); why != "" {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s (%s): %s", id, v.Name, why)
	}
	switch mid, err := d.cluster.MountedAt(ctx, dir); {
	case err == nil && mid == id:
		return &csi.NodeStageVolumeResponse{}, nil
	case err == nil:
		return nil, status.Errorf(codes.FailedPrecondition, "staging volume %s (%s): %s already serves volume %s", id, v.Name, dir, mid)
	case !errors.Is(err, ErrNotFound):
		return nil, toStatus(err, "staging volume %s (%s): looking at %s", id, v.Name, dir)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "staging volume %s (%s): creating %s: %v", id, v.Name, dir, err)
	}
	if err := d.cluster.Mount(ctx, id, dir); err != nil {
		return nil, toStatus(err, "staging volume %s (%s) at %s", id, v.Name, dir)
	}
	d.log.Info("volume staged", "volume", v.Name, "id", id, "dir", dir)
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume stops the mount process at the staging path and leaves
// the volume attached (ControllerUnpublishVolume detaches). Nothing
// staged there is done already.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id := req.GetVolumeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "NodeUnstageVolume: the volume ID is empty")
	case req.GetStagingTargetPath() == "":
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: NodeUnstageVolume without a staging path", id)
	}
	dir, err := d.underRoot(req.GetStagingTargetPath())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: staging %v", id, err)
	}
	unlock, err := d.lock("node/"+id, "volume "+id+" on this node")
	if err != nil {
		return nil, err
	}
	defer unlock()
	mid, err := d.cluster.MountedAt(ctx, dir)
	switch {
	case errors.Is(err, ErrNotFound):
		// A mount left behind by a mount process that died is stale.
		if _, ok, lerr := d.mounter.Lookup(dir); lerr == nil && ok {
			if err := d.mounter.Unmount(dir); err != nil {
				return nil, status.Errorf(codes.Internal, "unstaging volume %s: %v", id, err)
			}
		}
		return &csi.NodeUnstageVolumeResponse{}, nil
	case err != nil:
		return nil, toStatus(err, "unstaging volume %s: looking at %s", id, dir)
	case mid != id:
		return nil, status.Errorf(codes.FailedPrecondition, "unstaging volume %s: %s serves volume %s, not this one", id, dir, mid)
	}
	if err := d.cluster.Unmount(ctx, dir); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, toStatus(err, "unstaging volume %s from %s", id, dir)
	}
	d.log.Info("volume unstaged", "id", id, "dir", dir)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts the staging path at the target path,
// read-only when the request or the access mode says so. The same bind
// there already is done; a different one is AlreadyExists.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id := req.GetVolumeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "NodePublishVolume: the volume ID is empty")
	case req.GetTargetPath() == "":
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: NodePublishVolume without a target path", id)
	case req.GetVolumeCapability() == nil:
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: NodePublishVolume without a volume capability", id)
	case req.GetStagingTargetPath() == "":
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s: NodePublishVolume without a staging path (stage the volume first)", id)
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
	}
	target, err := d.underRoot(req.GetTargetPath())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: target %v", id, err)
	}
	staging, err := d.underRoot(req.GetStagingTargetPath())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: staging %v", id, err)
	}
	opts, _ := mountOptions(req.GetVolumeCapability().GetMount().GetMountFlags()) // checked above
	if req.GetReadonly() || isReaderOnly(req.GetVolumeCapability().GetAccessMode().GetMode()) {
		opts.ReadOnly = true
	}
	unlock, err := d.lock("target/"+target, "target "+target)
	if err != nil {
		return nil, err
	}
	defer unlock()
	switch mid, err := d.cluster.MountedAt(ctx, staging); {
	case errors.Is(err, ErrNotFound):
		return nil, status.Errorf(codes.FailedPrecondition, "publishing volume %s: it is not staged at %s (NodeStageVolume first)", id, staging)
	case err != nil:
		return nil, toStatus(err, "publishing volume %s: looking at %s", id, staging)
	case mid != id:
		return nil, status.Errorf(codes.FailedPrecondition, "publishing volume %s: %s serves volume %s, not this one", id, staging, mid)
	}
	src, ok, err := d.mounter.Lookup(staging)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "publishing volume %s: %v", id, err)
	}
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "publishing volume %s: its mount process runs but %s is not mounted (unstage and stage again)", id, staging)
	}
	if cur, ok, err := d.mounter.Lookup(target); err != nil {
		return nil, status.Errorf(codes.Internal, "publishing volume %s: %v", id, err)
	} else if ok {
		if cur.Device == src.Device && cur.ReadOnly == opts.ReadOnly {
			return &csi.NodePublishVolumeResponse{}, nil
		}
		return nil, status.Errorf(codes.AlreadyExists, "publishing volume %s: %s is already a mount (device %s, read-only %v), not this volume with read-only %v",
			id, target, cur.Device, cur.ReadOnly, opts.ReadOnly)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "publishing volume %s: creating %s: %v", id, target, err)
	}
	if err := d.mounter.Bind(staging, target, opts); err != nil {
		return nil, status.Errorf(codes.Internal, "publishing volume %s: %v", id, err)
	}
	d.log.Info("volume published on this node", "id", id, "target", target, "read_only", opts.ReadOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume unmounts the target path and removes it. A target
// that is gone, or no mount, is done already.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "NodeUnpublishVolume: the volume ID is empty")
	case req.GetTargetPath() == "":
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: NodeUnpublishVolume without a target path", id)
	}
	target, err := d.underRoot(req.GetTargetPath())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: target %v", id, err)
	}
	unlock, err := d.lock("target/"+target, "target "+target)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Binds may be stacked by a retried publish; take them all down.
	for range 8 {
		_, ok, err := d.mounter.Lookup(target)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "unpublishing volume %s: %v", id, err)
		}
		if !ok {
			break
		}
		if err := d.mounter.Unmount(target); err != nil {
			return nil, status.Errorf(codes.Internal, "unpublishing volume %s: %v", id, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "unpublishing volume %s: removing %s: %v", id, target, err)
	}
	d.log.Info("volume unpublished on this node", "id", id, "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports the space and inodes of the volume's mount at
// the path, and its condition.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "NodeGetVolumeStats: the volume ID is empty")
	case p == "":
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: NodeGetVolumeStats without a volume path", id)
	}
	v, err := d.cluster.Volume(ctx, id)
	if err != nil {
		return nil, toStatus(err, "volume stats of %s", id)
	}
	if !filepath.IsAbs(p) {
		return nil, status.Errorf(codes.NotFound, "volume %s (%s): path %q is not absolute, so it is no mount of the volume", id, v.Name, p)
	}
	p = filepath.Clean(p)
	if _, err := os.Stat(p); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s (%s): %s: %v", id, v.Name, p, err)
	}
	if _, ok, err := d.mounter.Lookup(p); err != nil {
		return nil, status.Errorf(codes.Internal, "volume stats of %s: %v", id, err)
	} else if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s (%s) is not mounted at %s", id, v.Name, p)
	}
	u, err := d.mounter.Statfs(p)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume stats of %s (%s): %v", id, v.Name, err)
	}
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: u.TotalBytes, Available: u.AvailableBytes, Used: u.UsedBytes},
			{Unit: csi.VolumeUsage_INODES, Total: u.TotalInodes, Available: u.FreeInodes, Used: u.UsedInodes},
		},
		VolumeCondition: condition(v),
	}, nil
}

// NodeExpandVolume has nothing to do on the node: the quota lives in the
// catalog and the mount's head enforces it. It reports the volume's size.
func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "NodeExpandVolume: the volume ID is empty")
	case p == "":
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: NodeExpandVolume without a volume path", id)
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := checkCapability(c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
		}
	}
	v, err := d.cluster.Volume(ctx, id)
	if err != nil {
		return nil, toStatus(err, "expanding volume %s on this node", id)
	}
	if _, err := os.Stat(p); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s (%s): %s: %v", id, v.Name, p, err)
	}
	if want := req.GetCapacityRange().GetRequiredBytes(); want > 0 && uint64(want) > v.SizeBytes {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s (%s) has %d bytes, less than the %d asked for: expand it on the controller first",
			id, v.Name, v.SizeBytes, want)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: int64(v.SizeBytes)}, nil
}
