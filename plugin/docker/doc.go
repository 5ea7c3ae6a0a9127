// Package docker serves the Docker volume plugin protocol
// (github.com/docker/go-plugins-helpers/volume): Create, Remove, Mount,
// Unmount, Path, Get, List and Capabilities (scope global), so that
// `docker volume create --driver brick` and `docker run -v vol:/dir` use
// brick volumes.
//
// It owns two things and nothing else:
//
//   - The translation between Docker's requests and brick's vocabulary:
//     options are parsed by volspec.ParseOptions (the same messages as the
//     CLI's), names are checked by volspec.ValidateName before any call, and
//     every failure reaches the docker CLI as one sentence in the response's
//     Err string (the one place errors are mapped for Docker).
//   - Which Docker mounts use which volume on this host: a set of Docker
//     mount IDs per volume, persisted crash-safely in a state file so that a
//     brickd restart under a running container loses no count. The first
//     Mount of a volume mounts it at MountRoot/NAME (attaching it to this
//     host); later ones share that mount; the last Unmount unmounts and
//     detaches it.
//
// Everything else — what volumes exist, their layout, head, epoch and
// in-sync set, attaching and fencing, the mount processes — belongs to the
// daemon, reached through the small Volumes interface that the daemon
// implements (daemon/dockerplugin.go) and the tests fake. The plugin must
// never decide anything about a volume itself: it keeps no catalog, no
// cache of volume state and no attachment of its own, and it never talks to
// Raft, bricks or FUSE directly.
//
// Concurrency: requests for different volumes run in parallel; requests
// for one volume are serialised (a lock per volume name), so a Mount and an
// Unmount of one volume never interleave.
package docker
