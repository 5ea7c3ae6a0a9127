package csi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/brickvol/brick/volspec"
)

// Volume context keys CreateVolume returns (informational: node calls use
// the volume ID alone).
const (
	ctxName   = DriverName + "/name"
	ctxLayout = DriverName + "/layout"
	ctxAccess = DriverName + "/access"
)

func (d *Driver) ControllerGetCapabilities(ctx context.Context, req *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	types := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_GET_VOLUME,
		csi.ControllerServiceCapability_RPC_VOLUME_CONDITION,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
	if d.cfg.Expand {
		types = append(types, csi.ControllerServiceCapability_RPC_EXPAND_VOLUME)
	}
	caps := make([]*csi.ControllerServiceCapability, len(types))
	for i, t := range types {
		caps[i] = &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}}
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// CreateVolume creates a brick volume, idempotently by name. The size is
// the capacity range's required bytes (else the default size within the
// limit); parameters are volume options; access follows the access modes.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "CreateVolume: the volume name is empty")
	}
	name := req.GetName()
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: no volume capabilities given", name)
	}
	access, err := accessOf(req.GetVolumeCapabilities())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: creating a volume from a snapshot or another volume is not supported", name)
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: mutable parameters (volume attribute classes) are not supported", name)
	}
	spec, err := parseParameters(req.GetParameters())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	switch {
	case spec.Access == "":
		spec.Access = access
	case spec.Access == volspec.AccessSingle && access == volspec.AccessShared:
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: parameter access=single contradicts a multi-node access mode", name)
	}
	size, err := sizeFor(req.GetCapacityRange())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	if size > volspec.MaxSize {
		return nil, status.Errorf(codes.OutOfRange, "volume %q: %d bytes is more than brick's largest volume (%d bytes)", name, size, uint64(volspec.MaxSize))
	}
	spec.Name, spec.SizeBytes = brickName(name), size
	spec.Defaults()
	if err := spec.Validate(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	st, err := d.cluster.Status(ctx)
	if err != nil {
		return nil, toStatus(err, "volume %q: reading the cluster's status", name)
	}
	if reqs := req.GetAccessibilityRequirements(); reqs != nil && !topologyAllowed(reqs, st.ClusterID) {
		return nil, status.Errorf(codes.ResourceExhausted, "volume %q: the accessibility requirements name no topology of this cluster (%s=%s)",
			name, TopologyKey, st.ClusterID)
	}
	unlock, err := d.lock("create/"+spec.Name, fmt.Sprintf("volume %q", name))
	if err != nil {
		return nil, err
	}
	defer unlock()

	if v, err := d.cluster.VolumeByName(ctx, spec.Name); err == nil {
		return d.existing(v, req, spec, st.ClusterID)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, toStatus(err, "volume %q: looking for an existing volume %s", name, spec.Name)
	}
	avail, err := d.cluster.Capacity(ctx, spec.Layout)
	if err != nil {
		return nil, toStatus(err, "volume %q: reading the cluster's capacity for %s", name, spec.Layout)
	}
	// Zero means too few bricks for the layout: the create below says so.
	if avail > 0 && size > avail {
		return nil, status.Errorf(codes.OutOfRange, "volume %q: %d bytes is more than the cluster can place for %s now (%d bytes)",
			name, size, spec.Layout, avail)
	}
	v, err := d.cluster.CreateVolume(ctx, spec)
	if errors.Is(err, ErrExists) { // created by an earlier attempt whose answer was lost
		if v, gerr := d.cluster.VolumeByName(ctx, spec.Name); gerr == nil {
			return d.existing(v, req, spec, st.ClusterID)
		}
	}
	if err != nil {
		if errors.Is(err, ErrInvalid) { // e.g. fewer live bricks than the layout needs
			return nil, status.Errorf(codes.ResourceExhausted, "volume %q: creating %s: %v", name, spec.Name, err)
		}
		return nil, toStatus(err, "volume %q: creating %s", name, spec.Name)
	}
	d.log.Info("volume created", "csi_name", name, "volume", v.Name, "id", v.ID, "size", v.SizeBytes, "layout", v.Layout.String(), "access", v.Access)
	return &csi.CreateVolumeResponse{Volume: csiVolume(v, st.ClusterID)}, nil
}

