package head

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// Transport opens replication streams to bricks; the gRPC one wraps the
// Replica service, MemNet is its in-memory twin.
type Transport interface {
	// Open fences brick at epoch (from then on it refuses every older
	// epoch), opens its Replicate stream for this head's volume, and
	// reports the brick's position: the head then sends ops from
	// Position.Applied+1, gapless. ctx bounds the opening only, not the
	// stream's life. An error wrapping ErrStaleEpoch means the brick
	// promised a newer epoch: the head is fenced.
	Open(ctx context.Context, brick string, epoch uint64) (Stream, Position, error)
	// Adopt makes brick, fenced at epoch, take its suspect replica's tree
	// as the volume's contents (logging why) and reports its position,
	// which no longer needs a full heal. Takeover calls it when every
	// in-sync brick it reached is suspect. Errors as for Open.
	Adopt(ctx context.Context, brick string, epoch uint64, why string) (Position, error)
	// OpsSince reads source's op log at epoch: it calls fn with every op
	// after afterSeq up to the source's applied seq, in order, and stops
	// at fn's first error, which it returns (wrapped or not). The ops are
	// the caller's to keep and modify. Errors: a *LogTruncatedError
	// (errors.Is ErrLogTruncated) when the log no longer holds
	// afterSeq+1; one wrapping ErrStaleEpoch when the source promised a
	// newer epoch (the head is fenced); anything else is worth a retry.
	// Heal calls it from its own goroutine, concurrently with the streams.
	OpsSince(ctx context.Context, source string, epoch, afterSeq uint64, fn func(*brickpb.Op) error) error
}

// Position is where a brick's replica stands when its stream opens.
type Position struct {
	Applied uint64 // last applied seq
	Synced  uint64 // everything up to here is durable
	// AppliedEpoch is the epoch of the op at Applied (0: unknown, or no
	// op). Heal compares it with the op the volume committed at that seq:
	// a brick that applied an op its ISR never had must be fully resynced.
	AppliedEpoch uint64
	// MaxFID is the highest file ID the replica holds (0: unknown).
	MaxFID uint64
	// UsedBytes is the sum of the sizes of the replica's regular files (-1:
	// unknown).
	UsedBytes int64
	// NeedsFullHeal, when set, is the brick's own word that its replica
	// cannot be trusted beyond Synced (suspect after a power loss): heal
	// will not catch it up from an op log.
	NeedsFullHeal string
}

// Stream is one open Replicate stream. Send and Recv are each called from
// one goroutine, concurrently with each other; Close may be called at any
// time, from any goroutine, must not block long, and must make pending and
// later Send and Recv calls return an error.
type Stream interface {
	// Send transmits ops, contiguous and ascending, continuing the stream.
	// An error wrapping ErrStaleEpoch fences the head.
	Send(ops []*brickpb.Op) error
	// Recv returns the next acknowledgement. A final ack may come with the
	// error that ends the stream (both are used); an error wrapping
	// ErrStaleEpoch fences the head.
	Recv() (*brickpb.ReplicateAck, error)
	Close() error
}

// Control is the head's way into Raft.
type Control interface {
	// SetISR replaces the volume's ISR, conditioned on epoch being the
	// volume's current epoch, and returns the Raft index of the change. An
	// error wrapping ErrStaleEpoch means the epoch moved on (the head is
	// fenced); any other error means "not committed, maybe retry".
	SetISR(ctx context.Context, epoch uint64, isr []string) (index uint64, err error)
}

