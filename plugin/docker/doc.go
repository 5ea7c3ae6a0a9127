// Package docker will serve the Docker volume plugin protocol
// (docker/go-plugins-helpers volume) on /run/docker/plugins/brick.sock:
// Create, Remove, Mount, Unmount, Path, Get, List, Capabilities (scope
// global), translating each call into the daemon's Control service.
//
// Not built yet (the Docker plugin issue). It must never hold volume state of
// its own: everything a call answers comes from the catalog in Raft.
package docker
