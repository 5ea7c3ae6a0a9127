// Package csi will serve the CSI Identity, Controller and Node services
// (container-storage-interface/spec) for Kubernetes: ControllerPublish is the
// attach with fencing, NodeStage the FUSE mount, NodePublish a bind mount.
//
// Not built yet (the CSI issue). It must never hold volume state of its own:
// everything it answers comes from the catalog in Raft.
package csi
