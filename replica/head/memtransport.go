package head

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// MemNet is the in-memory twin of the gRPC Transport: bricks that apply ops
// in memory, in order, refusing gaps and stale epochs like real ones, keep
// an op log (which can be truncated), with knobs to hold, drop, cut and
// refuse. Used by tests of this package and of
// the packages above it. Safe for concurrent use.
type MemNet struct {
	mu     sync.Mutex
	bricks map[string]*MemBrick
}

// NewMemNet returns a network of empty bricks (applied 0) named ids.
func NewMemNet(ids ...string) *MemNet {
	n := &MemNet{bricks: map[string]*MemBrick{}}
	for _, id := range ids {
		n.bricks[id] = &MemBrick{id: id, changed: make(chan struct{})}
	}
	return n
}

// Brick returns the brick named id, or nil.
func (n *MemNet) Brick(id string) *MemBrick {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bricks[id]
}

// Open implements Transport: it fences the brick at epoch and replaces its
// stream (the old one breaks).
func (n *MemNet) Open(_ context.Context, id string, epoch uint64) (Stream, Position, error) {
	b := n.Brick(id)
	if b == nil {
		return nil, Position{}, fmt.Errorf("brick %s: no such brick", id)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opens++
	switch {
	case b.unreachable:
		return nil, Position{}, fmt.Errorf("brick %s: unreachable", id)
	case b.promised > epoch:
		return nil, Position{}, fmt.Errorf("brick %s promised epoch %d, refuses epoch %d: %w", id, b.promised, epoch, ErrStaleEpoch)
	}
	b.promised = epoch
	if b.cur != nil {
		b.cur.end(errors.New("stream replaced"), true)
	}
	s := &memStream{b: b}
	s.cond = sync.NewCond(&s.mu)
	b.cur = s
	return s, b.position(), nil
}

// Adopt implements Transport: the brick, fenced at epoch, stops being
// suspect; everything it applied counts as synced (it flushes its tree).
func (n *MemNet) Adopt(_ context.Context, id string, epoch uint64, why string) (Position, error) {
	b := n.Brick(id)
	if b == nil {
		return Position{}, fmt.Errorf("brick %s: no such brick", id)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.unreachable:
		return Position{}, fmt.Errorf("brick %s: unreachable", id)
	case b.promised > epoch:
		return Position{}, fmt.Errorf("brick %s promised epoch %d, refuses epoch %d: %w", id, b.promised, epoch, ErrStaleEpoch)
	case b.promised < epoch:
		return Position{}, fmt.Errorf("brick %s: adopt at epoch %d before fencing (promise %d)", id, epoch, b.promised)
	case why == "":
		return Position{}, fmt.Errorf("brick %s: adopt without a reason", id)
	}
	if b.suspect != "" {
		b.suspect, b.synced = "", b.applied
		b.adopted++
	}
	return b.position(), nil
}

// OpsSince implements Transport: it reads the brick's op log (the ops it
// applied, from its log start on) and hands fn copies.
func (n *MemNet) OpsSince(ctx context.Context, source string, epoch, afterSeq uint64, fn func(*brickpb.Op) error) error {
	b := n.Brick(source)
	if b == nil {
		return fmt.Errorf("brick %s: no such brick", source)
	}
	ops, err := b.readLog(ctx, epoch, afterSeq)
	if err != nil {
		return err
	}
	for _, op := range ops {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(op); err != nil {
			return err
		}
	}
	return nil
}

// readLog returns copies of the logged ops after afterSeq.
func (b *MemBrick) readLog(ctx context.Context, epoch, afterSeq uint64) ([]*brickpb.Op, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fetches++
	for b.holdFetch && !b.unreachable {
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		b.mu.Lock()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading the op log of %s: %w", b.id, err)
		}
	}
	first := uint64(1)
	if len(b.ops) > 0 {
		first = b.ops[0].Seq
	}
	first = max(first, b.logFirst)
	switch {
	case b.unreachable:
		return nil, fmt.Errorf("brick %s: unreachable", b.id)
	case b.promised > epoch:
		return nil, fmt.Errorf("brick %s promised epoch %d, refuses to read its log at epoch %d: %w", b.id, b.promised, epoch, ErrStaleEpoch)
	case afterSeq > b.applied:
		return nil, fmt.Errorf("brick %s: asked for the ops after %d, but only %d are applied", b.id, afterSeq, b.applied)
	case afterSeq < b.applied && afterSeq+1 < first:
		return nil, &LogTruncatedError{Source: b.id, AfterSeq: afterSeq, FirstSeq: first}
	}
	var ops []*brickpb.Op
	for _, op := range b.ops {
		if op.Seq > afterSeq {
			ops = append(ops, proto.Clone(op).(*brickpb.Op))
		}
	}
	return ops, nil
}