// existing answers a CreateVolume for a name that exists: the same volume
// when it is compatible, AlreadyExists when not.
func (d *Driver) existing(v *Volume, req *csi.CreateVolumeRequest, spec volspec.Spec, clusterID string) (*csi.CreateVolumeResponse, error) {
	if !sizeFits(v.SizeBytes, req.GetCapacityRange()) {
		return nil, status.Errorf(codes.AlreadyExists, "volume %q exists (%s) with %d bytes, outside the requested range %d..%d",
			req.GetName(), v.ID, v.SizeBytes, req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes())
	}
	if diff := sameOptions(v, spec); diff != "" {
		return nil, status.Errorf(codes.AlreadyExists, "volume %q exists (%s) with other options: %s", req.GetName(), v.ID, diff)
	}
	return &csi.CreateVolumeResponse{Volume: csiVolume(v, clusterID)}, nil
}

func topologyAllowed(reqs *csi.TopologyRequirement, clusterID string) bool {
	all := append(append([]*csi.Topology(nil), reqs.GetRequisite()...), reqs.GetPreferred()...)
	if len(all) == 0 {
		return true
	}
	for _, t := range all {
		if ours(t, clusterID) {
			return true
		}
	}
	return false
}

// ours reports whether a topology segment set is this cluster's: every
// segment must be one the driver knows and match.
func ours(t *csi.Topology, clusterID string) bool {
	for k, v := range t.GetSegments() {
		if k != TopologyKey || v != clusterID {
			return false
		}
	}
	return true
}

func csiVolume(v *Volume, clusterID string) *csi.Volume {
	cv := &csi.Volume{
		VolumeId:      v.ID,
		CapacityBytes: int64(min(v.SizeBytes, uint64(volspec.MaxSize))),
		VolumeContext: map[string]string{ctxName: v.Name, ctxLayout: v.Layout.String(), ctxAccess: v.Access},
	}
	if clusterID != "" {
		cv.AccessibleTopology = []*csi.Topology{{Segments: map[string]string{TopologyKey: clusterID}}}
	}
	return cv
}

// DeleteVolume removes the volume; one that does not exist is gone already.
// A volume still attached somewhere is FailedPrecondition.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "DeleteVolume: the volume ID is empty")
	}
	unlock, err := d.lock("vol/"+id, "volume "+id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.cluster.DeleteVolume(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, toStatus(err, "deleting volume %s", id)
	}
	d.log.Info("volume deleted", "id", id)
	return &csi.DeleteVolumeResponse{}, nil
}

// ControllerPublishVolume attaches the volume to the node (brick's attach,
// with fencing). A single volume held by another live node is
// FailedPrecondition; read-only is honoured by NodePublishVolume.
func (d *Driver) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	id, node := req.GetVolumeId(), req.GetNodeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "ControllerPublishVolume: the volume ID is empty")
	case node == "":
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: ControllerPublishVolume without a node ID", id)
	case req.GetVolumeCapability() == nil:
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: ControllerPublishVolume without a volume capability", id)
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
	}
	unlock, err := d.lock("vol/"+id, "volume "+id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := d.cluster.Volume(ctx, id)
	if err != nil {
		return nil, toStatus(err, "publishing volume %s to node %s", id, node)
	}
	if why := fitsAccess(v.Access, []*csi.VolumeCapability{req.GetVolumeCapability()}); why != "" {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s (%s): %s", id, v.Name, why)
	}
	ok, err := d.cluster.HasNode(ctx, node)
	if err != nil {
		return nil, toStatus(err, "publishing volume %s (%s): looking up node %s", id, v.Name, node)
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "publishing volume %s (%s): node %q is not a brick of this cluster", id, v.Name, node)
	}
	v, err = d.cluster.Attach(ctx, id, node)
	if err != nil {
		return nil, toStatus(err, "publishing volume %s to node %s", id, node)
	}
	d.log.Info("volume published", "volume", v.Name, "id", id, "node", node, "epoch", v.Epoch)
	return &csi.ControllerPublishVolumeResponse{PublishContext: map[string]string{}}, nil
}

