// Package membership is brick's gossip layer, built on hashicorp/memberlist.
//
// # What it owns
//
//   - Discovery: a daemon names any existing member in Config.Peers
//     (BRICK_PEERS) and gossip tells it about everyone else. Joining retries
//     forever, because a container may start before its peers; if a member
//     later loses contact with every other member it goes back to retrying
//     its configured peers, which lets a restarted cluster re-form.
//   - Failure detection: memberlist's SWIM probes decide when a member is
//     suspect and when it is dead. A member that calls Leave is reported as
//     left, not dead.
//   - Per-member state: a local table of every member seen, with its gossip
//     address, its Meta (brick ID, gRPC and Raft addresses, capacity), its
//     State and the local time it entered that state. Dead and left members
//     stay in the table for Config.DeadRetention so that callers can say
//     "dead since 14:01:58".
//   - Restarts: a daemon restarted under its name, at the same or a new
//     address, is accepted again (a new address once the old one has been
//     dead for memberlist's DeadNodeReclaimTime: 30 s LAN, 1 s local; see
//     reclaim.go for how we make sure that happens promptly).
//   - Events: Subscribe delivers an Event for every join, state change,
//     metadata update and leave.
//
// # What it must never do
//
//   - Decide anything about volumes, placement, the ISR or Raft voters. A
//     member being dead here is an observation, not a verdict: package
//     control turns observations into decisions through Raft.
//   - Log, print or store the cluster key. Config's String and LogValue
//     redact it; memberlist never logs it.
//   - Block gossip. memberlist calls our delegates with its own locks held, so
//     the delegates only touch the local table and hand events to
//     subscribers without waiting (a full subscriber loses the event; see
//     Subscribe).
//
// # How states are observed
//
// memberlist's public API does not expose a member's state (Node.State is
// never filled in by memberlist v0.5.x), so the table is fed by:
//
//   - EventDelegate: NotifyJoin and NotifyUpdate mean alive; NotifyLeave means
//     dead, or left when the member's last gossiped metadata carries the
//     leaving flag that Leave sets before it calls memberlist's Leave.
//   - memberlist's own probe: the log line "Suspect X has failed, no acks
//     received" (routed through the log bridge) marks X suspect; a later
//     successful probe of X (PingDelegate) marks it alive again.
//
// Suspect is therefore this member's own suspicion: a member that learns of
// a failure only through gossip may go straight from alive to dead.
//
// # Cluster key
//
// Every gossip packet is encrypted and verified with Config.SecretKey. A
// daemon with another key cannot join: its join attempts fail with
// ErrKeyMismatch and log "check BRICK_CLUSTER_KEY", while the members it
// tries to reach log "gossip refused: sender does not have this cluster's
// key" (once per sender address per 10 s).
package membership