// Head is the driver around a Machine: it runs the machine on one goroutine,
// carries out its actions (streams, Raft proposals, answers) and feeds it
// events (acks, stream state, proposal outcomes, ticks). Safe for
// concurrent use.
type Head struct {
	cfg Config
	tr  Transport
	ctl Control
	clk Clock
	log *slog.Logger

	reqs      chan request
	events    chan Event
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	nextWaiter atomic.Uint64
	afterSeq   atomic.Uint64
	fid        atomic.Uint64
	used       atomic.Int64  // UsedBytes; -1 until known
	usedKnown  chan struct{} // closed once used is known
	born       time.Time     // clk.Now() at Start
	ackAt      atomic.Int64  // Machine.LastAck as nanoseconds since born; -1 before any
	refused    atomic.Bool   // Machine.Refused
	primPos    atomic.Pointer[PrimaryPos]

	mu      sync.Mutex
	primary string
	changed chan struct{}
	final   Status

	// owned by the loop goroutine
	m       *Machine
	waiters map[uint64]chan completion
	conns   map[connKey]*conn

	hurrySeq  atomic.Uint64 // ops up to it are sent without lingering (Hurry)
	lingerMu  sync.Mutex
	lingerers map[*conn]struct{}             // senders holding ops back (Config.Linger)
	fetches   map[connKey]context.CancelFunc // by brick and fetch ID
	watches   []*watch
}

type completion struct {
	res *brickpb.OpResult
	err error
}

type request struct {
	ev     Event
	waiter uint64
	done   chan completion
	status chan Status
	watch  *watch
}

type watch struct {
	cond func(Status) bool
	done chan Status
	gone atomic.Bool
}

type connKey struct {
	brick string
	gen   uint64
}

// streamOpened is the driver's own event: a Reconnect succeeded.
type streamOpened struct {
	key connKey
	s   Stream
	pos Position
}

func (streamOpened) isEvent() {}

// Start validates cfg and starts a head; ctx bounds its life (cancelling it
// is Close). log, when not nil, replaces cfg.Logger; clk nil means the
// system clock.
func Start(ctx context.Context, cfg Config, tr Transport, ctl Control, clk Clock, log *slog.Logger) (*Head, error) {
	if tr == nil || ctl == nil {
		return nil, errors.New("head: start: a Transport and a Control are required")
	}
	if clk == nil {
		clk = SystemClock()
	}
	if log != nil {
		cfg.Logger = log
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	m, err := New(cfg)
	if err != nil {
		return nil, err
	}
	h := &Head{
		cfg: cfg, tr: tr, ctl: ctl, clk: clk,
		log:       cfg.Logger.With("volume", cfg.Volume, "epoch", cfg.Epoch),
		reqs:      make(chan request),
		events:    make(chan Event, 64),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
		m:         m,
		primary:   m.Primary(),
		waiters:   map[uint64]chan completion{},
		conns:     map[connKey]*conn{},
		lingerers: map[*conn]struct{}{},
		fetches:   map[connKey]context.CancelFunc{},
	}
	h.ctx, h.cancel = context.WithCancel(ctx)
	h.afterSeq.Store(cfg.StartSeq)
	h.used.Store(-1)
	h.born = clk.Now()
	h.ackAt.Store(-1)
	h.usedKnown = make(chan struct{})
	h.fid.Store(cfg.MaxFID)
	go h.run()
	return h, nil
}

// Do sequences op (filling Seq and Epoch) and replicates it. OP_WRITE
// returns as soon as the op is sequenced (page-cache semantics), with a
// result carrying only Seq; every other op returns the primary's result
// (Errno set when the op failed as a POSIX operation). Do takes ownership of
// op and op.Data: the caller must not modify or reuse them (go-fuse reuses
// its write buffer — copy it). It blocks while the in-flight window is
// full. Errors: FencedError, ReadOnlyError (syscall.EROFS), ErrClosed,
// ErrInvalid, ErrNoResult, or ctx's error (the op may still be applied if it
// was already sequenced; the error says so).
func (h *Head) Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	if op == nil || op.Type == brickpb.OpType_OP_UNSPECIFIED || op.Type == brickpb.OpType_OP_SYNC {
		return nil, fmt.Errorf("do %v: %w: use Sync for OP_SYNC", op.GetType(), ErrInvalid)
	}
	want := op.Type != brickpb.OpType_OP_WRITE
	c := h.call(ctx, func(w uint64) Event { return Submit{Op: op, Waiter: w, WantResult: want} })
	return c.res, c.err
}

