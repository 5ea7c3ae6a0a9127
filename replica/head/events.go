package head

import (
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// Event is an input of Machine.Step. The set is closed: only the types of
// this file implement it.
type Event interface{ isEvent() }

// Submit asks for Op to be sequenced. The machine fills Op.Seq and Op.Epoch
// and keeps the op (it is resent after reconnects): the submitter must not
// touch it afterwards. With WantResult the waiter completes with the
// primary's result; without, as soon as the op is sequenced (page-cache
// semantics, for writes).
type Submit struct {
	Op         *brickpb.Op
	Waiter     uint64
	WantResult bool
}

// SyncReq asks for every op submitted before it to be durable on every ISR
// brick.
type SyncReq struct{ Waiter uint64 }

// Cancel withdraws a waiter (its caller gave up). It always completes the
// waiter with Err, unless it is already complete; an op already sequenced is
// still applied.
type Cancel struct {
	Waiter uint64
	Err    error
}

// Ack is a message received on the stream Gen of Brick.
type Ack struct {
	Brick string
	Gen   uint64
	Ack   *brickpb.ReplicateAck
}

// StreamDown reports that the stream Gen of Brick failed, or could not be
// opened.
type StreamDown struct {
	Brick string
	Gen   uint64
	Err   error
}

// StreamUp reports that the stream Gen of Brick is open, and the brick's
// position when it opened (see Position).
type StreamUp struct {
	Brick           string
	Gen             uint64
	Applied, Synced uint64
	AppliedEpoch    uint64
	NeedsFullHeal   string
	UsedBytes       int64 // the replica's usage (Position.UsedBytes)
}

// Resynced reports that a full resync (outside the machine) rebuilt a
// healing brick's replica: whatever made it need one is gone, and its next
// stream reports where the copy stands.
type Resynced struct{ Brick string }

// LeaseProof reports that each of Bricks answered a request of this head
// sent at At that it would have refused had it been fenced past this
// epoch (a read): each was at this epoch after At, as an ack of an op
// sequenced at At proves (Machine.LastAck). How a head with nothing to
// write keeps its lease without adding to the volume's history
// (Head.RenewLease).
type LeaseProof struct {
	Bricks []string
	At     time.Time
}

// Tick tells the machine the time. The first event of a machine must be a
// Tick.
type Tick struct{ Now time.Time }

// ISRCommitted reports an ISR committed in Raft. Proposed marks the answer
// to this machine's own ProposeISR; Index (the Raft index, 0 when unknown)
// orders observations: an older one than already seen is ignored.
type ISRCommitted struct {
	Epoch    uint64
	ISR      []string
	Index    uint64
	Proposed bool
}

// ISRProposalFailed reports that the last ProposeISR was not committed.
// Stale: Raft refused it because the epoch moved on (the head is fenced);
// otherwise Raft could not be reached and the proposal will be retried.
type ISRProposalFailed struct {
	Err   error
	Stale bool
}

// Fenced reports that Brick refused this head's epoch (it promised a newer one).
type Fenced struct {
	Brick string
	Msg   string
}

// Stop ends the machine: every waiter completes with Err.
type Stop struct{ Err error }

// HealFetched answers the HealFetch Fetch of Brick: the ops read (in order,
// the caller's to keep and modify), and the error that ended the read early
// (nil when it delivered what was asked or everything the source had).
// Ops read before an error are used.
type HealFetched struct {
	Brick string
	Fetch uint64
	Ops   []*brickpb.Op
	Err   error
}

func (Submit) isEvent()            {}
func (Resynced) isEvent()          {}
func (LeaseProof) isEvent()        {}
func (SyncReq) isEvent()           {}
func (Cancel) isEvent()            {}
func (Ack) isEvent()               {}
func (StreamDown) isEvent()        {}
func (StreamUp) isEvent()          {}
func (Tick) isEvent()              {}
func (ISRCommitted) isEvent()      {}
func (ISRProposalFailed) isEvent() {}
func (Fenced) isEvent()            {}
func (Stop) isEvent()              {}
func (HealFetched) isEvent()       {}

// Action is an output of Machine.Step, to be carried out in order.
type Action interface{ isAction() }

// Send appends Ops (contiguous, ascending) to the stream Gen of Brick. The
// slice is the driver's; the ops are shared and must not be modified.
type Send struct {
	Brick string
	Gen   uint64
	Ops   []*brickpb.Op
	// MayLinger: nobody waits for these ops yet (each was answered when
	// sequenced), so the driver may hold them back briefly to send them
	// with the ones that follow (Config.Linger).
	MayLinger bool
}

// Complete answers a waiter: exactly once per waiter, ever.
type Complete struct {
	Waiter uint64
	Result *brickpb.OpResult // nil for syncs and on error
	Err    error
}

// ProposeISR asks Raft to set the ISR, conditioned on Epoch. The driver
// answers with ISRCommitted{Proposed: true} or ISRProposalFailed. At most
// one is outstanding.
type ProposeISR struct {
	Epoch uint64
	ISR   []string
}

// Reconnect asks for a new stream Gen to Brick (closing any older one),
// answered by exactly one StreamUp or StreamDown for Gen.
type Reconnect struct {
	Brick string
	Gen   uint64
}

// CloseStream closes the stream Gen of Brick; the machine will not use it.
type CloseStream struct {
	Brick string
	Gen   uint64
}

// StateChanged reports a new state word or reason.
type StateChanged struct {
	State, Reason string
}

// ISRChanged reports the ISR and primary the machine now works with.
type ISRChanged struct {
	Epoch   uint64
	ISR     []string
	Primary string
}

// HealFetch asks the driver to read, in the background, Source's op log
// after AfterSeq (Transport.OpsSince at the head's epoch), stopping after the
// op UpTo or once MaxBytes were read, and to answer with exactly one
// HealFetched for Fetch (unless CancelFetch came first).
type HealFetch struct {
	Brick    string // the brick being healed
	Fetch    uint64
	Source   string
	AfterSeq uint64
	UpTo     uint64
	MaxBytes int64
}

// CancelFetch abandons the HealFetch Fetch of Brick; the machine ignores its
// answer if it still comes.
type CancelFetch struct {
	Brick string
	Fetch uint64
}

func (Send) isAction()         {}
func (HealFetch) isAction()    {}
func (CancelFetch) isAction()  {}
func (Complete) isAction()     {}
func (ProposeISR) isAction()   {}
func (Reconnect) isAction()    {}
func (CloseStream) isAction()  {}
func (StateChanged) isAction() {}
func (ISRChanged) isAction()   {}
