// Package csi serves the Container Storage Interface (container-storage-
// interface/spec) for Kubernetes: the Identity, Controller and Node
// services of the driver brick.csi.brickvol.io, on a unix socket that
// brickd opens when --csi-endpoint is set.
//
// # What it owns
//
// The translation between CSI and brick: request validation, the mapping
// of access modes to brick's access (single-node modes → single,
// multi-node modes → shared), StorageClass parameters to volume options
// (volspec), CSI names to brick volume names, brick errors to gRPC codes
// (once, here), pagination tokens, and the node-side bind mounts.
//
//   - Volume ID: the CSI volume ID is brick's volume ID ("v-" and 16 hex
//     digits), not the name. IDs are never reused, so a stale ID that
//     Kubernetes still holds for a deleted volume can never reach a newer
//     volume that took the same name.
//   - Volume name: a CSI name that is a valid brick name (1..64 letters,
//     digits, '-', '_', '.') is used as is, which covers Kubernetes'
//     "pvc-<uuid>"; any other name maps deterministically to a prefix of
//     its valid characters plus 16 hex digits of its SHA-256, so CreateVolume
//     stays idempotent by name.
//   - Node ID: the brickd's name (--name). ControllerPublishVolume is
//     brick's attach of the volume to that host (with fencing: a new epoch
//     for access=single), NodeStageVolume starts the FUSE mount process at
//     the staging path, NodePublishVolume bind-mounts the staging path at
//     the target path (remounted read-only when asked).
//   - Topology: one segment, brick.csi.brickvol.io/cluster = the cluster ID.
//     Every node of a cluster reaches every volume of it over the network.
//
// # What it must never do
//
// Hold volume state of its own: everything it answers comes from the
// catalog in Raft through the Cluster interface, which the daemon
// implements (daemon/csi.go) and tests fake. A restart of the driver
// (brickd) must not disturb a mount: mount processes outlive brickd and
// bind mounts are the kernel's. It never builds OS calls inline in
// handlers: mounts go through the Mounter interface. It binds no flags:
// cmd/brickd does.
//
// Handlers are idempotent, as CSI requires: a second identical request
// succeeds without doing anything twice. Concurrent requests for the same
// volume are refused with Aborted (the sidecars retry) rather than queued.
package csi