// Submit sequences op (filling Seq and Epoch) and returns its sequence
// number without waiting for any brick, as Do does for OP_WRITE: the
// caller answers the op itself, knowing it cannot fail as a POSIX
// operation. Should the primary fail it all the same, the next Sync that
// covers it fails with a *LostOpsError (EIO). Ownership and errors as Do.
func (h *Head) Submit(ctx context.Context, op *brickpb.Op) (uint64, error) {
	if op == nil || op.Type == brickpb.OpType_OP_UNSPECIFIED || op.Type == brickpb.OpType_OP_SYNC {
		return 0, fmt.Errorf("submit %v: %w: use Sync for OP_SYNC", op.GetType(), ErrInvalid)
	}
	c := h.call(ctx, func(w uint64) Event { return Submit{Op: op, Waiter: w} })
	if c.err != nil {
		return 0, c.err
	}
	return c.res.GetSeq(), nil
}

// Sync returns once every op submitted before it is fsync'd on every brick
// of the ISR as committed in Raft (promise 1). Errors: FencedError,
// ReadOnlyError (not durable everywhere and the ISR cannot shrink),
// LostOpsError (an op acknowledged early failed), ErrClosed, ctx's error.
func (h *Head) Sync(ctx context.Context) error {
	return h.call(ctx, func(w uint64) Event { return SyncReq{Waiter: w} }).err
}

func (h *Head) call(ctx context.Context, mk func(w uint64) Event) completion {
	w := h.nextWaiter.Add(1)
	done := make(chan completion, 1)
	select {
	case h.reqs <- request{ev: mk(w), waiter: w, done: done}:
	case <-ctx.Done():
		return completion{err: ctx.Err()}
	case <-h.done:
		return completion{err: ErrClosed}
	}
	select {
	case c := <-done:
		return c
	case <-ctx.Done():
	}
	// Withdraw: the machine completes the waiter (if it has not already).
	select {
	case h.reqs <- request{ev: Cancel{Waiter: w, Err: ctx.Err()}}:
	case c := <-done:
		return c
	case <-h.done:
	}
	select {
	case c := <-done:
		return c
	case <-h.done:
	}
	select { // the loop completes every waiter before it exits
	case c := <-done:
		return c
	default:
		return completion{err: ErrClosed}
	}
}

// AfterSeq is the seq a read must wait for to see every op submitted so far
// (the last sequenced op).
func (h *Head) AfterSeq() uint64 { return h.afterSeq.Load() }

// HeldWithin reports whether, as far as the head can tell, it still held
// its epoch within the last d: it is neither fenced nor stopped, and every
// ISR brick acknowledged applying an op this head sequenced less than d
// ago (a fenced brick refuses the stream, so the ack proves the brick was
// at this epoch after the op was sequenced; see Machine.LastAck for why
// every brick).
// What only the head knows (mounter's name cache) is trusted while this
// holds; a successor fences at least one of these bricks and then waits
// at least d before its first op (mounter's startHead), so a deposed
// head stops trusting itself first. The monotonic clock keeps running
// while the process is stopped (SIGSTOP), so a thawed head does not hold.
func (h *Head) HeldWithin(d time.Duration) bool {
	if h.refused.Load() {
		return false
	}
	at := h.ackAt.Load()
	return at >= 0 && h.clk.Now().Sub(h.born)-time.Duration(at) < d
}

// RenewLease proves to the head, without an op, that every ISR brick is
// still at its epoch, so HeldWithin holds on while the head has nothing to
// write. check(ctx, brick) must send the brick a request that it refuses
// once fenced past this epoch (a read at this epoch) and return the
// error. Every brick whose check succeeded counts as having acknowledged
// this head when RenewLease began, from its return on; the first failure
// is returned.
func (h *Head) RenewLease(ctx context.Context, check func(ctx context.Context, brick string) error) error {
	at := h.clk.Now()
	isr := h.Status().ISR
	type res struct {
		id  string
		err error
	}
	out := make(chan res, len(isr))
	for _, id := range isr {
		go func() { out <- res{id, check(ctx, id)} }()
	}
	var ok []string
	var first error
	for range isr {
		r := <-out
		if r.err != nil {
			first = cmp.Or(first, fmt.Errorf("brick %s: %w", r.id, r.err))
		} else {
			ok = append(ok, r.id)
		}
	}
	if len(ok) > 0 {
		select {
		case h.reqs <- request{ev: LeaseProof{Bricks: ok, At: at}}:
			h.Status() // served after the proof's step
		case <-h.done:
		}
	}
	return first
}

