package fuse

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// asNobody runs a shell command as uid and gid 65534, with no
// capabilities, on descriptor 3: a descriptor of path this (root) process
// opened for writing (the test's directories are not nobody's to walk).
func asNobody(t *testing.T, path, script string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%q as nobody: %v: %s", script, err, out)
	}
}

const (
	nobodyWrites    = "printf w >&3"
	nobodyTruncates = "truncate -s 1 /proc/self/fd/3"
)

// TestSetIDBitsCleared checks that a write or truncate by a user without
// CAP_FSETID, and any chown, clear the set-user-ID bit and the
// set-group-ID bit of a group-executable file, and that nothing else
// does, whether the kernel (no writeback cache) or the file system
// (HANDLE_KILLPRIV_V2, killpriv.go) clears them.
func TestSetIDBitsCleared(t *testing.T) {
	suites(t, func(t *testing.T, open func() backendFactory) {
		for _, wb := range []bool{true, false} {
			t.Run(fmt.Sprintf("writeback=%v", wb), func(t *testing.T) {
				_, dir := mount(t, open()(t), Options{NoWritebackCache: !wb, AllowOther: true})
				cases := []struct {
					name     string
					mode     uint32
					change   func(p string)
					wantMode uint32
				}{
					{"write by nobody", 0o6777, func(p string) { asNobody(t, p, nobodyWrites) }, 0o0777},
					{"truncate by nobody", 0o6777, func(p string) { asNobody(t, p, nobodyTruncates) }, 0o0777},
					{"write by nobody, setgid without group exec", 0o2767, func(p string) { asNobody(t, p, nobodyWrites) }, 0o2767},
					{"write by root", 0o6777, func(p string) {
						if err := os.WriteFile(p, []byte("r"), 0); err != nil {
							t.Fatal(err)
						}
					}, 0o6777},
					{"truncate by root", 0o6777, func(p string) {
						if err := os.Truncate(p, 0); err != nil {
							t.Fatal(err)
						}
					}, 0o6777},
					{"chown by root", 0o6777, func(p string) {
						if err := os.Chown(p, 65534, 65534); err != nil {
							t.Fatal(err)
						}
					}, 0o0777},
					{"chown to the same owner", 0o4755, func(p string) {
						if err := os.Chown(p, 0, 0); err != nil {
							t.Fatal(err)
						}
					}, 0o0755},
					{"chmod after a write by nobody", 0o0777, func(p string) {
						asNobody(t, p, nobodyWrites)
						if err := syscall.Chmod(p, 0o4777); err != nil {
							t.Fatal(err)
						}
					}, 0o4777},
				}
				for i, c := range cases {
					p := filepath.Join(dir, fmt.Sprint("f", i))
					if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
						t.Fatal(err)
					}
					if err := syscall.Chmod(p, c.mode); err != nil {
						t.Fatal(err)
					}
					c.change(p)
					if got := stat(t, p).Mode & 0o7777; got != c.wantMode {
						t.Errorf("%s: mode %04o, want %04o", c.name, got, c.wantMode)
					}
				}
			})
		}
	})
}
