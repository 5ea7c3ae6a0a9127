// Package mounter is the mount process (design.md, "Mount process"): one
// process per mounted volume, started detached by brickd, that fences the
// volume's in-sync bricks at its epoch, brings them level, runs the volume's
// head (package replica/head) and serves the FUSE file system (package
// fuse) from it. It talks to bricks and to the control plane directly over
// the cluster's authenticated gRPC, so brickd can restart under it.
//
// The mount process must never do I/O on its own mount (go-fuse deadlock),
// never write after its epoch is superseded (the head is fenced and the
// file system returns EIO), and never change the catalog except through a
// daemon's Control service.
package mounter