// MemBrick is one in-memory brick. By default it applies every op with
// errno 0, fsyncs at every OP_SYNC and acknowledges every Send at once.
type MemBrick struct {
	id      string
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of position
	apply   func(*brickpb.Op) *brickpb.OpResult
	cur     *memStream

	promised, applied, synced uint64
	ops                       []*brickpb.Op // the op log: applied ops, in order
	logFirst                  uint64        // the log holds no op before
	suspect                   string
	unreachable, hold, drop   bool
	holdFetch                 bool
	opens, sends, fetches     int
	adopted                   int
	faults                    []string
}

func (b *MemBrick) position() Position {
	p := Position{Applied: b.applied, Synced: b.synced, NeedsFullHeal: b.suspect}
	if n := len(b.ops); n > 0 && b.ops[n-1].Seq == b.applied {
		p.AppliedEpoch = OriginEpoch(b.ops[n-1])
	}
	return p
}

// SetApply sets how the brick answers ops (nil: errno 0, no attr). f must
// not modify the op; the result's Seq is filled in.
func (b *MemBrick) SetApply(f func(*brickpb.Op) *brickpb.OpResult) { b.with(func() { b.apply = f }) }

// Hold(true) keeps acknowledgements from the head (the ops are applied);
// Hold(false) delivers the kept ones, in order, and stops holding.
func (b *MemBrick) Hold(on bool) {
	b.with(func() {
		b.hold = on
		if !on && b.cur != nil {
			b.cur.release()
		}
	})
}

// DropAcks makes the brick apply ops but lose every acknowledgement.
func (b *MemBrick) DropAcks(on bool) { b.with(func() { b.drop = on }) }

// SetReachable(false) makes Open and OpsSince fail; it does not cut the
// open stream.
func (b *MemBrick) SetReachable(on bool) {
	b.with(func() {
		b.unreachable = !on
		b.notify()
	})
}

// Disconnect breaks the open stream; acknowledgements not yet received are lost.
func (b *MemBrick) Disconnect() { b.with(b.disconnect) }

func (b *MemBrick) disconnect() {
	if b.cur != nil {
		b.cur.end(errors.New("connection reset"), true)
		b.cur = nil
	}
}

// PowerLoss is an unclean shutdown across a reboot: the brick keeps keep
// of the ops it had not fsync'd (at most all of them), turns suspect, and
// its stream breaks.
func (b *MemBrick) PowerLoss(keep int) {
	b.with(func() {
		lost := max(int(b.applied-b.synced)-keep, 0)
		b.ops = b.ops[:len(b.ops)-lost]
		b.applied -= uint64(lost)
		b.suspect = "unclean shutdown across a reboot"
		b.disconnect()
	})
}

// Crash loses what was not fsync'd (applied falls back to synced) and
// breaks the stream.
func (b *MemBrick) Crash() {
	b.with(func() {
		b.ops = b.ops[:len(b.ops)-int(b.applied-b.synced)]
		b.applied = b.synced
		b.disconnect()
	})
}

// HealFrom makes the brick a durable copy of src (what heal does before a
// brick rejoins the ISR).
func (b *MemBrick) HealFrom(src *MemBrick) {
	src.mu.Lock()
	ops, applied := slices.Clone(src.ops), src.applied
	src.mu.Unlock()
	b.with(func() { b.ops, b.applied, b.synced, b.suspect = ops, applied, applied, "" })
}

// TruncateLog drops the brick's op log before seq first (the ops stay
// applied): OpsSince after an earlier seq fails with a LogTruncatedError.
func (b *MemBrick) TruncateLog(first uint64) { b.with(func() { b.logFirst = max(b.logFirst, first) }) }

// SetSuspect makes the brick report (in Position.NeedsFullHeal) that it
// needs a full heal; "" clears it.
func (b *MemBrick) SetSuspect(why string) { b.with(func() { b.suspect = why }) }

// HoldFetches(true) makes OpsSince on this brick wait (until released, the
// brick turns unreachable, or the caller gives up).
func (b *MemBrick) HoldFetches(on bool) {
	b.with(func() {
		b.holdFetch = on
		b.notify()
	})
}

