package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount processes outlive brickd by design (design.md, "Mount process"),
// but a supervisor that stops brickd by killing its whole cgroup — a
// container runtime on a container restart, systemd with
// KillMode=control-group — kills them too, and every mount brickd served
// dies with it. With --mount-cgroup NAME each mount process is moved, right
// after it starts, into the cgroup NAME under the root of every cgroup
// hierarchy this process can see (cgroup v2, and each v1 hierarchy), out of
// brickd's own. A container needs the host's cgroup hierarchy for this
// (cgroup v1, or --cgroupns=host) and the host's PID namespace (otherwise
// the kernel kills every process of the namespace when brickd, its first
// process, exits): see docs/kubernetes.md.

// cgroupMount is one mounted cgroup hierarchy.
type cgroupMount struct {
	dir    string
	v2     bool
	cpuset bool
}

// cgroupMounts lists the cgroup hierarchies in mountinfo (one line per
// mount; the filesystem type follows the " - " separator).
func cgroupMounts(mountinfo string) ([]cgroupMount, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(rest) < 1 || (rest[0] != "cgroup" && rest[0] != "cgroup2") {
			continue
		}
		// Only a hierarchy's root (the "root" field is "/"): a bind of a
		// sub-cgroup would put the process below where it already is.
		if fields[3] != "/" {
			continue
		}
		dir := unescapeMountinfo(fields[4])
		if seen[dir] {
			continue
		}
		seen[dir] = true
		opts := ""
		if len(rest) >= 3 {
			opts = rest[2]
		}
		out = append(out, cgroupMount{dir: dir, v2: rest[0] == "cgroup2", cpuset: strings.Contains(","+opts+",", ",cpuset,")})
	}
	return out, sc.Err()
}

// moveToCgroup moves pid into the cgroup name of every hierarchy listed in
// mountinfo, creating it where needed. Every hierarchy must take it: a
// process left behind in one is still killed with brickd's cgroup.
func moveToCgroup(mountinfo string, pid int, name string) error {
	if name == "" || strings.Contains(name, "..") || filepath.IsAbs(name) {
		return fmt.Errorf("mount cgroup %q: want a relative name such as brick-mounts", name)
	}
	ms, err := cgroupMounts(mountinfo)
	if err != nil {
		return fmt.Errorf("listing cgroup hierarchies: %w", err)
	}
	if len(ms) == 0 {
		return errors.New("no cgroup hierarchy is mounted here (is /sys/fs/cgroup visible to brickd?)")
	}
	var errs []error
	for _, m := range ms {
		dir := filepath.Join(m.dir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("creating %s: %w", dir, err))
			continue
		}
		if m.cpuset {
			// A new v1 cpuset cgroup takes no process until it has CPUs
			// and memory nodes: inherit the root's.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil && strings.TrimSpace(string(b)) == "" {
					root, _ := os.ReadFile(filepath.Join(m.dir, f))
					os.WriteFile(filepath.Join(dir, f), root, 0o644)
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("moving process %d into %s: %w", pid, dir, err))
		}
	}
	return errors.Join(errs...)
}

// ownPIDNamespace reports whether this process looks like it runs in a
// container's own PID namespace: it is process 1, or process 1 is a
// container init (docker run --init, tini, ...). Then the kernel kills
// every mount process when the namespace's first process exits.
func ownPIDNamespace(proc string) bool {
	if os.Getpid() == 1 {
		return true
	}
	b, err := os.ReadFile(filepath.Join(proc, "1", "comm"))
	if err != nil {
		return false
	}
	switch strings.TrimSpace(string(b)) {
	case "docker-init", "tini", "dumb-init", "catatonit":
		return true
	}
	return false
}
