package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A fake mountinfo over temporary directories stands for the cgroup
// hierarchies: the move creates the cgroup in each hierarchy's root, seeds
// a v1 cpuset from the root, and writes the pid; bad names and missing
// hierarchies are refused.
func TestMoveToCgroup(t *testing.T) {
	root := t.TempDir()
	v2, cpuset, mem, sub := filepath.Join(root, "unified"), filepath.Join(root, "cpu set"), filepath.Join(root, "memory"), filepath.Join(root, "sub")
	for _, d := range []string{v2, cpuset, mem, sub} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(filepath.Join(cpuset, "cpuset.cpus"), []byte("0-1\n"), 0o644)
	os.WriteFile(filepath.Join(cpuset, "cpuset.mems"), []byte("0\n"), 0o644)
	// The new cpuset cgroup starts with empty cpus/mems, as the kernel's does.
	os.MkdirAll(filepath.Join(cpuset, "brick-mounts"), 0o755)
	os.WriteFile(filepath.Join(cpuset, "brick-mounts", "cpuset.cpus"), nil, 0o644)
	os.WriteFile(filepath.Join(cpuset, "brick-mounts", "cpuset.mems"), nil, 0o644)
	esc := strings.ReplaceAll(cpuset, " ", `\040`)
	info := strings.Join([]string{
		"30 25 0:26 / " + v2 + " rw,nosuid - cgroup2 cgroup2 rw,nsdelegate",
		"31 25 0:27 / " + esc + " rw - cgroup cgroup rw,cpuset",
		"32 25 0:28 / " + mem + " rw - cgroup cgroup rw,memory",
		"33 25 0:28 /docker/abc " + sub + " rw - cgroup cgroup rw,memory", // a bind of a sub-cgroup: skipped
		"34 25 0:29 / /tmp rw - tmpfs tmpfs rw",
	}, "\n") + "\n"
	mi := filepath.Join(root, "mountinfo")
	os.WriteFile(mi, []byte(info), 0o644)

	ms, err := cgroupMounts(mi)
	if err != nil || len(ms) != 3 || !ms[0].v2 || !ms[1].cpuset || ms[1].dir != cpuset {
		t.Fatalf("cgroupMounts: %+v, %v", ms, err)
	}
	if err := moveToCgroup(mi, 4242, "brick-mounts"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{v2, cpuset, mem} {
		b, err := os.ReadFile(filepath.Join(d, "brick-mounts", "cgroup.procs"))
		if err != nil || string(b) != strconv.Itoa(4242) {
			t.Errorf("%s: cgroup.procs %q, %v", d, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(sub, "brick-mounts")); err == nil {
		t.Error("moved into a bound sub-cgroup")
	}
	if b, _ := os.ReadFile(filepath.Join(cpuset, "brick-mounts", "cpuset.cpus")); string(b) != "0-1\n" {
		t.Errorf("cpuset.cpus of the new cgroup: %q", b)
	}
	for _, bad := range []string{"", "/abs", "../up", "a/../../b"} {
		if err := moveToCgroup(mi, 1, bad); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	os.WriteFile(mi, []byte("34 25 0:29 / /tmp rw - tmpfs tmpfs rw\n"), 0o644)
	if err := moveToCgroup(mi, 1, "brick-mounts"); err == nil || !strings.Contains(err.Error(), "no cgroup hierarchy") {
		t.Errorf("no hierarchies: %v", err)
	}
}

func TestMountCgroupFlagValidated(t *testing.T) {
	c := DefaultConfig()
	c.Name, c.Bind, c.DataDir = "n1", "127.0.0.1", t.TempDir()
	for _, bad := range []string{"/sys/fs/cgroup/x", "../x", "a b"} {
		c.MountCgroup = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--mount-cgroup") {
			t.Errorf("--mount-cgroup %q: %v", bad, err)
		}
	}
	c.MountCgroup = "brick-mounts"
	if err := c.Validate(); err != nil {
		t.Errorf("--mount-cgroup brick-mounts: %v", err)
	}
}

func TestMountProcsValidated(t *testing.T) {
	c := DefaultConfig()
	c.Name, c.Bind, c.DataDir = "n1", "127.0.0.1", t.TempDir()
	if c.MountProcs != 1 {
		t.Errorf("default --mount-procs %d, want 1", c.MountProcs)
	}
	for _, bad := range []int{-1, 1025} {
		c.MountProcs = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--mount-procs") {
			t.Errorf("--mount-procs %d: %v", bad, err)
		}
	}
	c.MountProcs = 0
	if err := c.Validate(); err != nil {
		t.Errorf("--mount-procs 0: %v", err)
	}
}
