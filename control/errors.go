package control

import "errors"

// Sentinel errors. Every error the FSM and Place return wraps exactly one of
// them with the operation and the objects involved, e.g.
//
//	attach volume "db" (v-1a2b) on brick "ci-2": volume is attached: held by brick "ci-1"; attach with force to take it over
//
// Branch with errors.Is, never on the text. Boundaries map them once (gRPC
// codes, Docker plugin Err strings, CLI exit codes).
var (
	// ErrNotFound: the named brick, volume or attachment does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a name or ID is already taken.
	ErrExists = errors.New("already exists")
	// ErrAttached: the volume is attached elsewhere (attach without force on a
	// single-access volume, delete without force).
	ErrAttached = errors.New("volume is attached")
	// ErrStaleEpoch: the command was conditioned on an epoch that is no longer
	// the volume's current one; its proposer has been superseded.
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrInvalid: the command is malformed or breaks a rule of the data model.
	ErrInvalid = errors.New("invalid command")
	// ErrBrickInUse: the brick holds volume data or attachments.
	ErrBrickInUse = errors.New("brick in use")
	// ErrClusterInitialized: init-cluster on a cluster that has an ID.
	ErrClusterInitialized = errors.New("cluster already initialized")
	// ErrNotLeader: a proposal reached a node that is not the Raft leader
	// (returned by the Raft wiring, never by the FSM).
	ErrNotLeader = errors.New("not the raft leader")
)

// detailError is an error whose whole text is msg and which matches kind
// with errors.Is: for messages that read better without the sentinel's text.
type detailError struct {
	kind error
	msg  string
}

func (e *detailError) Error() string { return e.msg }
func (e *detailError) Unwrap() error { return e.kind }