// ControllerUnpublishVolume detaches the volume from the node (from every
// node when none is named). Not attached, or gone, is done already.
func (d *Driver) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	id, node := req.GetVolumeId(), req.GetNodeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "ControllerUnpublishVolume: the volume ID is empty")
	}
	unlock, err := d.lock("vol/"+id, "volume "+id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := d.cluster.Volume(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return &csi.ControllerUnpublishVolumeResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err, "unpublishing volume %s from node %s", id, node)
	}
	nodes := []string{node}
	if node == "" {
		nodes = v.AttachedTo
	}
	for _, n := range nodes {
		if err := d.cluster.Detach(ctx, id, n); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, toStatus(err, "unpublishing volume %s (%s) from node %s", id, v.Name, n)
		}
		d.log.Info("volume unpublished", "volume", v.Name, "id", id, "node", n)
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms the capabilities (and parameters)
// when the volume can serve them, and says why not otherwise.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "ValidateVolumeCapabilities: the volume ID is empty")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: no volume capabilities to validate", id)
	}
	v, err := d.cluster.Volume(ctx, id)
	if err != nil {
		return nil, toStatus(err, "validating capabilities of volume %s", id)
	}
	if why := fitsAccess(v.Access, req.GetVolumeCapabilities()); why != "" {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume %s (%s): %s", id, v.Name, why)}, nil
	}
	if len(req.GetParameters()) > 0 {
		spec, err := parseParameters(req.GetParameters())
		if err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume %s (%s): %v", id, v.Name, err)}, nil
		}
		if !spec.Layout.IsZero() && spec.Layout != v.Layout || spec.MinISR != 0 && spec.MinISR != v.MinISR ||
			spec.Access != "" && spec.Access != v.Access {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume %s (%s) was created with other parameters (%s, min-isr %d, access %s)",
				id, v.Name, v.Layout, v.MinISR, v.Access)}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes pages through the volumes in ID order. A token is the ID of
// the last volume of the previous page, so volumes created or deleted
// between pages shift nothing.
func (d *Driver) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "ListVolumes: max_entries %d is negative", req.GetMaxEntries())
	}
	tok := req.GetStartingToken()
	if tok != "" && !validToken(tok) {
		return nil, status.Errorf(codes.Aborted, "ListVolumes: starting token %q is not one this driver gave out", tok)
	}
	vols, err := d.cluster.Volumes(ctx)
	if err != nil {
		return nil, toStatus(err, "listing volumes")
	}
	st, err := d.cluster.Status(ctx)
	if err != nil {
		return nil, toStatus(err, "listing volumes: reading the cluster's status")
	}
	sort.Slice(vols, func(i, j int) bool { return vols[i].ID < vols[j].ID })
	start := sort.Search(len(vols), func(i int) bool { return vols[i].ID > tok })
	vols = vols[start:]
	next := ""
	if n := int(req.GetMaxEntries()); n > 0 && len(vols) > n {
		vols = vols[:n]
		next = vols[n-1].ID
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, v := range vols {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: csiVolume(v, st.ClusterID), Status: volumeStatus(v)})
	}
	return resp, nil
}

// validToken accepts what ListVolumes hands out: a brick volume ID.
func validToken(tok string) bool {
	return strings.HasPrefix(tok, "v-") && len(tok) <= 64 && !strings.ContainsAny(tok, " /\x00")
}

func volumeStatus(v *Volume) *csi.ListVolumesResponse_VolumeStatus {
	return &csi.ListVolumesResponse_VolumeStatus{
		PublishedNodeIds: append([]string(nil), v.AttachedTo...),
		VolumeCondition:  condition(v),
	}
}

// condition is abnormal in the states where the volume cannot take writes.
func condition(v *Volume) *csi.VolumeCondition {
	switch v.State {
	case "unavailable", "read-only", "fenced":
		msg := v.State
		if v.StateReason != "" {
			msg += ": " + v.StateReason
		}
		return &csi.VolumeCondition{Abnormal: true, Message: msg}
	}
	return &csi.VolumeCondition{Abnormal: false, Message: v.State}
}

