// Package control owns the cluster's authoritative state, replicated by Raft
// (hashicorp/raft): the cluster ID, the bricks, and every volume's name,
// size, layout, access, min-isr, labels, placement, attachments, epoch, head
// and in-sync replica set (ISR), plus tombstones of deleted volume IDs.
//
// Every change is a Command (command.go) in the Raft log; the FSM (fsm.go)
// applies it to the State (state.go). A command is validated completely
// before anything is written, so a refused command changes nothing but
// State.Index, and its ApplyResult.Err wraps one sentinel of errors.go
// (ErrNotFound, ErrExists, ErrAttached, ErrStaleEpoch, ...) that callers
// branch on with errors.Is. Commands and snapshots are strict, versioned
// JSON (codec.go). Place (placement.go) is the leader's pure helper that
// picks bricks for a new volume; its choice becomes part of a create-volume
// command, so followers never re-decide it.
//
// The rules the rest of brick relies on:
//
//   - Epochs. Attaching a single-access volume on a new host, or the first
//     attach (or head hand-over) of a shared one, bumps the epoch; attaching
//     where already attached does not. set-isr and attach can be conditioned
//     on an epoch and are refused with ErrStaleEpoch when it moved on, so a
//     superseded head cannot shrink its successor's ISR or steal the volume
//     back. Replicas fence on these epochs (package replica).
//   - ISR. A new volume's ISR is its whole placement; set-isr keeps it in
//     placement order and within the placement. An empty ISR means the
//     volume is unavailable.
//   - Names and IDs. Live volume names and brick names are unique; volume
//     IDs are never reused (tombstones). A daemon that lost its data
//     directory comes back with a new brick ID and must be removed first.
//
// What control must never do:
//
//   - touch volume data, mounts or the network from the FSM: Apply, Snapshot
//     and Restore are pure functions of the log (the Raft wiring and the
//     daemon do I/O around them);
//   - read a clock or a random source in the FSM: every timestamp is the
//     command's At, stamped by the proposer, so every replica's State is
//     byte-for-byte the same;
//   - decide anything about a volume outside Raft: no local cache is ever
//     the authority; readers get deep copies (FSM.State, VolumeByName) and
//     wait for their own writes with FSM.WaitIndex or FSM.Changed;
//   - second-guess the shape of a command once it is in the log with rules
//     that could differ between daemon versions: validation rules may only
//     be relaxed, never tightened, without a new CommandVersion.
package control
