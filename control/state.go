package control

import "time"

// BrickID is a brick's random, persistent identity (never derived from an
// address). VolumeID likewise for a volume: names may be reused after a
// delete, IDs never are.
type (
	BrickID  string
	VolumeID string
)

// State is the whole replicated catalog. The FSM owns it; readers get deep
// copies (State.Clone) and may keep them.
type State struct {
	// ClusterID is chosen by the bootstrapping daemon in the first command.
	ClusterID string `json:"cluster_id"`
	// Index is the Raft index of the last applied command.
	Index   uint64               `json:"index"`
	Bricks  map[BrickID]*Brick   `json:"bricks"`
	Volumes map[VolumeID]*Volume `json:"volumes"`
	// Tombstones remembers deleted volume IDs, so a brick that was away during
	// a delete knows its leftover replica directory may go.
	Tombstones map[VolumeID]time.Time `json:"tombstones"`
}

// Brick is one daemon's storage on one host.
type Brick struct {
	ID   BrickID `json:"id"`
	Name string  `json:"name"`
	// Addr is the daemon's gRPC address (host:port); RaftAddr its Raft one.
	Addr          string `json:"addr"`
	RaftAddr      string `json:"raft_addr"`
	CapacityBytes uint64 `json:"capacity_bytes"`
	FreeBytes     uint64 `json:"free_bytes"`
	// NoDisk marks a tie-breaker daemon that takes part in Raft but holds no
	// replicas; placement skips it.
	NoDisk    bool      `json:"no_disk,omitempty"`
	JoinedAt  time.Time `json:"joined_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Access says how many hosts may attach a volume at once.
type Access string

const (
	AccessSingle Access = "single"
	AccessShared Access = "shared"
)

// Layout is either Replicas > 0 (N full copies) or ECData+ECParity > 0
// (erasure coding K+M), never both.
type Layout struct {
	Replicas int `json:"replicas,omitempty"`
	ECData   int `json:"ec_data,omitempty"`
	ECParity int `json:"ec_parity,omitempty"`
}

// Width is the number of bricks the layout needs.
func (l Layout) Width() int {
	if l.Replicas > 0 {
		return l.Replicas
	}
	return l.ECData + l.ECParity
}

// Volume is everything design.md's data model says a volume is. Nothing about
// a volume is decided outside Raft.
type Volume struct {
	ID        VolumeID          `json:"id"`
	Name      string            `json:"name"`
	SizeBytes uint64            `json:"size_bytes"`
	Layout    Layout            `json:"layout"`
	Access    Access            `json:"access"`
	MinISR    int               `json:"min_isr"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Placement lists the bricks holding the volume's replicas or fragments,
	// in fragment order for erasure-coded volumes.
	Placement []BrickID `json:"placement"`
	// Epoch increases on every attach that moves the head; bricks refuse
	// operations from older epochs.
	Epoch uint64 `json:"epoch"`
	// Head is the brick (host) whose mount process orders writes; empty when
	// the volume is attached nowhere.
	Head BrickID `json:"head,omitempty"`
	// ISR is the in-sync replica set: the placement bricks known to hold
	// everything acknowledged at Epoch.
	ISR         []BrickID    `json:"isr"`
	Attachments []Attachment `json:"attachments,omitempty"`
	CreatedAt   time.Time    `json:"created_at"`
}

// Attachment records one host that has the volume attached.
type Attachment struct {
	Brick BrickID   `json:"brick"`
	Epoch uint64    `json:"epoch"`
	Since time.Time `json:"since"`
	// Endpoint is where the host's mount process of a shared volume serves
	// it to the other mounting hosts (host:port); empty until it says.
	Endpoint string `json:"endpoint,omitempty"`
}
