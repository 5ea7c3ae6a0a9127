package csi

import (
	"context"
	"errors"

	"github.com/brickvol/brick/volspec"
)

// Errors a Cluster returns, wrapped with what failed. The driver maps them
// to gRPC codes once (see status.go); anything else is Internal.
var (
	// ErrNotFound: the volume, the node or the mount does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a volume of that name exists already.
	ErrExists = errors.New("already exists")
	// ErrHeld: the volume is attached to another host that still holds it
	// (access=single), or is busy in a way a retry later may fix.
	ErrHeld = errors.New("held elsewhere")
	// ErrInvalid: the cluster refused the request's content.
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable: no Raft leader, or a peer could not be reached.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnsupported: the cluster cannot do this (yet).
	ErrUnsupported = errors.New("not supported")
)

// Volume is what the driver needs to know of a brick volume. The slices
// and map belong to the caller who received the Volume.
type Volume struct {
	ID        string
	Name      string
	SizeBytes uint64
	Layout    volspec.Layout
	Access    string // volspec.AccessSingle or volspec.AccessShared
	MinISR    int
	Labels    map[string]string
	// State is one of brick's state words (healthy, degraded, healing,
	// read-only, fenced, unavailable); StateReason says why.
	State, StateReason string
	Epoch              uint64
	// AttachedTo names the hosts (daemon names) the volume is attached to.
	AttachedTo []string
}

// Status is the cluster as the answering daemon sees it.
type Status struct {
	ClusterID string
	// Health is healthy, degraded or unavailable (no Raft leader).
	Health string
}

// Cluster is the seam between the driver and brickd: the catalog (through
// Raft) and this host's mounts. The daemon implements it; tests fake it.
// Every method may be called concurrently. Errors wrap the sentinels above.
type Cluster interface {
	// Status reports the cluster's ID and health word.
	Status(ctx context.Context) (Status, error)
	// HasNode reports whether a daemon of that name is a brick of the cluster.
	HasNode(ctx context.Context, name string) (bool, error)
	// CreateVolume creates a volume from a complete, validated spec. A
	// volume of that name already existing is ErrExists.
	CreateVolume(ctx context.Context, spec volspec.Spec) (*Volume, error)
	// DeleteVolume removes a volume (detached or not: the CO unpublishes
	// first). A volume that does not exist is ErrNotFound.
	DeleteVolume(ctx context.Context, id string) error
	// Volume looks a volume up by ID; VolumeByName by name.
	Volume(ctx context.Context, id string) (*Volume, error)
	VolumeByName(ctx context.Context, name string) (*Volume, error)
	// Volumes lists every volume, in any order.
	Volumes(ctx context.Context) ([]*Volume, error)
	// Attach attaches the volume to the host named node, with fencing (a new
	// epoch for access=single). Attaching where it is attached already is a
	// no-op. A single volume held by another live host is ErrHeld.
	Attach(ctx context.Context, id, node string) (*Volume, error)
	// Detach removes node's attachment; not attached there is ErrNotFound.
	Detach(ctx context.Context, id, node string) error
	// Mount starts (or finds running) the mount process serving the volume
	// at dir on this host, attaching it here. Idempotent for the same
	// volume and dir; another volume at dir is ErrHeld.
	Mount(ctx context.Context, id, dir string) error
	// Unmount stops the mount process serving dir and unmounts it, leaving
	// the volume attached (ControllerUnpublish detaches). A dir that is no
	// brick mount is ErrNotFound.
	Unmount(ctx context.Context, dir string) error
	// MountedAt returns the ID of the volume whose mount process serves dir
	// on this host, or ErrNotFound.
	MountedAt(ctx context.Context, dir string) (string, error)
	// Capacity is the largest volume of the layout the cluster could place
	// now: the headroom (free space minus quotas placed) of the
	// Width()-th roomiest live brick.
	Capacity(ctx context.Context, layout volspec.Layout) (uint64, error)
	// Expand grows the volume's size quota to size bytes, online. ErrUnsupported
	// when the cluster cannot (Config.Expand tells the driver).
	Expand(ctx context.Context, id string, size uint64) (*Volume, error)
}
