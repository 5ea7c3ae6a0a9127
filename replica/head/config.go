package head

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"
)

// State words, the same in logs, Status and the CLI (design.md).
const (
	// StateHealthy: every placement brick is in the ISR and keeping up.
	StateHealthy = "healthy"
	// StateDegraded: the volume is writable but the ISR is smaller than the
	// placement, or a brick is being dropped (a Raft proposal is pending or
	// being retried), and no heal is making progress.
	StateDegraded = "degraded"
	// StateHealing: the volume is writable, and at least one placement brick
	// outside the ISR is catching up (or joining the ISR). It takes
	// precedence over degraded, which it implies.
	StateHealing = "healing"
	// StateReadOnly: keeping the promises would need an ISR below min-isr;
	// mutations fail with EROFS until the cause is gone.
	StateReadOnly = "read-only"
	// StateFenced: a newer epoch exists; this head can never write again.
	StateFenced = "fenced"
)

// Sentinel errors. Branch with errors.Is / errors.As.
var (
	// ErrStaleEpoch is what a Transport or Control returns (wrapped) when a
	// brick or Raft refused this head's epoch as stale. The adapters of
	// package control / the gRPC transport wrap their own errors with it.
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrFenced is matched by every FencedError.
	ErrFenced = errors.New("head fenced")
	// ErrReadOnly is matched by every ReadOnlyError (as is syscall.EROFS).
	ErrReadOnly = errors.New("volume read-only")
	// ErrClosed: the head was closed (or its context cancelled).
	ErrClosed = errors.New("head closed")
	// ErrInvalid: the caller passed an op the head does not take.
	ErrInvalid = errors.New("invalid op")
	// ErrNoResult: the op was applied, but every ISR brick's result for it
	// was lost with a broken stream; the file system maps it to EIO.
	ErrNoResult = errors.New("its result was lost with a broken stream")
	// ErrLogTruncated is matched by every LogTruncatedError: a brick's op
	// log no longer holds the ops a heal asked for.
	ErrLogTruncated = errors.New("op log truncated")
)

// LogTruncatedError is what Transport.OpsSince returns when the source's op
// log no longer holds the op after AfterSeq: the brick being healed needs a
// full (checksum) resync unless another brick's log still covers it.
type LogTruncatedError struct {
	Source   string // the brick whose log was read
	AfterSeq uint64 // the ops after this seq were asked for
	FirstSeq uint64 // the oldest op still in the log; 0 when unknown
	Err      error  // the transport's own error, if any
}

func (e *LogTruncatedError) Error() string {
	s := fmt.Sprintf("the op log of %s no longer holds op %d", e.Source, e.AfterSeq+1)
	if e.FirstSeq != 0 {
		s = fmt.Sprintf("the op log of %s starts at %d, past op %d", e.Source, e.FirstSeq, e.AfterSeq+1)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap makes errors.Is(err, ErrLogTruncated) hold (and exposes Err).
func (e *LogTruncatedError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrLogTruncated}
	}
	return []error{ErrLogTruncated, e.Err}
}

// FencedError says that this head's epoch is stale: a newer head exists and
// this one can no longer write. The file system maps it to EIO.
type FencedError struct {
	Epoch  uint64 // this head's (stale) epoch
	Reason string // who said so, and which epoch they knew
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("head fenced at epoch %d: %s; a newer head owns the volume, this mount can no longer write", e.Epoch, e.Reason)
}

// Unwrap makes errors.Is(err, ErrFenced) and errors.Is(err, ErrStaleEpoch) hold.
func (e *FencedError) Unwrap() []error { return []error{ErrFenced, ErrStaleEpoch} }

// ReadOnlyError says that the volume is read-only because its ISR would be
// below min-isr. errors.Is(err, syscall.EROFS) holds.
type ReadOnlyError struct {
	Reason string
}

func (e *ReadOnlyError) Error() string { return "volume read-only: " + e.Reason }

// Unwrap makes errors.Is(err, ErrReadOnly) and errors.Is(err, syscall.EROFS) hold.
func (e *ReadOnlyError) Unwrap() []error { return []error{ErrReadOnly, syscall.EROFS} }

// LostOpsError says that ops acknowledged before any brick applied them
// (writes, and whatever else went through Head.Submit) failed when the
// primary applied them: the Sync that reports it fails with EIO, as fsync
// does after a failed write-back.
type LostOpsError struct {
	Ops     []string // what failed, oldest first
	Dropped int      // more failures than Ops lists
}

func (e *LostOpsError) Error() string {
	msg := "ops acknowledged before they were applied failed on the primary brick: " + strings.Join(e.Ops, "; ")
	if e.Dropped > 0 {
		msg += fmt.Sprintf(" (and %d more)", e.Dropped)
	}
	return msg
}

