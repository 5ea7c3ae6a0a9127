package csi

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The real mount table: a read-only bind is read-only, shares its source's
// device, and goes away on Unmount.
func TestLinuxMounterBind(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPING: bind mounts need root")
	}
	m := NewMounter()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	for _, p := range []string{src, dst} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The source must be a mount point of its own for Lookup to compare
	// devices, as a FUSE staging mount is.
	if err := m.Bind(src, src, MountOptions{}); err != nil {
		t.Fatal(err)
	}
	defer m.Unmount(src)
	if err := m.Bind(src, dst, MountOptions{ReadOnly: true, NoExec: true}); err != nil {
		t.Fatal(err)
	}
	sm, ok1, err1 := m.Lookup(src)
	dm, ok2, err2 := m.Lookup(dst)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || sm.Device != dm.Device || !dm.ReadOnly || sm.ReadOnly {
		t.Fatalf("src %+v %v %v, dst %+v %v %v", sm, ok1, err1, dm, ok2, err2)
	}
	if err := os.WriteFile(filepath.Join(dst, "f"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write through the read-only bind: %v, want EROFS", err)
	}
	if _, err := m.Statfs(dst); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(dst); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := m.Lookup(dst); ok {
		t.Fatal("still mounted after Unmount")
	}
	if err := m.Unmount(dst); err != nil {
		t.Fatalf("unmounting what is no mount: %v", err)
	}
}
