package docker

import (
	"context"
	"errors"
	"time"

	"github.com/brickvol/brick/volspec"
)

// Volumes is what the plugin needs from brick. The daemon implements it on
// top of its own control service (so every call is validated, forwarded
// to the Raft leader and logged exactly like a CLI request); tests use an
// in-memory fake.
//
// Every method may be called concurrently, for different volumes. Errors
// should be *Error values (or wrap one) so the plugin can tell the kinds
// apart; any other error is reported to Docker with its text as is.
type Volumes interface {
	// Create creates a volume from a complete, validated spec. A volume of
	// that name that already exists is ErrExists.
	Create(ctx context.Context, spec volspec.Spec) error
	// Remove deletes a volume everywhere. ErrNotFound when there is none;
	// ErrInUse while a host has it attached.
	Remove(ctx context.Context, name string) error
	// Get describes one volume; ErrNotFound when there is none.
	Get(ctx context.Context, name string) (Volume, error)
	// List describes every volume of the cluster.
	List(ctx context.Context) ([]Volume, error)
	// Mount attaches the volume to this host and mounts it at dir, which
	// exists. When the volume is already mounted at dir it returns nil and
	// changes nothing. ErrInUse when another host holds the volume.
	Mount(ctx context.Context, name, dir string) error
	// Unmount stops the mount of volume name at dir and detaches the volume
	// from this host. When nothing is mounted at dir it still detaches.
	Unmount(ctx context.Context, name, dir string) error
}

// Volume is a volume as the plugin reports it to Docker. Host names are
// daemon names (brickd --name).
type Volume struct {
	Name      string
	CreatedAt time.Time
	SizeBytes uint64
	Layout    string // "replicas=3" or "ec=4+2"
	Access    string // single or shared
	MinISR    int
	// State is the volume's one word (healthy, degraded, healing,
	// read-only, fenced, unavailable); StateReason says why when not
	// healthy.
	State, StateReason string
	Epoch              uint64
	// Head is the host that orders the volume's writes, "" when the
	// volume is attached nowhere.
	Head string
	// Placement are the hosts holding the volume's data; InSync those of
	// them in the in-sync replica set.
	Placement, InSync []string
	// Attached are the hosts the volume is attached to.
	Attached []string
	// Heal describes heal progress, "" when none is known.
	Heal string
}

// Kinds of failure a Volumes implementation reports (wrapped in *Error).
var (
	ErrNotFound    = errors.New("no such volume")
	ErrExists      = errors.New("volume already exists")
	ErrInUse       = errors.New("volume is in use on another host")
	ErrInvalid     = errors.New("invalid request")
	ErrUnavailable = errors.New("brick cluster unavailable")
)

// Error is a failure reported by a Volumes implementation: Kind is one of
// the Err* kinds above or nil when none fits, and Msg is the whole,
// human-readable text (say, the daemon's own message).
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap makes errors.Is(err, ErrNotFound) and friends work.
func (e *Error) Unwrap() error { return e.Kind }