// Unwrap makes errors.Is(err, syscall.EIO) hold.
func (e *LostOpsError) Unwrap() error { return syscall.EIO }

// Config is everything a head needs to start at an epoch. ISR and StartSeq
// come from fencing: the attach code fenced every ISR brick at Epoch and
// brought them level at StartSeq before starting the head.
type Config struct {
	// Volume names the volume in logs and statuses.
	Volume string
	// Epoch is this head's epoch, as committed in Raft (≥ 1).
	Epoch uint64
	// StartSeq is the last sequence number applied across the fenced ISR;
	// the first op gets StartSeq+1.
	StartSeq uint64
	// MaxFID is the highest file ID in the replicas; NewFID hands out more.
	MaxFID uint64
	// Placement lists the volume's bricks; ISR is the subset in sync, in
	// placement order (it is normalised to it).
	Placement []string
	ISR       []string
	// MinISR is the smallest ISR the head may write with (≥ 1).
	MinISR int
	// Primary is the preferred primary (the brick on this host), whose
	// results answer metadata ops. Empty or out of the ISR: the first ISR
	// brick.
	Primary string
	// ReplicaTimeout: a brick that does not acknowledge an op or an fsync
	// barrier for this long is dropped from the ISR. Measured on Tick
	// events, so it has the driver's TickInterval as granularity.
	ReplicaTimeout time.Duration
	// MaxInflightBytes bounds the bytes of ops sent but not yet applied by
	// every ISR brick; Do blocks (queues) beyond it.
	MaxInflightBytes int64
	// TickInterval is how often the driver ticks the machine.
	TickInterval time.Duration
	// ProposalRetry is the pause before re-proposing an ISR change that
	// Raft did not accept (unreachable, no leader).
	ProposalRetry time.Duration
	// ReconnectBackoff doubles on every failed stream open up to
	// MaxReconnectBackoff; the first reopen after a working stream is
	// immediate.
	ReconnectBackoff    time.Duration
	MaxReconnectBackoff time.Duration
	// MaxBatchBytes caps one stream message (the driver splits bigger
	// batches; an op bigger than it travels alone).
	MaxBatchBytes int
	// Linger is how long the driver may hold back ops nobody waits for
	// yet (writes, creates answered by the mount) to send them in one
	// stream message with the ones that follow: fewer, bigger batches
	// cost every brick fewer commits and wake-ups per op. An op with a
	// waiter, a sync, a full batch or a read (Head.Hurry) sends at once.
	// 0 sends every op as soon as it is sequenced.
	Linger time.Duration
	// HealRetry is how often the head tries again to open a stream to a
	// placement brick outside the ISR that it could not reach (or that
	// needs a full resync), and to read an op log after a failed read.
	HealRetry time.Duration
	// HealBytesPerSec throttles what heal sends each catching-up brick (ops
	// from an op log and the head's retained ops alike; per brick, not
	// for all of them together): a token bucket of
	// one second's worth, full when the heal stream opens, an op going out
	// whenever the bucket is not in debt. 0 means unlimited; DefaultConfig
	// sets 64 MiB/s.
	HealBytesPerSec int64
	// Logger receives the machine's and driver's logs; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the production timeouts and bounds; the volume
// fields (Epoch, Placement, ISR, ...) are left for the caller.
func DefaultConfig() Config {
	return Config{
		MinISR:              1,
		ReplicaTimeout:      3 * time.Second,
		MaxInflightBytes:    64 << 20,
		TickInterval:        100 * time.Millisecond,
		ProposalRetry:       500 * time.Millisecond,
		ReconnectBackoff:    50 * time.Millisecond,
		MaxReconnectBackoff: 2 * time.Second,
		MaxBatchBytes:       1 << 20,
		HealRetry:           2 * time.Second,
		HealBytesPerSec:     64 << 20,
	}
}

// LocalConfig is DefaultConfig with short timeouts, for tests and several
// daemons on one machine.
func LocalConfig() Config {
	c := DefaultConfig()
	c.ReplicaTimeout = 500 * time.Millisecond
	c.TickInterval = 20 * time.Millisecond
	c.ProposalRetry = 100 * time.Millisecond
	c.ReconnectBackoff = 10 * time.Millisecond
	c.MaxReconnectBackoff = 200 * time.Millisecond
	c.MaxInflightBytes = 8 << 20
	c.HealRetry = 200 * time.Millisecond
	return c
}

// withDefaults fills zero durations and bounds from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ReplicaTimeout == 0 {
		c.ReplicaTimeout = d.ReplicaTimeout
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = d.MaxInflightBytes
	}
	if c.TickInterval == 0 {
		c.TickInterval = d.TickInterval
	}
	if c.ProposalRetry == 0 {
		c.ProposalRetry = d.ProposalRetry
	}
	if c.ReconnectBackoff == 0 {
		c.ReconnectBackoff = d.ReconnectBackoff
	}
	if c.MaxReconnectBackoff == 0 {
		c.MaxReconnectBackoff = d.MaxReconnectBackoff
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = d.MaxBatchBytes
	}
	if c.HealRetry == 0 {
		c.HealRetry = d.HealRetry
	}
	return c
}