// Hurry sends at once whatever ops are lingering (Config.Linger): a read
// that must see them is about to wait for a brick to apply them.
func (h *Head) Hurry() {
	if h.cfg.Linger <= 0 {
		return
	}
	// Ops sequenced by now but not handed to a sender yet go at once too.
	for seq := h.afterSeq.Load(); ; {
		cur := h.hurrySeq.Load()
		if cur >= seq || h.hurrySeq.CompareAndSwap(cur, seq) {
			break
		}
	}
	h.lingerMu.Lock()
	defer h.lingerMu.Unlock()
	for c := range h.lingerers {
		c.hurry()
	}
}

// lingering records that c's sender holds ops back (on) or stopped.
func (h *Head) lingering(c *conn, on bool) {
	h.lingerMu.Lock()
	defer h.lingerMu.Unlock()
	if on {
		h.lingerers[c] = struct{}{}
	} else {
		delete(h.lingerers, c)
	}
}

// PrimaryPos is where the primary brick stands, as of the head's last step.
type PrimaryPos struct {
	ID      string
	Applied uint64 // the last seq it acknowledged applying
	Gen     uint64 // its stream's generation (Machine.PrimaryApplied)
}

// PrimaryPos is the primary brick's position while it is in the ISR with
// its stream up, else nil. Cheap: no round trip to the head's loop.
func (h *Head) PrimaryPos() *PrimaryPos { return h.primPos.Load() }

func (h *Head) notePrimaryPos() {
	applied, gen, ok := h.m.PrimaryApplied()
	cur := h.primPos.Load()
	switch {
	case !ok:
		if cur != nil {
			h.primPos.Store(nil)
		}
	case cur == nil || cur.Applied != applied || cur.Gen != gen || cur.ID != h.m.Primary():
		h.primPos.Store(&PrimaryPos{ID: h.m.Primary(), Applied: applied, Gen: gen})
	}
}

// NewFID reserves a fresh file ID.
func (h *Head) NewFID() uint64 { return h.fid.Add(1) }

// NewFIDs reserves n consecutive file IDs and returns the first.
func (h *Head) NewFIDs(n uint64) uint64 { return h.fid.Add(n) - n + 1 }

// Epoch is the head's epoch.
func (h *Head) Epoch() uint64 { return h.cfg.Epoch }

// Primary is the brick whose results answer metadata ops (reads should go
// there too).
func (h *Head) Primary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.primary
}

// Changed returns a channel closed at the next change of state word,
// reason, ISR or primary.
func (h *Head) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// Status is a snapshot; after Close, the last one.
func (h *Head) Status() Status {
	ch := make(chan Status, 1)
	select {
	case h.reqs <- request{status: ch}:
		return <-ch
	case <-h.done:
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.final
	}
}

// WaitFor returns the first Status (taken after a machine step) for which
// cond holds: how tests and `brick volume status --wait` wait for a typed
// observation without sleeping. cond runs on the head's goroutine and must
// be quick.
func (h *Head) WaitFor(ctx context.Context, cond func(Status) bool) (Status, error) {
	w := &watch{cond: cond, done: make(chan Status, 1)}
	select {
	case h.reqs <- request{watch: w}:
	case <-ctx.Done():
		return Status{}, ctx.Err()
	case <-h.done:
		return h.Status(), ErrClosed
	}
	select {
	case s := <-w.done:
		return s, nil
	case <-ctx.Done():
		w.gone.Store(true)
		return h.Status(), ctx.Err()
	case <-h.done:
		return h.Status(), ErrClosed
	}
}

// Resynced tells the head that a full resync rebuilt brick's replica (see
// the Resynced event): it heals the brick from the copy's position.
func (h *Head) Resynced(brick string) { h.post(Resynced{Brick: brick}) }

// UsedBytes is an upper bound of the volume's usage (the sum of its
// regular files' sizes) counting every op sequenced so far: the primary
// brick's last reported figure plus what the ops it has not acknowledged
// yet may add: a write's Op.growth when it carries one (an overwrite adds
// nothing), else the op's bytes. ok is false until the primary has
// reported.
func (h *Head) UsedBytes() (used int64, ok bool) {
	u := h.used.Load()
	return u, u >= 0
}

