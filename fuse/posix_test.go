package fuse

import (
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkips are the posixtest cases not run, each with its reason; they
// are documented in docs/posix.md.
var posixSkips = map[string]string{
	// The test expects a second F_SETLK from the same process, on another
	// descriptor, to conflict with the first; POSIX record locks belong to
	// the process, so they never conflict with themselves. go-fuse's own
	// TestAll skips it for that reason.
	"FcntlFlockLocksFile": "same-process POSIX locks do not conflict (test bug, skipped by go-fuse itself)",
}

// runPosix runs go-fuse's posixtest suite, each case on a fresh mount of the
// backend newBackend returns.
func runPosix(t *testing.T, newBackend func(t *testing.T) Backend) {
	requireFUSE(t)
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkips[name]; ok {
				t.Skip(why)
			}
			_, dir := mount(t, newBackend(t), Options{})
			posixtest.All[name](t, dir)
		})
	}
}

func TestPosixMem(t *testing.T) {
	runPosix(t, func(t *testing.T) Backend { return newMemBackend() })
}
