package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/brickvol/brick/chaos/harness"
)

const netCSIContainer = 64

// nodeImage builds a FROM-scratch image holding only a static brickd, as a
// node plugin's image would (no registry needed).
func nodeImage(t *testing.T, tag string) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"dev", "proc", "sys", "tmp", "etc", "run"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(root, "brickd"), "./cmd/brickd")
	build.Dir = filepath.Join(filepath.Dir(file), "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building a static brickd: %v: %s", err, out)
	}
	cmd := exec.Command("sh", "-c", `tar -C "$0" -c . | docker import - "$1"`, root, tag)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the node image %s: %v: %s", tag, err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
}

func dockerCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// sharedBind makes dir a mount point with shared propagation, so a
// container can bind it with rshared and mounts made inside show on the
// host (what Kubernetes' Bidirectional mount propagation needs).
func sharedBind(t *testing.T, dir string) {
	t.Helper()
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		t.Fatalf("make %s shared: %v", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}

// The CSI issue, the node-plugin restart as Kubernetes does it: the node
// plugin (brickd) runs in a container — CAP_SYS_ADMIN and /dev/fuse, host network, the
// host's PID namespace, the kubelet directory bound with bidirectional
// propagation, --mount-cgroup — and the container is killed and started
// again while a volume is published and written to. The mount process is
// outside the container's cgroup, so the runtime's kill leaves it alone:
// the target path keeps working throughout, and the restarted brickd
// adopts the mount (unpublish and unstage work).
func TestCSINodePluginContainerRestart(t *testing.T) {
	needDocker(t)
	cl := harness.New(t, netCSIContainer)
	n1 := cl.Add("n1", "BRICK_FAILOVER_TIMEOUT=3s").Start()
	n2 := cl.Add("n2", "BRICK_PEERS="+n1.GossipAddr()).Start()
	// c3 is defined in the harness for its address, directories and CLI,
	// but runs in a container.
	c3 := cl.Add("c3")
	base := filepath.Dir(c3.DataDir)
	n := &csiNode{Daemon: c3, Socket: filepath.Join(base, "csi.sock"), Kubelet: filepath.Join(base, "kubelet")}
	os.MkdirAll(n.Kubelet, 0o750)
	os.MkdirAll(c3.DataDir, 0o750)
	sharedBind(t, base)
	tag := fmt.Sprintf("bricktest-node:%d", netCSIContainer)
	nodeImage(t, tag)
	name := fmt.Sprintf("bricktest%d-node", netCSIContainer)
	exec.Command("docker", "rm", "-f", name).Run()
	// What a privileged pod has, spelled out (this engine refuses
	// --privileged: its own capability set is bounded).
	args := []string{"run", "-d", "--name", name, "--cap-add", "SYS_ADMIN", "--device", "/dev/fuse",
		"--security-opt", "apparmor=unconfined", "--security-opt", "seccomp=unconfined", "--pid=host", "--network=host",
		"-v", base + ":" + base + ":rshared", "-v", "/sys/fs/cgroup:/sys/fs/cgroup",
		"--log-driver", "json-file"}
	for _, e := range append(append([]string{}, cl.Env...),
		"BRICK_NAME=c3", "BRICK_BIND="+c3.IP, "BRICK_DATA_DIR="+c3.DataDir, "BRICK_SOCKET="+c3.Socket,
		"BRICK_CLUSTER_KEY="+cl.Key, "BRICK_PEERS="+n1.GossipAddr(),
		"BRICK_CSI_ENDPOINT=unix://"+n.Socket, "BRICK_CSI_KUBELET_DIR="+n.Kubelet,
		"BRICK_MOUNT_CGROUP=bricktest-mounts") {
		args = append(args, "-e", e)
	}
	args = append(args, tag, "/brickd")
	dockerCmd(t, args...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "logs", "--tail", "100", name).CombinedOutput()
			t.Logf("==== container log of c3 ====\n%s", out)
		}
		exec.Command("docker", "rm", "-f", name).Run()
		killHost(t, n) // the mount processes outlive the container by design
	})
	for _, d := range []*harness.Daemon{n1, n2, c3} {
		waitRoles(t, d, 90*time.Second, func(ps []peer) bool { return voters(ps) == 3 && leaderOf(ps) != "" })
	}

	c := dialCSI(t, n)
	vol := csiCreate(t, c, "pvc-container", nil)
	if _, err := c.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: "c3",
		VolumeCapability: csiRWO}); err != nil {
		t.Fatal(err)
	}
	staging, target := publishOn(t, n, c, vol.VolumeId, "pod")
	writeSynced(t, target, "before", []byte("before the restart"))
	pids := c3.MountPIDs()
	if len(pids) != 1 {
		t.Fatalf("mount processes of c3: %v", pids)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pids[0]))
	id := dockerCmd(t, "inspect", "-f", "{{.Id}}", name)
	if strings.Contains(string(cg), id) || !strings.Contains(string(cg), "bricktest-mounts") {
		t.Fatalf("the mount process is not out of the container's cgroup:\n%s", cg)
	}
	t.Cleanup(func() {
		for _, l := range []string{"unified", "memory", "pids", "cpu", "cpuset", "blkio", "freezer", "devices", "cpuacct", "systemd"} {
			os.Remove(filepath.Join("/sys/fs/cgroup", l, "bricktest-mounts"))
		}
	})

	// A writer on the host keeps writing with fsync through the restarts.
	l := &ledger{files: map[string][32]byte{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var longest time.Duration
	var wn int
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		longest, wn, werr = writer(t, target, l, stop)
	}()
	for _, how := range []string{"restart", "kill"} {
		time.Sleep(time.Second)
		switch how {
		case "restart": // SIGTERM, then start again: a rolling update
			dockerCmd(t, "restart", "-t", "5", name)
		case "kill": // SIGKILL to the whole container, then start it again
			dockerCmd(t, "kill", name)
			if !processAliveTest(pids[0]) {
				t.Fatalf("docker kill of the node plugin killed the mount process %d", pids[0])
			}
			writeSynced(t, target, "while-down", []byte("the container is gone"))
			dockerCmd(t, "start", name)
		}
		if !processAliveTest(pids[0]) {
			t.Fatalf("the mount process %d died with the container (%s)", pids[0], how)
		}
		writeSynced(t, target, "after-"+how, []byte(how))
		t.Logf("target path kept working across a container %s of the node plugin", how)
	}
	close(stop)
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer on the target path: %v", werr)
	}
	checkLedger(t, l, target)
	t.Logf("writer: %d files fsync'd across both restarts, longest write+fsync %v", wn, longest.Round(time.Millisecond))

	// The restarted node plugin adopts the mount: it unpublishes and
	// unstages it cleanly.
	unpublishAfterRestart(t, n, vol.VolumeId, staging, target)
	if processAliveTest(pids[0]) {
		t.Fatalf("the mount process %d still runs after unstage", pids[0])
	}
}

func processAliveTest(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}