// UsageKnown is closed once UsedBytes has a figure.
func (h *Head) UsageKnown() <-chan struct{} { return h.usedKnown }

// ObserveISR tells the head about an ISR committed in Raft by someone else
// (an external full heal re-adding a brick, which the head then takes as
// new) or a newer epoch (which fences the head). index
// is the Raft index (0 if unknown); older observations are ignored.
func (h *Head) ObserveISR(epoch, index uint64, isr []string) {
	h.post(ISRCommitted{Epoch: epoch, Index: index, ISR: append([]string(nil), isr...)})
}

// Close stops the head: waiters fail with ErrClosed, streams close. It
// waits for every goroutine of the head.
func (h *Head) Close() error {
	h.closeOnce.Do(func() { close(h.quit) })
	<-h.done
	h.wg.Wait()
	return nil
}

func (h *Head) run() {
	defer close(h.done)
	tk := h.clk.NewTicker(h.cfg.TickInterval)
	defer tk.Stop()
	h.step(Tick{Now: h.clk.Now()})
	for {
		select {
		case r := <-h.reqs:
			h.handle(r)
		case ev := <-h.events:
			switch e := ev.(type) {
			case streamOpened:
				ev = h.install(e)
			case HealFetched:
				delete(h.fetches, connKey{e.Brick, e.Fetch})
			}
			h.step(ev)
		case <-tk.C():
			h.step(Tick{Now: h.clk.Now()})
		case <-h.quit:
			h.shutdown()
			return
		case <-h.ctx.Done():
			h.shutdown()
			return
		}
	}
}

func (h *Head) handle(r request) {
	switch {
	case r.status != nil:
		r.status <- h.m.Status()
	case r.watch != nil:
		if s := h.m.Status(); r.watch.cond(s) {
			r.watch.done <- s
		} else {
			h.watches = append(h.watches, r.watch)
		}
	default:
		if r.done != nil {
			h.waiters[r.waiter] = r.done
		}
		h.step(r.ev)
	}
}

func (h *Head) shutdown() {
	h.step(Stop{Err: ErrClosed})
	for k, cancel := range h.fetches {
		cancel()
		delete(h.fetches, k)
	}
	for k, c := range h.conns {
		c.close()
		delete(h.conns, k)
	}
	h.mu.Lock()
	h.final = h.m.Status()
	h.mu.Unlock()
	h.cancel()
}

func (h *Head) step(ev Event) {
	acts := h.m.Step(ev)
	// Published before any Complete: Do's caller may read them at once.
	h.afterSeq.Store(h.m.LastSeq())
	if u, ok := h.m.UsedEstimate(); ok {
		if h.used.Swap(u) < 0 {
			close(h.usedKnown)
		}
	}
	if t := h.m.LastAck(); !t.IsZero() {
		h.ackAt.Store(int64(t.Sub(h.born)))
	}
	h.refused.Store(h.m.Refused())
	h.notePrimaryPos()
	if p := h.m.Primary(); p != h.primary { // h.primary is written only here
		h.mu.Lock()
		h.primary = p
		h.mu.Unlock()
	}
	for _, a := range acts {
		h.do(a)
	}
	if len(h.watches) == 0 {
		return
	}
	s := h.m.Status()
	keep := h.watches[:0]
	for _, w := range h.watches {
		switch {
		case w.gone.Load():
		case w.cond(s):
			w.done <- s
		default:
			keep = append(keep, w)
		}
	}
	clear(h.watches[len(keep):])
	h.watches = keep
}

