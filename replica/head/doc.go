// Package head is the one process that orders a volume's writes: it gives
// every mutating op the next sequence number and the current epoch, streams
// the ops (pipelined, batched) to every in-sync replica (ISR) brick, collects
// their acknowledgements, and answers the file system: a write as soon as it
// is sequenced, a metadata op with the primary brick's result, an fsync when
// every ISR brick has made it durable.
//
// # Shape
//
// The decisions live in Machine (machine.go, isr.go, heal.go): a
// deterministic state machine, Step(Event) → []Action, that never starts a goroutine, reads a
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
//     different errno than the primary), that cannot be resumed (the head
//     no longer retains the ops it lacks) or that says it needs a full
//     resync is proposed for removal.
//   - Heal from the op log, and ISR growth: see "Heal" below.
//   - The volume's state word as this head sees it: healthy, degraded,
//     healing, read-only, fenced (see the State constants and "State
//     word" below).
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
//     which wraps syscall.EROFS), loudly;
//   - grow the ISR except by proposing, at its own epoch, one brick that
//     acknowledged every op after its position, up to the retained window,
//     and fsync'd every op a completed or pending Sync covers; or keep
//     healing (or proposing) once fenced or closed.
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
// primary itself is the brick the head wants out (or with ErrNoResult when
// the primary applied it but the result was lost with a broken stream).
// Writes completed before stay completed (they were page cache anyway).
// The head becomes writable
// again by itself as soon as the cause is gone: the stuck brick catches up,
// or Raft commits a larger ISR (its own heal, or another party's) so the
// bad brick can be dropped.
//
// # Streams and resuming
//
// Every stream has a generation. To (re)open one the head calls
// Transport.Open, which fences the brick at the head's epoch and reports the
// brick's applied and synced seq; the head resends its retained ops from
// applied+1, so the brick sees no gap and no duplicate. A stream that worked
// is reopened at once, a failing open backs off (ReconnectBackoff doubling
// up to MaxReconnectBackoff). The brick leaves the ISR (for heal) when it
// reports an applied seq the head no longer retains ops after (the head
// keeps ops until every ISR brick applied them), an applied seq beyond
// anything the head sequenced, or a synced seq lower than one it already
// acknowledged. Acks and results of an older generation are ignored. A brick
// refusing the epoch (Open → ErrStaleEpoch, or an ack with errno ESTALE)
// fences the head.
//
// # Results
//
// A metadata op completes with the primary's result. A non-primary result
// with another errno than the primary's drops that brick from the ISR (it
// diverged; logged at error level). When the primary leaves the ISR the next
// ISR brick (placement order; the configured preference when it is back)
// answers, from results already received or as they arrive; each waiter is
// completed exactly once. A result lost with a broken stream is taken from
// another ISR brick (deterministic replicas give the same answer); if no
// brick has one when every ISR brick applied the op, the op fails with
// ErrNoResult.
//
// # Heal
//
// Every placement brick outside the ISR is healed in the background, with
// no effect on the ISR bricks' streams (the window, trim and timeouts of
// the ISR ignore it, until it is proposed):
//
//  1. Every Config.HealRetry (at once after the brick left the ISR, or
//     after a stream that worked broke) the head opens a stream to it
//     (Transport.Open: fenced at the head's epoch; its Position). An
//     unreachable brick is retried; a stream that stops acknowledging for
//     ReplicaTimeout is closed and retried later, the pause doubling (up to
//     16 × HealRetry) while streams keep timing out without progress.
//  2. Position check: a brick beyond the head's last seq, whose last op has
//     another epoch than the op the head sequenced at that seq, or whose
//     last op's epoch differs from the one an ISR brick's op log holds at
//     that seq (Position.AppliedEpoch, read first), holds ops the volume
//     never committed: it needs a full resync, for good (sticky). So does a
//     brick that says so (Position.NeedsFullHeal; retried) or that answers
//     an op with another errno than the primary (sticky).
//  3. Catch-up: every op after the brick's applied seq, exactly once, in
//     order: those the head retains straight from its window; the older
//     ones read from an ISR brick's op log (a HealFetch action the driver
//     runs in a goroutine with Transport.OpsSince, at most 4 MiB at a time,
//     answered by a HealFetched event; the primary's log first, the next
//     ISR brick's after a failed read). Ops read from a log are re-stamped
//     with the head's epoch (a stream takes ops at its own epoch only). New
//     ops keep being sequenced meanwhile and follow in order. Everything
//     sent is throttled by Config.HealBytesPerSec (a token bucket on the
//     machine's clock).
//  4. A log that no longer holds the op after the brick's position
//     (ErrLogTruncated) on every ISR brick: the head logs "brick X needs a
//     full resync: the op log of Y starts at N, the brick is at M" at error
//     level, reports HealNeedsFull, and retries every HealRetry in case a
//     log (or its own window) covers the brick again. The checksum resync
//     itself is not the head's.
//  5. Join: once the brick applied everything the head does not retain,
//     lacks at most MaxInflightBytes/4 of retained ops, acknowledged
//     something on this stream (a live brick), and fsync'd past every seq
//     covered by a completed or pending Sync (the head sequences an fsync
//     barrier when no pending one will do — even when read-only: a barrier
//     changes nothing, and a joining brick may be what ends read-only), the
//     head proposes ISR ∪ {brick} at its epoch (one proposal at a time;
//     dropping bricks goes first, unless that is what read-only forbids).
//     While the proposal is out, the brick holds the window (trim) and
//     counts for every Sync: whatever Raft answers, no Sync completes
//     without it, so the ISR that results holds every completed Sync's ops
//     durably. On ISRCommitted the brick is an ISR brick and its heal
//     stream becomes its replication stream (no resend); if the proposal
//     fails it keeps following and is proposed again after ProposalRetry.
//     A brick another party adds (ObserveISR, after an external full heal)
//     is taken as new: its stream reopens and reports where it stands.
//  6. Fenced or stopped: every heal stream closes, every log read is
//     cancelled, nothing more is sent or proposed.
//
// Status.Heals shows each one: state (healing, needs-full-heal,
// unreachable), phase, source, applied, target, ops and bytes remaining,
// rate and ETA.
//
// # State word
//
// In order of precedence: fenced (a newer epoch exists) > read-only (the
// ISR is, or would have to become, smaller than min-isr; heal may be
// running, as the cure) > healing (writable, and a brick outside the ISR
// has a heal stream up and is not known to need a full resync: it implies
// degraded) > degraded (writable, ISR smaller than the placement or a
// brick being dropped, and no heal making progress: unreachable bricks,
// or ones that need a full resync) > healthy. The reason lists the causes
// in stable words (no counters), so it changes only with a cause or a
// heal's phase.
//
// # Thread-safety
//
// Machine is not safe for concurrent use; Head is, and serialises every
// Machine step on its own goroutine.
package head
