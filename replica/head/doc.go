// Package head is the one process that orders a volume's writes: it gives
// every mutating op the next sequence number and the current epoch, streams
// the ops (pipelined, batched) to every in-sync replica (ISR) brick, collects
// their acknowledgements, and answers the file system: a write as soon as it
// is sequenced, a metadata op with the primary brick's result, an fsync when
// every ISR brick has made it durable.
//
// # Shape
//
// The decisions live in Machine (machine.go, isr.go): a deterministic state
// machine, Step(Event) → []Action, that never starts a goroutine, reads a
// clock or does I/O; time reaches it only as Tick events. Head (head.go) is
// the thin loop around it: it owns the replication streams (Transport), the
// Raft proposals (Control), the clock (Clock) and the callers' waiters.
// MemNet (memtransport.go) is the in-memory Transport that tests of this and
// other packages run against; ManualClock (clock.go) is the clock they step.
//
// # What the head owns
//
//   - Sequence numbers: contiguous from Config.StartSeq+1, each op tagged with
//     Config.Epoch. A brick receives every op exactly once per stream, in
//     order, without gaps; a re-opened stream resumes at the brick's own
//     applied seq + 1 (see Transport).
//   - The retained window: ops sent but not yet applied by every ISR brick,
//     bounded by Config.MaxInflightBytes (submissions queue behind it).
//   - ISR shrink decisions: a brick that does not acknowledge an op (or an
//     fsync barrier) within Config.ReplicaTimeout, that diverged (reported a
//     different errno than the primary) or that cannot be resumed (the head
//     no longer retains the ops it lacks) is proposed for removal.
//   - The volume's state word as this head sees it: healthy, degraded,
//     read-only, fenced (see the State constants).
//
// # What the head must never do
//
//   - complete an fsync (Sync) before every brick of the ISR, as committed in
//     Raft, acknowledged synced_seq at or past the barrier — and never while
//     the ISR is smaller than min-isr;
//   - shrink the ISR except through Control (a SetISR conditioned on its
//     epoch), and never complete a waiting op without a brick before Raft
//     confirmed that brick's removal; when Raft cannot be reached it waits
//     and retries, it does not guess;
//   - write after being fenced: once a brick or Raft says the epoch is stale,
//     every op and fsync fails with a FencedError, nothing more is sent and
//     nothing more completes successfully;
//   - shrink the ISR below min-isr: it turns read-only instead (ReadOnlyError,
//     which wraps syscall.EROFS), loudly.
//
// # Read-only, precisely
//
// The head turns read-only when keeping its promises would need an ISR
// smaller than min-isr (or the committed ISR already is). Then: no new op is
// sequenced (Do fails with EROFS, queued submissions fail with EROFS); ops
// already sequenced stay in the stream and are still delivered and resent,
// so the replicas keep one deterministic sequence; a Sync succeeds only if
// everything sequenced is already durable on every ISR brick, otherwise it
// (and every pending Sync) fails with EROFS — the data may or may not be
// durable, as after a failed fsync; a metadata op waiting for its result
// keeps waiting while the primary is healthy and fails with EROFS when the
// primary itself is the brick the head wants out. The head becomes writable
// again by itself as soon as the cause is gone: the stuck brick catches up,
// or Raft commits a larger ISR (heal) so the bad brick can be dropped.
//
// # Thread-safety
//
// Machine is not safe for concurrent use; Head is, and serialises every
// Machine step on its own goroutine.
package head