func (h *Head) do(a Action) {
	switch a := a.(type) {
	case Send:
		if c := h.conns[connKey{a.Brick, a.Gen}]; c != nil {
			c.enqueue(a.Ops, !a.MayLinger)
		}
	case Complete:
		if ch, ok := h.waiters[a.Waiter]; ok {
			delete(h.waiters, a.Waiter)
			ch <- completion{res: a.Result, err: a.Err}
		}
	case ProposeISR:
		h.propose(a)
	case Reconnect:
		h.reconnect(a)
	case CloseStream:
		k := connKey{a.Brick, a.Gen}
		if c := h.conns[k]; c != nil {
			delete(h.conns, k)
			c.close()
		}
	case HealFetch:
		h.startFetch(a)
	case CancelFetch:
		k := connKey{a.Brick, a.Fetch}
		if cancel := h.fetches[k]; cancel != nil {
			delete(h.fetches, k)
			cancel()
		}
	case StateChanged:
		h.notify()
	case ISRChanged:
		h.notify()
	}
}

// errFetched stops an op log read that got what it asked for.
var errFetched = errors.New("read enough")

// startFetch reads an op log for heal in the background and posts what it
// read as one HealFetched.
func (h *Head) startFetch(a HealFetch) {
	ctx, cancel := context.WithTimeout(h.ctx, max(10*h.cfg.ReplicaTimeout, minFetchTimeout))
	h.fetches[connKey{a.Brick, a.Fetch}] = cancel
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer cancel()
		var ops []*brickpb.Op
		var size int64
		err := h.tr.OpsSince(ctx, a.Source, h.cfg.Epoch, a.AfterSeq, func(op *brickpb.Op) error {
			ops = append(ops, op)
			size += opSize(op)
			if op.GetSeq() >= a.UpTo || size >= a.MaxBytes {
				return errFetched
			}
			return nil
		})
		if errors.Is(err, errFetched) {
			err = nil
		}
		h.post(HealFetched{Brick: a.Brick, Fetch: a.Fetch, Ops: ops, Err: err})
	}()
}

func (h *Head) notify() {
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// post hands an event to the loop; false once the head is gone.
func (h *Head) post(ev Event) bool {
	select {
	case h.events <- ev:
		return true
	case <-h.done:
		return false
	}
}

func (h *Head) propose(a ProposeISR) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ctx, cancel := context.WithTimeout(h.ctx, max(2*h.cfg.ReplicaTimeout, minProposalTimeout))
		defer cancel()
		idx, err := h.ctl.SetISR(ctx, a.Epoch, a.ISR)
		if err != nil {
			h.post(ISRProposalFailed{Err: fmt.Errorf("set ISR %v at epoch %d: %w", a.ISR, a.Epoch, err), Stale: errors.Is(err, ErrStaleEpoch)})
			return
		}
		h.post(ISRCommitted{Epoch: a.Epoch, ISR: a.ISR, Index: idx, Proposed: true})
	}()
}

func (h *Head) reconnect(a Reconnect) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ctx, cancel := context.WithTimeout(h.ctx, h.cfg.ReplicaTimeout)
		s, pos, err := h.tr.Open(ctx, a.Brick, h.cfg.Epoch)
		cancel()
		switch {
		case errors.Is(err, ErrStaleEpoch):
			h.post(Fenced{Brick: a.Brick, Msg: err.Error()})
		case err != nil:
			h.post(StreamDown{Brick: a.Brick, Gen: a.Gen, Err: fmt.Errorf("open stream to brick %s: %w", a.Brick, err)})
		case !h.post(streamOpened{key: connKey{a.Brick, a.Gen}, s: s, pos: pos}):
			s.Close()
		}
	}()
}

