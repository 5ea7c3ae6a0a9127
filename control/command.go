package control

import "time"

// CommandVersion is the encoding version of Command; Decode refuses others.
const CommandVersion = 1

// CommandType names what a Command does.
type CommandType string

const (
	CmdInitCluster  CommandType = "init-cluster"
	CmdUpsertBrick  CommandType = "upsert-brick"
	CmdRemoveBrick  CommandType = "remove-brick"
	CmdCreateVolume CommandType = "create-volume"
	CmdDeleteVolume CommandType = "delete-volume"
	CmdAttach       CommandType = "attach"
	CmdDetach       CommandType = "detach"
	CmdSetISR       CommandType = "set-isr"
	CmdResizeVolume CommandType = "resize-volume"
)

// Command is one entry of the Raft log. Exactly the field matching Type is
// set. At is the proposer's clock when it proposed the command: the FSM uses
// it for every timestamp and never reads a clock itself, so every replica of
// the state is identical.
type Command struct {
	Version int         `json:"v"`
	Type    CommandType `json:"type"`
	At      time.Time   `json:"at"`

	InitCluster  *InitCluster  `json:"init_cluster,omitempty"`
	UpsertBrick  *Brick        `json:"upsert_brick,omitempty"`
	RemoveBrick  *RemoveBrick  `json:"remove_brick,omitempty"`
	CreateVolume *Volume       `json:"create_volume,omitempty"`
	DeleteVolume *DeleteVolume `json:"delete_volume,omitempty"`
	Attach       *Attach       `json:"attach,omitempty"`
	Detach       *Detach       `json:"detach,omitempty"`
	SetISR       *SetISR       `json:"set_isr,omitempty"`
	ResizeVolume *ResizeVolume `json:"resize_volume,omitempty"`
}

// ResizeVolume grows a volume's size quota to SizeBytes, online. Shrinking
// is refused (ErrInvalid): data beyond the new size would have nowhere to
// go. The same size again is a no-op (idempotent).
type ResizeVolume struct {
	Name      string `json:"name"`
	SizeBytes uint64 `json:"size_bytes"`
}

// InitCluster sets the cluster ID; it is refused once one is set.
type InitCluster struct {
	ClusterID string `json:"cluster_id"`
}

// RemoveBrick drops a brick from the catalog; refused while any volume places
// data on it.
type RemoveBrick struct {
	ID BrickID `json:"id"`
}

// DeleteVolume removes a volume and tombstones its ID; refused while attached
// unless Force.
type DeleteVolume struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// Attach makes Brick an attached host of the volume. For access=single it
// becomes the head at Epoch+1; it is refused (ErrAttached) while another
// host holds the volume unless Force. Attaching where already attached is a
// no-op that keeps the epoch (idempotent) unless Renew, which moves the head
// to a new epoch in place (a new mount process fences a wedged old one of the
// same host without letting go of the volume). ExpectEpoch, when non-zero,
// must equal the current epoch (compare-and-set).
//
// For a shared volume, TakeHead makes an attached Brick the head at Epoch+1
// and drops the old head's attachment (its host is gone: the caller checked
// gossip), and Endpoint, when set, records where Brick's mount process
// serves the volume to the other mounting hosts (no epoch change).
type Attach struct {
	Volume      VolumeID `json:"volume"`
	Brick       BrickID  `json:"brick"`
	ExpectEpoch uint64   `json:"expect_epoch,omitempty"`
	Force       bool     `json:"force,omitempty"`
	Renew       bool     `json:"renew,omitempty"`
	TakeHead    bool     `json:"take_head,omitempty"`
	Endpoint    string   `json:"endpoint,omitempty"`
}

// Detach removes Brick's attachment. When it was the head of a single
// volume the head is cleared (the epoch stays: the next attach bumps it);
// for a shared volume with other attachments the oldest remaining one
// becomes head at Epoch+1.
type Detach struct {
	Volume VolumeID `json:"volume"`
	Brick  BrickID  `json:"brick"`
}

// SetISR replaces the in-sync replica set, conditioned on Epoch being the
// volume's current epoch (a stale head cannot shrink the ISR of its
// successor). Every member must be in the placement.
type SetISR struct {
	Volume VolumeID  `json:"volume"`
	Epoch  uint64    `json:"epoch"`
	ISR    []BrickID `json:"isr"`
}