// ControllerGetVolume reports a volume with the nodes it is published to
// and its condition.
func (d *Driver) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "ControllerGetVolume: the volume ID is empty")
	}
	v, err := d.cluster.Volume(ctx, id)
	if err != nil {
		return nil, toStatus(err, "reading volume %s", id)
	}
	st, err := d.cluster.Status(ctx)
	if err != nil {
		return nil, toStatus(err, "reading volume %s: the cluster's status", id)
	}
	vs := volumeStatus(v)
	return &csi.ControllerGetVolumeResponse{Volume: csiVolume(v, st.ClusterID), Status: &csi.ControllerGetVolumeResponse_VolumeStatus{
		PublishedNodeIds: vs.PublishedNodeIds, VolumeCondition: vs.VolumeCondition}}, nil
}

// GetCapacity is the largest volume of the parameters' layout the cluster
// can place now; zero for a topology that is not this cluster's.
func (d *Driver) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	spec, err := parseParameters(req.GetParameters())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "GetCapacity: %v", err)
	}
	for _, c := range req.GetVolumeCapabilities() {
		if err := checkCapability(c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "GetCapacity: %v", err)
		}
	}
	if t := req.GetAccessibleTopology(); t != nil {
		st, err := d.cluster.Status(ctx)
		if err != nil {
			return nil, toStatus(err, "GetCapacity: reading the cluster's status")
		}
		if !ours(t, st.ClusterID) {
			return &csi.GetCapacityResponse{AvailableCapacity: 0}, nil
		}
	}
	spec.Defaults()
	avail, err := d.cluster.Capacity(ctx, spec.Layout)
	if err != nil {
		return nil, toStatus(err, "GetCapacity for %s", spec.Layout)
	}
	a := int64(min(avail, uint64(volspec.MaxSize)))
	return &csi.GetCapacityResponse{AvailableCapacity: a, MaximumVolumeSize: wrapperspb.Int64(a)}, nil
}

// ControllerExpandVolume grows the volume's quota; a size it has already
// is done. The FUSE mount needs no node step: NodeExpansionRequired is
// false.
func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "ControllerExpandVolume: the volume ID is empty")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: ControllerExpandVolume without a capacity range", id)
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := checkCapability(c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
		}
	}
	size, err := sizeFor(req.GetCapacityRange())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
	}
	unlock, err := d.lock("vol/"+id, "volume "+id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := d.cluster.Volume(ctx, id)
	if err != nil {
		return nil, toStatus(err, "expanding volume %s", id)
	}
	if lim := req.GetCapacityRange().GetLimitBytes(); lim > 0 && v.SizeBytes > uint64(lim) {
		return nil, status.Errorf(codes.OutOfRange, "volume %s (%s) has %d bytes, more than the limit of %d: volumes do not shrink", id, v.Name, v.SizeBytes, lim)
	}
	if size <= v.SizeBytes {
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: int64(v.SizeBytes)}, nil
	}
	if !d.cfg.Expand {
		return nil, status.Errorf(codes.Unimplemented, "volume %s (%s): growing a volume's size (to %d bytes) is not supported by this cluster yet", id, v.Name, size)
	}
	avail, err := d.cluster.Capacity(ctx, v.Layout)
	if err != nil {
		return nil, toStatus(err, "expanding volume %s (%s): reading the cluster's capacity", id, v.Name)
	}
	if grow := size - v.SizeBytes; avail > 0 && grow > avail {
		return nil, status.Errorf(codes.OutOfRange, "volume %s (%s): growing by %d bytes is more than the cluster can place for %s now (%d bytes)",
			id, v.Name, grow, v.Layout, avail)
	}
	if v, err = d.cluster.Expand(ctx, id, size); err != nil {
		return nil, toStatus(err, "expanding volume %s to %d bytes", id, size)
	}
	d.log.Info("volume expanded", "volume", v.Name, "id", id, "size", v.SizeBytes)
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: int64(v.SizeBytes), NodeExpansionRequired: false}, nil
}