// Fence makes the brick promise epoch: it refuses older ones from now on.
func (b *MemBrick) Fence(epoch uint64) { b.with(func() { b.promised = max(b.promised, epoch) }) }

// Position is where the brick stands.
func (b *MemBrick) Position() Position {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.position()
}

// Ops returns the ops the brick applied, in order (after a Crash, only the
// surviving ones).
func (b *MemBrick) Ops() []*brickpb.Op {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.ops)
}

// Faults lists the protocol violations the brick saw (gaps, duplicates).
func (b *MemBrick) Faults() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.faults)
}

// Opens, Sends and Fetches count stream opens, Send calls and OpsSince calls.
func (b *MemBrick) Opens() int   { b.mu.Lock(); defer b.mu.Unlock(); return b.opens }
func (b *MemBrick) Sends() int   { b.mu.Lock(); defer b.mu.Unlock(); return b.sends }
func (b *MemBrick) Fetches() int { b.mu.Lock(); defer b.mu.Unlock(); return b.fetches }
func (b *MemBrick) Adopted() int { b.mu.Lock(); defer b.mu.Unlock(); return b.adopted }

// WaitApplied waits until the brick applied seq (or ctx ends).
func (b *MemBrick) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		b.mu.Lock()
		applied, ch := b.applied, b.changed
		b.mu.Unlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("brick %s at seq %d, waiting for %d: %w", b.id, applied, seq, ctx.Err())
		}
	}
}

func (b *MemBrick) with(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f()
}

// notify wakes the waiters on b.changed; b.mu held.
func (b *MemBrick) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// receive applies a batch sent on s and acknowledges it.
func (b *MemBrick) receive(s *memStream, ops []*brickpb.Op) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != s {
		return errors.New("stream broken")
	}
	b.sends++
	ack := &brickpb.ReplicateAck{}
	for _, op := range ops {
		if op.Epoch < b.promised {
			ack.Error = fmt.Sprintf("op seq %d at epoch %d: stale epoch, promised epoch %d", op.Seq, op.Epoch, b.promised)
			ack.Errno = uint32(syscall.ESTALE)
			break
		}
		if op.Seq != b.applied+1 {
			b.faults = append(b.faults, fmt.Sprintf("got seq %d after %d", op.Seq, b.applied))
			ack.Error = fmt.Sprintf("gap: got seq %d after %d", op.Seq, b.applied)
			ack.Errno = uint32(syscall.EINVAL)
			break
		}
		var r *brickpb.OpResult
		if b.apply != nil {
			r = b.apply(op)
		}
		if r == nil {
			r = &brickpb.OpResult{}
		}
		r.Seq = op.Seq
		b.ops = append(b.ops, op)
		b.applied = op.Seq
		if op.Type == brickpb.OpType_OP_SYNC {
			b.synced = b.applied
		}
		ack.Results = append(ack.Results, r)
	}
	ack.AppliedSeq, ack.SyncedSeq = b.applied, b.synced
	b.notify()
	if !b.drop {
		s.push(ack, b.hold)
	}
	if ack.Error != "" { // fatal for the stream
		s.end(io.EOF, false)
		b.cur = nil
	}
	return nil
}

// memStream is the head's end of a brick's stream.
type memStream struct {
	b    *MemBrick
	mu   sync.Mutex
	cond *sync.Cond
	acks []*brickpb.ReplicateAck
	held []*brickpb.ReplicateAck
	err  error
}

func (s *memStream) Send(ops []*brickpb.Op) error {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.b.receive(s, ops)
}

func (s *memStream) Recv() (*brickpb.ReplicateAck, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.acks) == 0 && s.err == nil {
		s.cond.Wait()
	}
	if len(s.acks) > 0 {
		a := s.acks[0]
		s.acks = s.acks[1:]
		return a, nil
	}
	return nil, s.err
}

func (s *memStream) Close() error {
	s.end(errors.New("stream closed by the head"), true)
	return nil
}

func (s *memStream) push(a *brickpb.ReplicateAck, hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if hold {
		s.held = append(s.held, a)
		return
	}
	s.acks = append(s.acks, a)
	s.cond.Broadcast()
}

func (s *memStream) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks = append(s.acks, s.held...)
	s.held = nil
	s.cond.Broadcast()
}

// end stops the stream with err; lose drops the acks not yet received.
func (s *memStream) end(err error, lose bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	if lose {
		s.acks, s.held = nil, nil
	}
	s.cond.Broadcast()
}