// Validate names the first bad field. Zero durations and bounds are valid
// (they take DefaultConfig's values).
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("head config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Epoch == 0:
		return bad("Epoch", "is 0; a head runs at an epoch committed in Raft (≥ 1)")
	case len(c.Placement) == 0:
		return bad("Placement", "is empty")
	case c.MinISR < 1 || c.MinISR > len(c.Placement):
		return bad("MinISR", "is %d; it must be between 1 and the placement size %d", c.MinISR, len(c.Placement))
	case c.Primary != "" && !slices.Contains(c.Placement, c.Primary):
		return bad("Primary", "%q is not in the placement %v", c.Primary, c.Placement)
	case c.ReplicaTimeout < 0, c.TickInterval < 0, c.ProposalRetry < 0, c.ReconnectBackoff < 0, c.MaxReconnectBackoff < 0, c.HealRetry < 0:
		return bad("timeouts", "must not be negative")
	case c.MaxInflightBytes < 0 || c.MaxBatchBytes < 0:
		return bad("MaxInflightBytes/MaxBatchBytes", "must not be negative")
	case c.HealBytesPerSec < 0:
		return bad("HealBytesPerSec", "is %d; it must be positive, or 0 for unlimited", c.HealBytesPerSec)
	}
	for i, id := range c.Placement {
		if id == "" || strings.ContainsAny(id, " \t\n") {
			return bad("Placement", "brick %d has an empty or blank ID %q", i+1, id)
		}
		if slices.Contains(c.Placement[:i], id) {
			return bad("Placement", "brick %s is listed twice", id)
		}
	}
	for i, id := range c.ISR {
		if !slices.Contains(c.Placement, id) {
			return bad("ISR", "brick %s is not in the placement %v", id, c.Placement)
		}
		if slices.Contains(c.ISR[:i], id) {
			return bad("ISR", "brick %s is listed twice", id)
		}
	}
	return nil
}

// Status is a snapshot of what the head knows. Slices are the caller's.
type Status struct {
	Volume    string
	State     string // one of the State constants
	Reason    string // why, for every state but healthy
	Epoch     uint64
	Placement []string
	ISR       []string
	MinISR    int
	Primary   string
	// LastSeq is the last sequenced op; TrimSeq the last op applied by every
	// ISR brick (ops after it are retained for resends).
	LastSeq, TrimSeq uint64
	InflightBytes    int64
	Queued           int // submissions waiting for window space
	PendingSyncs     int
	Bricks           []BrickStatus // ISR bricks, in ISR order
	Heals            []HealStatus  // placement bricks outside the ISR, in placement order
}

// BrickStatus is one ISR brick as the head sees it.
type BrickStatus struct {
	ID      string
	Stream  string // up, opening, down
	Applied uint64
	Synced  uint64
	Lag     uint64 // LastSeq − Applied
	Leaving string // why the head wants it out of the ISR, if it does
	LastErr string // the last stream error
}

// Heal states of a placement brick outside the ISR (HealStatus.State).
const (
	// HealHealing: a stream is open and the brick is catching up (or
	// joining the ISR).
	HealHealing = "healing"
	// HealNeedsFull: the op log cannot catch the brick up (truncated,
	// diverged, or the brick says so); a full (checksum) resync must.
	HealNeedsFull = "needs-full-heal"
	// HealUnreachable: no stream to the brick; the head retries every
	// HealRetry.
	HealUnreachable = "unreachable"
)

// HealStatus is one placement brick outside the ISR as the head sees it.
type HealStatus struct {
	ID     string
	State  string // HealHealing, HealNeedsFull, HealUnreachable
	Stream string // up, opening, down
	// Phase details HealHealing: "verifying" (checking the brick's last op
	// against an op log), "op-log" (ops come from Source's op log),
	// "retained" (from the head's retained ops), "joining" (proposed into
	// the ISR).
	Phase  string
	Source string // the ISR brick whose op log is read, when one is
	// Applied and Synced are the brick's acknowledged position; Target is
	// the head's last sequenced op (it moves with new writes).
	Applied, Synced, Target uint64
	OpsRemaining            uint64
	// BytesRemaining is exact for the ops the head retains and estimated
	// (average op size so far) for those read from an op log; -1 unknown.
	BytesRemaining int64
	Rate           float64       // bytes/s acknowledged, recent (0: no sample yet)
	ETA            time.Duration // -1 when unknown
	Reason         string        // why it needs a full heal, or the last error
}