// install starts the goroutines of a freshly opened stream and turns the
// event into the machine's StreamUp (which may refuse it with CloseStream).
func (h *Head) install(so streamOpened) Event {
	c := &conn{h: h, key: so.key, s: so.s, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	h.conns[so.key] = c
	h.wg.Add(2)
	go c.sendLoop()
	go c.recvLoop()
	return StreamUp{Brick: so.key.brick, Gen: so.key.gen, Applied: so.pos.Applied, Synced: so.pos.Synced,
		AppliedEpoch: so.pos.AppliedEpoch, NeedsFullHeal: so.pos.NeedsFullHeal, UsedBytes: so.pos.UsedBytes}
}

const (
	minProposalTimeout = 5 * time.Second  // Raft elections take seconds
	minFetchTimeout    = 30 * time.Second // one HealFetch reads a few MiB
)

// conn is one open stream: a sender goroutine batching what the loop
// queued, and a receiver goroutine posting acks.
type conn struct {
	h      *Head
	key    connKey
	s      Stream
	mu     sync.Mutex
	queue  []*brickpb.Op
	queued int64 // opSize of queue
	urgent bool  // something in queue must go now
	wake   chan struct{}
	stop   chan struct{}
	once   sync.Once
}

// enqueue queues ops for the sender; urgent ones (somebody waits for
// them) end any linger.
func (c *conn) enqueue(ops []*brickpb.Op, urgent bool) {
	c.mu.Lock()
	c.queue = append(c.queue, ops...)
	for _, op := range ops {
		c.queued += opSize(op)
	}
	c.urgent = c.urgent || urgent
	c.mu.Unlock()
	c.poke()
}

func (c *conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// hurry ends a linger: a reader waits for what is queued.
func (c *conn) hurry() {
	c.mu.Lock()
	some := len(c.queue) > 0
	c.urgent = c.urgent || some
	c.mu.Unlock()
	if some {
		c.poke()
	}
}

// take empties the queue if it should go now: it is urgent or a full
// batch, or it has lingered long enough (late). empty reports that there
// was nothing to take.
func (c *conn) take(limit int64, late bool) (ops []*brickpb.Op, empty bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return nil, true
	}
	if !(late || c.urgent || c.queued >= limit || c.queue[0].Seq <= c.h.hurrySeq.Load()) {
		return nil, false
	}
	ops = c.queue
	c.queue, c.queued, c.urgent = nil, 0, false
	return ops, false
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.stop)
		c.s.Close()
	})
}

func (c *conn) closed() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

func (c *conn) sendLoop() {
	defer c.h.wg.Done()
	limit := int64(c.h.cfg.MaxBatchBytes)
	linger := c.h.cfg.Linger
	var timer *time.Timer
	if linger > 0 {
		timer = time.NewTimer(linger)
		timer.Stop()
		defer timer.Stop()
	}
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		if linger <= 0 {
			ops, _ := c.take(limit, true)
			if err := c.send(ops, limit); err != nil {
				c.fail(err)
				return
			}
			continue
		}
		c.h.lingering(c, true) // before take: a Hurry from now on is seen
		ops, empty := c.take(limit, false)
		if ops == nil && !empty {
			// Only this goroutine empties the queue: it stays non-empty
			// until take hands it over, at the latest once late.
			timer.Reset(linger)
			late := false
			for ops == nil {
				select {
				case <-c.stop:
					c.h.lingering(c, false)
					return
				case <-c.wake:
				case <-timer.C:
					late = true
				}
				ops, _ = c.take(limit, late)
			}
			timer.Stop()
		}
		c.h.lingering(c, false)
		if err := c.send(ops, limit); err != nil {
			c.fail(err)
			return
		}
	}
}

// send sends ops in messages of at most limit bytes (an op bigger than
// that goes alone).
func (c *conn) send(ops []*brickpb.Op, limit int64) error {
	for len(ops) > 0 {
		n, size := 0, int64(0)
		for n < len(ops) && (n == 0 || size+opSize(ops[n]) <= limit) {
			size += opSize(ops[n])
			n++
		}
		if err := c.s.Send(ops[:n]); err != nil {
			return fmt.Errorf("send to brick %s: %w", c.key.brick, err)
		}
		ops = ops[n:]
	}
	return nil
}

func (c *conn) recvLoop() {
	defer c.h.wg.Done()
	for {
		a, err := c.s.Recv()
		if a != nil && !c.h.post(Ack{Brick: c.key.brick, Gen: c.key.gen, Ack: a}) {
			return
		}
		if err != nil {
			c.fail(fmt.Errorf("receive from brick %s: %w", c.key.brick, err))
			return
		}
	}
}

// fail reports the stream's failure, unless the head closed it: a refusal
// of the epoch fences the head, anything else breaks the stream.
func (c *conn) fail(err error) {
	switch {
	case c.closed():
	case errors.Is(err, ErrStaleEpoch):
		c.h.post(Fenced{Brick: c.key.brick, Msg: err.Error()})
	default:
		c.h.post(StreamDown{Brick: c.key.brick, Gen: c.key.gen, Err: err})
	}
}
