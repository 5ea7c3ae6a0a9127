package chaos

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/brickvol/brick/chaos/harness"
)

// The Docker volume plugin against the real engine (the Docker plugin
// issue's tests). The scenarios serve the plugin under a test driver name,
// never "brick", so they never meet a cluster that make up started, and
// remove their containers, volumes, images, plugins and sockets when they
// end.
//
// The plain-socket scenarios share one driver name, testDriver, one
// scenario at a time: dockerd remembers every socket plugin it has used
// until it restarts, and asks each of them — retrying for about 15 s when
// its socket is gone — on every `docker volume ls` and every lookup of a
// volume name it does not know (`docker run -v new:/x` took 90 s with six
// such drivers). One name leaves at most one such driver behind. The
// managed plugin (a "v2" plugin) is forgotten when it is removed.
const testDriver = "bricktest"

const (
	netDockerVolume   = 50 + iota // test 1
	netDockerShared               // test 2
	netDockerBadInput             // test 4
	netDockerFailover             // test 3
	netDockerManaged              // test 5
	netDockerRestart              // test 6
)

// needDocker skips (loudly) only when docker is not installed at all; an
// installed engine that does not answer is a failure.
func needDocker(t *testing.T) {
	t.Helper()
	needFUSE(t)
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("SKIPPING: docker is not installed on this machine; the Docker plugin scenarios need a real Docker engine")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("docker is installed but the engine does not answer: %v: %s", err, out)
	}
}

// dockerRig is one scenario's view of the Docker engine: its driver name,
// its test image, and what it must clean up.
type dockerRig struct {
	t      *testing.T
	driver string // the plugin's name as Docker knows it
	tag    string // this scenario's: containers are TAG-NAME
	image  string
	// vols are the volume names the scenario asked Docker to create.
	mu   sync.Mutex
	vols []string
}

// newDockerRig builds the test image and registers the clean-up of the
// scenario's containers and volumes, and of the driver's socket. tag names
// the scenario (its subnet). Call it after harness.New, so the clean-up
// runs while the daemons still live.
func newDockerRig(t *testing.T, driver string, tag int) *dockerRig {
	t.Helper()
	r := &dockerRig{t: t, driver: driver, tag: fmt.Sprintf("bricktest%d", tag), image: fmt.Sprintf("bricktest-busybox:%d", tag)}
	r.buildImage()
	t.Cleanup(r.cleanup)
	return r
}

// socket is where a plain-install daemon serves this rig's driver.
func (r *dockerRig) socket() string { return "/run/docker/plugins/" + r.driver + ".sock" }

// docker runs the docker CLI. It keeps the names of the volumes created
// and not yet removed, for the clean-up.
func (r *dockerRig) docker(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if err == nil && len(args) > 2 && args[0] == "volume" {
		name := args[len(args)-1]
		r.mu.Lock()
		switch args[1] {
		case "create":
			r.vols = append(r.vols, name)
		case "rm":
			r.vols = slices.DeleteFunc(r.vols, func(v string) bool { return v == name })
		}
		r.mu.Unlock()
	}
	return o.String(), e.String(), err
}

// must runs the docker CLI and fails the test if it fails.
func (r *dockerRig) must(args ...string) string {
	r.t.Helper()
	out, errOut, err := r.docker(args...)
	if err != nil {
		r.t.Fatalf("docker %s: %v: %s%s", strings.Join(args, " "), err, out, errOut)
	}
	return strings.TrimSpace(out)
}

// refused runs a docker command that must fail with one clear line naming
// want, and returns that line.
func (r *dockerRig) refused(want string, args ...string) string {
	r.t.Helper()
	out, errOut, err := r.docker(args...)
	if err == nil {
		r.t.Fatalf("docker %s succeeded (%s); want an error naming %q", strings.Join(args, " "), strings.TrimSpace(out), want)
	}
	// The docker CLI may add its own hint lines ("Run 'docker run --help'").
	var lines []string
	for _, l := range strings.Split(errOut, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "Run 'docker") {
			lines = append(lines, l)
		}
	}
	msg := strings.Join(lines, "\n")
	if !strings.Contains(msg, want) {
		r.t.Errorf("docker %s: error %q does not name %q", strings.Join(args, " "), msg, want)
	}
	if strings.Count(msg, "\n") > 0 || strings.Contains(msg, "rpc error") {
		r.t.Errorf("docker %s: error is not one clear sentence:\n%s", strings.Join(args, " "), msg)
	}
	r.t.Logf("docker %s -> %s", strings.Join(args, " "), msg)
	return msg
}

// buildImage imports a FROM-scratch image holding Debian's static busybox
// (no registry, no builder needed).
func (r *dockerRig) buildImage() {
	t := r.t
	t.Helper()
	const bb = "/bin/busybox"
	f, err := elf.Open(bb)
	if err != nil {
		t.Fatalf("%s: %v (scripts/deps.sh installs busybox-static)", bb, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			t.Fatalf("%s is dynamically linked; the scratch test image needs busybox-static (scripts/deps.sh installs it)", bb)
		}
	}
	f.Close()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.MkdirAll(filepath.Join(root, "data"), 0o755)
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cat", "echo", "sync", "sleep", "ls", "seq", "test", "mkdir", "rm", "wc", "head", "tail", "true"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "-c", `tar -C "$0" -c . | docker import --change 'ENV PATH=/bin' - "$1"`, root, r.image)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the test image %s: %v: %s", r.image, err, out)
	}
}

// cleanup removes the rig's containers, volumes, image and socket. It
// removes the volumes it created by name rather than listing them (see
// testDriver: a listing can take 15 s).
func (r *dockerRig) cleanup() {
	ids, _, _ := r.docker("ps", "-aq", "--filter", "name=^"+r.tag+"-")
	for _, id := range strings.Fields(ids) {
		r.docker("rm", "-f", id)
	}
	r.mu.Lock()
	vols := slices.Clone(r.vols)
	r.mu.Unlock()
	for _, v := range vols {
		if _, e, err := r.docker("volume", "rm", "-f", v); err != nil {
			r.t.Logf("clean-up: docker volume rm -f %s: %v: %s", v, err, e)
		}
	}
	r.docker("rmi", "-f", r.image)
	os.Remove(r.socket())
	os.Remove(r.socket() + ".lock")
}

// volumes are the names of the volumes Docker knows with the rig's driver
// (a managed plugin's driver is NAME:latest).
func (r *dockerRig) volumes() []string {
	out, _, _ := r.docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}")
	var vs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == r.driver || f[0] == r.driver+":latest") {
			vs = append(vs, f[1])
		}
	}
	return vs
}

// container is the name of one of the rig's containers.
func (r *dockerRig) container(name string) string { return r.tag + "-" + name }

// dockerVolume is docker volume inspect's view.
type dockerVolume struct {
	Name       string         `json:"Name"`
	Driver     string         `json:"Driver"`
	Mountpoint string         `json:"Mountpoint"`
	Scope      string         `json:"Scope"`
	Status     map[string]any `json:"Status"`
}

func (r *dockerRig) inspect(name string) dockerVolume {
	r.t.Helper()
	var vs []dockerVolume
	if err := json.Unmarshal([]byte(r.must("volume", "inspect", name)), &vs); err != nil || len(vs) != 1 {
		r.t.Fatalf("docker volume inspect %s: %v %v", name, vs, err)
	}
	return vs[0]
}

// dockerBrickVol is brick volume inspect --json, as far as these scenarios read it.
type dockerBrickVol struct {
	ID          string   `json:"id"`
	HeadName    string   `json:"head_name"`
	Epoch       uint64   `json:"epoch"`
	ISR         []string `json:"isr"`
	State       string   `json:"state"`
	Attachments []struct {
		BrickName string `json:"brick_name"`
	} `json:"attachments"`
	Placement []struct {
		BrickName string `json:"brick_name"`
	} `json:"placement"`
}

func (v dockerBrickVol) attachedTo() string {
	var hs []string
	for _, a := range v.Attachments {
		hs = append(hs, a.BrickName)
	}
	sort.Strings(hs)
	return strings.Join(hs, ",")
}

func dockerBrickInspect(d *harness.Daemon, name string) (dockerBrickVol, error) {
	var v dockerBrickVol
	err := d.JSON(&v, "volume", "inspect", name)
	return v, err
}

// dockerServe makes d serve the Docker plugin on the rig's socket when it
// starts; every other daemon of the cluster serves none (the cluster's
// environment says off).
func dockerServe(d *harness.Daemon, r *dockerRig) {
	d.Env = append(d.Env, "BRICK_DOCKER_SOCKET="+r.socket())
}

// dockerCluster starts three daemons on subnet; the first serves the
// plugin for driver.
func dockerCluster(t *testing.T, subnet int, driver string) (*dockerRig, []*harness.Daemon) {
	needDocker(t)
	cl := harness.New(t, subnet)
	cl.Env = append(cl.Env, "BRICK_DOCKER_SOCKET=off")
	r := newDockerRig(t, driver, subnet)
	n1 := cl.Add("n1")
	dockerServe(n1, r)
	n1.Start()
	n2 := cl.Add("n2", "BRICK_PEERS="+n1.GossipAddr()).Start()
	n3 := cl.Add("n3", "BRICK_PEERS="+n1.GossipAddr()).Start()
	ds := []*harness.Daemon{n1, n2, n3}
	for _, d := range ds {
		waitRoles(t, d, 60*time.Second, func(ps []peer) bool { return voters(ps) == 3 && leaderOf(ps) != "" })
	}
	dockerWaitSocket(t, r.socket())
	return r, ds
}

func dockerWaitSocket(t *testing.T, path string) {
	t.Helper()
	harness.Eventually(t, 30*time.Second, "the plugin socket "+path, func() (bool, string) {
		fi, err := os.Stat(path)
		return err == nil && fi.Mode()&os.ModeSocket != 0, fmt.Sprint(err)
	})
}

// dockerMountRecords counts d's live mount records of volume vol.
func dockerMountRecords(d *harness.Daemon, vol string) int {
	recs, _ := filepath.Glob(filepath.Join(d.DataDir, "mounts", "*.json"))
	n := 0
	for _, p := range recs {
		var rec struct {
			Volume string `json:"volume"`
			Dir    string `json:"dir"`
			PID    int    `json:"pid"`
		}
		b, _ := os.ReadFile(p)
		if strings.HasSuffix(p, ".status.json") || json.Unmarshal(b, &rec) != nil || rec.Dir == "" {
			continue // not a mount record
		}
		if rec.Volume == vol && syscall.Kill(rec.PID, 0) == nil {
			n++
		}
	}
	return n
}

// dockerWaitDetached waits until vol is attached nowhere and d has no mount of it.
func dockerWaitDetached(t *testing.T, d *harness.Daemon, vol string) {
	t.Helper()
	harness.Eventually(t, 60*time.Second, vol+" detached and unmounted", func() (bool, string) {
		v, err := dockerBrickInspect(d, vol)
		n := dockerMountRecords(d, vol)
		return err == nil && len(v.Attachments) == 0 && n == 0, fmt.Sprintf("attached to %q, %d mounts, %v", v.attachedTo(), n, err)
	})
}

// dockerVolumeLifecycle is the test 1 through driver r.driver: create
// with options, write in one container, read in another, see it in ls and
// inspect with its status, remove it everywhere. dataDirs maps daemon names
// to data directories, to check the replicas on disk; via answers the CLI.
func dockerVolumeLifecycle(t *testing.T, r *dockerRig, via *harness.Daemon, dataDirs map[string]string) {
	const vol = "data"
	if out := r.must("volume", "create", "--driver", r.driver, "--opt", "replicas=3", "--opt", "size=1G", vol); out != vol {
		t.Fatalf("docker volume create printed %q", out)
	}
	const payload = "written through docker"
	r.must("run", "--rm", "--name", r.container("writer"), "-v", vol+":/data", r.image, "sh", "-c",
		"echo '"+payload+"' > /data/f && sync /data/f")
	if got := r.must("run", "--rm", "--name", r.container("reader"), "-v", vol+":/data", r.image, "cat", "/data/f"); got != payload {
		t.Fatalf("the second container read %q, want %q", got, payload)
	}
	// Both containers are gone: the volume is detached again.
	t.Logf("written in one container, read back in another")
	dockerWaitDetached(t, via, vol)
	t.Logf("detached")

	// ls and inspect show it, with brick's status.
	if ls := r.volumes(); strings.Join(ls, " ") != vol {
		t.Errorf("docker volume ls shows %v for driver %s, want [%s]", ls, r.driver, vol)
	}
	dv := r.inspect(vol)
	t.Logf("docker volume inspect %s: scope %s, status %v", vol, dv.Scope, dv.Status)
	if dv.Scope != "global" || dv.Status["layout"] != "replicas=3" || dv.Status["size"] != "1 GiB" || dv.Status["state"] != "healthy" ||
		!strings.HasSuffix(fmt.Sprint(dv.Status["in-sync"]), "(3 of 3)") || dv.Status["attached"] != "-" {
		t.Errorf("docker volume inspect %s: scope %s, status %v", vol, dv.Scope, dv.Status)
	}

	// The fsync'd file is on every replica's disk.
	bv, err := dockerBrickInspect(via, vol)
	if err != nil {
		t.Fatal(err)
	}
	if len(bv.Placement) != 3 {
		t.Fatalf("placement %v, want 3 bricks", bv.Placement)
	}
	for _, p := range bv.Placement {
		dir, ok := dataDirs[p.BrickName]
		if !ok {
			t.Fatalf("brick %s has no known data directory", p.BrickName)
		}
		b, err := os.ReadFile(filepath.Join(dir, "bricks", bv.ID, "data", "f"))
		if err != nil || strings.TrimSpace(string(b)) != payload {
			t.Errorf("replica on %s: %q %v", p.BrickName, b, err)
		}
	}

	// rm removes it everywhere: the catalog, and every brick's replica.
	rmAt := time.Now()
	r.must("volume", "rm", vol)
	harness.Eventually(t, 60*time.Second, vol+" removed from the catalog and every brick", func() (bool, string) {
		if _, err := dockerBrickInspect(via, vol); err == nil || !strings.Contains(err.Error(), "not found") {
			return false, fmt.Sprint("inspect: ", err)
		}
		for name, dir := range dataDirs {
			if _, err := os.Stat(filepath.Join(dir, "bricks", bv.ID)); err == nil {
				return false, "replica still on " + name
			}
		}
		return true, ""
	})
	t.Logf("docker volume rm: gone from the catalog and all %d bricks %v later", len(dataDirs), time.Since(rmAt).Round(time.Millisecond))
	if ls := r.volumes(); len(ls) != 0 {
		t.Errorf("docker volume ls after rm: %v", ls)
	}
}

func dockerDataDirs(ds []*harness.Daemon) map[string]string {
	m := map[string]string{}
	for _, d := range ds {
		m[d.Name] = d.DataDir
	}
	return m
}

// Test 1: a volume through the plain-socket plugin, end to end.
func TestDockerVolumeLifecycle(t *testing.T) {
	r, ds := dockerCluster(t, netDockerVolume, testDriver)
	dockerVolumeLifecycle(t, r, ds[0], dockerDataDirs(ds))
}

// dockerCounterLoop is a container command that writes and fsyncs /data/NAME-i
// for i = 0, 1, ... and prints "ok i" after each fsync returned, "fail i"
// when a step failed.
func dockerCounterLoop(name string) string {
	return fmt.Sprintf(`i=0; while :; do if echo "%[1]s-$i" > /data/%[1]s-$i && sync /data/%[1]s-$i; then echo "ok $i"; else echo "fail $i"; fi; i=$((i+1)); sleep 0.1; done`, name)
}

// acked parses a dockerCounterLoop's log: the acknowledged counters and the
// failed ones.
func (r *dockerRig) acked(container string) (ok []int, failed []int) {
	out, _, _ := r.docker("logs", container)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		switch f[0] {
		case "ok":
			ok = append(ok, n)
		case "fail":
			failed = append(failed, n)
		}
	}
	return ok, failed
}

// lastOutput is a container's last 40 lines of stdout and stderr, for a
// failure message: the shell names the step and the errno that failed.
func (r *dockerRig) lastOutput(container string) string {
	out, errOut, _ := r.docker("logs", "--tail", "40", container)
	return "\n==== " + container + "'s last output ====\n" + out + errOut
}

// progresses waits until container has acknowledged more than it had.
func (r *dockerRig) progresses(container string, more int, bound time.Duration) {
	r.t.Helper()
	before, _ := r.acked(container)
	harness.Eventually(r.t, bound, container+" writes on", func() (bool, string) {
		ok, failed := r.acked(container)
		if len(failed) > 0 {
			r.t.Fatalf("%s: writes failed: %v%s", container, failed, r.lastOutput(container))
		}
		return len(ok) >= len(before)+more, fmt.Sprint(len(ok), " acknowledged")
	})
}

// Test 2: two containers on one host share one mount; stopping one leaves
// the other's working; stopping both detaches.
func TestDockerSharedMount(t *testing.T) {
	r, ds := dockerCluster(t, netDockerShared, testDriver)
	const vol = "shared"
	r.must("volume", "create", "-d", r.driver, "-o", "replicas=3", "-o", "size=1G", vol)
	a, b := r.container("a"), r.container("b")
	r.must("run", "-d", "--name", a, "-v", vol+":/data", r.image, "sh", "-c", dockerCounterLoop("a"))
	r.must("run", "-d", "--name", b, "-v", vol+":/data", r.image, "sh", "-c", dockerCounterLoop("b"))
	r.progresses(a, 5, 60*time.Second)
	r.progresses(b, 5, 60*time.Second)
	if n := dockerMountRecords(ds[0], vol); n != 1 {
		t.Errorf("%d mount processes for two containers, want 1 shared", n)
	}
	if v, err := dockerBrickInspect(ds[0], vol); err != nil || v.attachedTo() != "n1" {
		t.Errorf("attached to %q (%v), want n1", v.attachedTo(), err)
	}
	// Each container sees the other's files: one file system.
	if out := r.must("exec", a, "cat", "/data/b-0"); out != "b-0" {
		t.Errorf("container a reads b's file as %q", out)
	}
	r.must("stop", "-t", "1", a)
	r.progresses(b, 10, 60*time.Second)
	if v, err := dockerBrickInspect(ds[0], vol); err != nil || v.attachedTo() != "n1" || dockerMountRecords(ds[0], vol) != 1 {
		t.Errorf("after one of two stopped: attached to %q (%v), %d mounts", v.attachedTo(), err, dockerMountRecords(ds[0], vol))
	}
	r.must("stop", "-t", "1", b)
	dockerWaitDetached(t, ds[0], vol)
	if dir := filepath.Join(ds[0].DataDir, "docker", vol); dockerMounted(dir) {
		t.Errorf("%s is still a mount point", dir)
	}
	// Every acknowledged write of both is there.
	okA, _ := r.acked(a)
	okB, _ := r.acked(b)
	dockerCheckAcked(t, r, vol, map[string][]int{"a": okA, "b": okB})
}

// dockerCheckAcked reads every acknowledged counter file back through a fresh
// container.
func dockerCheckAcked(t *testing.T, r *dockerRig, vol string, acked map[string][]int) {
	t.Helper()
	var want []string
	script := "cd /data"
	for name, ns := range acked {
		for _, n := range ns {
			f := fmt.Sprintf("%s-%d", name, n)
			script += "; cat " + f + " || echo MISSING-" + f
			want = append(want, f)
		}
	}
	if len(want) == 0 {
		t.Fatal("nothing was acknowledged")
	}
	out := r.must("run", "--rm", "--name", r.container("check"), "-v", vol+":/data", r.image, "sh", "-c", script)
	got := strings.Fields(out)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		var missing []string
		have := map[string]bool{}
		for _, g := range got {
			have[g] = true
		}
		for _, w := range want {
			if !have[w] {
				missing = append(missing, w)
			}
		}
		t.Errorf("%d acknowledged files, %d missing or wrong: %v", len(want), len(missing), missing)
	}
	t.Logf("all %d acknowledged files of %s read back", len(want), vol)
}

func dockerMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// Test 4: bad input through the real CLI gets one clear error and creates
// or removes nothing.
func TestDockerBadInput(t *testing.T) {
	r, ds := dockerCluster(t, netDockerBadInput, testDriver)
	d := r.driver
	r.refused(`unknown option "colour" (known options: access, ec, label, min-isr, replicas, size)`,
		"volume", "create", "-d", d, "-o", "colour=red", "v1")
	r.refused(`size "12Q"`, "volume", "create", "-d", d, "-o", "size=12Q", "v2")
	r.refused(`replicas "0"`, "volume", "create", "-d", d, "-o", "replicas=0", "v3")
	r.refused(`min-isr 4`, "volume", "create", "-d", d, "-o", "replicas=3", "-o", "min-isr=4", "v4")
	// Names Docker accepts and brick refuses.
	r.refused(`volume name "a..b": ".." at position 2 is not allowed`, "volume", "create", "-d", d, "a..b")
	long := strings.Repeat("x", 65)
	r.refused("65 characters is too long", "volume", "create", "-d", d, long)
	var vols []dockerBrickVol
	if err := ds[0].JSON(&vols, "volume", "ls"); err != nil || len(vols) != 0 {
		t.Errorf("bad creates created %d volumes (%v)", len(vols), err)
	}
	if ls := r.volumes(); len(ls) != 0 {
		t.Errorf("docker volume ls after bad creates: %v", ls)
	}

	// A volume in use on another host: rm and run are refused, naming it.
	const vol = "held"
	r.must("volume", "create", "-d", d, "-o", "replicas=3", vol)
	dir := filepath.Join(c(ds[1]).Dir, "mnt-"+vol)
	os.MkdirAll(dir, 0o755)
	if out, e, err := ds[1].CLI("--timeout", "60s", "volume", "mount", vol, dir); err != nil {
		t.Fatalf("mount %s on n2: %v: %s %s", vol, err, out, e)
	}
	r.refused(`volume "held" is in use on host n2; stop the containers using it there first (nothing was removed)`, "volume", "rm", vol)
	r.refused(`volume "held" is in use on host n2`, "run", "--rm", "--name", r.container("thief"), "-v", vol+":/data", r.image, "true")
	if v, err := dockerBrickInspect(ds[0], vol); err != nil || v.attachedTo() != "n2" {
		t.Errorf("after the refusals: attached to %q (%v), want n2 still", v.attachedTo(), err)
	}
	if ls := r.volumes(); strings.Join(ls, " ") != vol {
		t.Errorf("docker volume ls after the refused rm: %v", ls)
	}
	if out, e, err := ds[1].CLI("--timeout", "60s", "volume", "unmount", dir); err != nil {
		t.Fatalf("unmount on n2: %v: %s %s", err, out, e)
	}
	r.must("volume", "rm", vol)
	if _, err := dockerBrickInspect(ds[0], vol); err == nil {
		t.Error("still in the catalog after rm")
	}
}

// dockerKillHost kills d's brickd and its mount processes with SIGKILL, as a
// host dying does.
func dockerKillHost(d *harness.Daemon) {
	d.Kill()
	recs, _ := filepath.Glob(filepath.Join(d.DataDir, "mounts", "*.json"))
	for _, p := range recs {
		var rec struct {
			PID int    `json:"pid"`
			Dir string `json:"dir"`
		}
		b, _ := os.ReadFile(p)
		if json.Unmarshal(b, &rec) != nil {
			continue
		}
		if rec.PID > 0 {
			syscall.Kill(rec.PID, syscall.SIGKILL)
		}
		syscall.Unmount(rec.Dir, syscall.MNT_DETACH)
	}
}

// Test 3: failover through Docker. A container writes through host A's
// plugin; A dies; host B serves the plugin socket; docker run on the volume
// succeeds once A has been dead for the failover timeout, and sees every
// byte A fsync'd.
func TestDockerFailover(t *testing.T) {
	needDocker(t)
	cl := harness.New(t, netDockerFailover)
	cl.Env = append(cl.Env, "BRICK_DOCKER_SOCKET=off", "BRICK_FAILOVER_TIMEOUT=5s")
	r := newDockerRig(t, testDriver, netDockerFailover)
	n1 := cl.Add("n1").Start()
	hostA := cl.Add("a", "BRICK_PEERS="+n1.GossipAddr()) // 127.0.53.2
	dockerServe(hostA, r)
	hostA.Start()
	hostB := cl.Add("b", "BRICK_PEERS="+n1.GossipAddr()).Start() // 127.0.53.3
	for _, d := range []*harness.Daemon{n1, hostA, hostB} {
		waitRoles(t, d, 60*time.Second, func(ps []peer) bool { return voters(ps) == 3 && leaderOf(ps) != "" })
	}
	dockerWaitSocket(t, r.socket())
	const vol = "fo"
	r.must("volume", "create", "-d", r.driver, "-o", "replicas=3", "-o", "size=1G", vol)
	w := r.container("writer")
	r.must("run", "-d", "--name", w, "-v", vol+":/data", r.image, "sh", "-c", dockerCounterLoop("w"))
	r.progresses(w, 20, 60*time.Second)
	before, _ := dockerBrickInspect(n1, vol)
	if before.attachedTo() != "a" {
		t.Fatalf("attached to %q, want a", before.attachedTo())
	}

	// Host A dies: its daemon, its mount process, and the container.
	dockerKillHost(hostA)
	diedAt := time.Now()
	r.docker("kill", w) // Docker's unmount through A's dead socket fails; nobody is left to detach
	okW, _ := r.acked(w)
	t.Logf("host a killed after %d acknowledged writes", len(okW))

	// Host B takes over the plugin socket (the same driver name).
	hostB.Term()
	dockerServe(hostB, r)
	hostB.Start()
	dockerWaitSocket(t, r.socket())
	var got string
	harness.Eventually(t, 120*time.Second, "docker run on host b after the failover timeout", func() (bool, string) {
		out, e, err := r.docker("run", "--rm", "--name", r.container("after"), "-v", vol+":/data", r.image, "cat", "/data/w-0")
		got = strings.TrimSpace(out)
		return err == nil, strings.TrimSpace(e)
	})
	t.Logf("docker run on host b succeeded %v after host a died", time.Since(diedAt).Round(time.Millisecond))
	if got != "w-0" {
		t.Errorf("read %q", got)
	}
	after, err := dockerBrickInspect(n1, vol)
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch <= before.Epoch {
		t.Errorf("epoch %d after the takeover, was %d", after.Epoch, before.Epoch)
	}
	dockerCheckAcked(t, r, vol, map[string][]int{"w": okW})
	dockerWaitDetached(t, hostB, vol)
}

// Test 6: a restart of brickd (plain-socket install) under a running
// container: its I/O pauses and resumes, Docker sees the plugin again, and
// the mount counts survive, so the last unmount still detaches.
func TestDockerDaemonRestart(t *testing.T) {
	r, ds := dockerCluster(t, netDockerRestart, testDriver)
	n1 := ds[0]
	const vol = "busy"
	r.must("volume", "create", "-d", r.driver, "-o", "replicas=3", "-o", "size=1G", vol)
	w := r.container("writer")
	r.must("run", "-d", "--name", w, "-v", vol+":/data", r.image, "sh", "-c", dockerCounterLoop("w"))
	r.progresses(w, 10, 60*time.Second)
	for _, how := range []string{"SIGKILL", "SIGTERM"} {
		if how == "SIGKILL" {
			n1.Kill()
		} else {
			n1.Term()
		}
		t.Logf("%s to brickd on the host of the running container", how)
		n1.Start()
		// Docker reaches the plugin again: inspect goes through Get.
		var dv dockerVolume
		harness.Eventually(t, 60*time.Second, "docker volume inspect through the restarted plugin", func() (bool, string) {
			out, e, err := r.docker("volume", "inspect", vol)
			var vs []dockerVolume
			if err == nil && json.Unmarshal([]byte(out), &vs) == nil && len(vs) == 1 && vs[0].Status != nil {
				dv = vs[0]
				return true, ""
			}
			return false, strings.TrimSpace(e)
		})
		r.progresses(w, 10, 60*time.Second)
		if dv.Status["attached"] != "n1" || dv.Status["state"] == nil {
			t.Errorf("after the %s restart: status %v", how, dv.Status)
		}
		if s, _ := dv.Status["mounted-here"].(string); !strings.Contains(s, "1 container") {
			t.Errorf("after the %s restart the plugin lost its count: mounted-here %q", how, s)
		}
	}
	// A second container joins the running one, through the restarted plugin.
	out := r.must("run", "--rm", "--name", r.container("reader"), "-v", vol+":/data", r.image, "cat", "/data/w-0")
	if out != "w-0" {
		t.Errorf("second container read %q", out)
	}
	if n := dockerMountRecords(n1, vol); n != 1 {
		t.Errorf("%d mounts after the second container, want 1 shared", n)
	}
	if v, _ := dockerBrickInspect(n1, vol); v.attachedTo() != "n1" {
		t.Errorf("the second container's exit detached the volume under the first: attached to %q", v.attachedTo())
	}
	r.must("stop", "-t", "1", w)
	dockerWaitDetached(t, n1, vol)
	okW, failed := r.acked(w)
	if len(failed) > 0 {
		t.Errorf("writes failed across the restarts: %v%s", failed, r.lastOutput(w))
	}
	dockerCheckAcked(t, r, vol, map[string][]int{"w": okW})
}

// Test 5: the managed plugin, built locally, created with docker plugin
// create, joined to a cluster with docker plugin set, passes test 1.
func TestDockerManagedPlugin(t *testing.T) {
	needDocker(t)
	cl := harness.New(t, netDockerManaged)
	cl.Env = append(cl.Env, "BRICK_DOCKER_SOCKET=off")
	const name = "bricktest54"
	// Registered first, so it runs last: the plugin goes once the rig's
	// volumes are removed through it.
	var r *dockerRig
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile("/var/log/dockerd.log"); err == nil {
				var lines []string
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "plugin") || strings.Contains(l, "brick") {
						lines = append(lines, l)
					}
				}
				if len(lines) > 150 {
					lines = lines[len(lines)-150:]
				}
				t.Logf("==== dockerd log (plugin lines) ====\n%s", strings.Join(lines, "\n"))
			}
		}
		r.docker("plugin", "disable", "-f", name)
		r.docker("plugin", "rm", "-f", name)
	})
	r = newDockerRig(t, name, netDockerManaged)
	ds := startThree(t, cl)
	pluginData := filepath.Join(t.TempDir(), "plugin-data")
	os.MkdirAll(pluginData, 0o700)

	build := exec.Command("bash", "scripts/docker-plugin.sh", name)
	build.Dir = ".."
	build.Env = append(os.Environ(), "PLUGIN_DIR="+filepath.Join(t.TempDir(), "plugin"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/docker-plugin.sh: %v\n%s", err, out)
	} else {
		t.Logf("scripts/docker-plugin.sh:\n%s", out)
	}
	ip := cl.Net + "4"
	r.must("plugin", "set", name, "BRICK_NAME=plugin", "BRICK_BIND="+ip, "BRICK_PEERS="+ds[0].GossipAddr(),
		"BRICK_CLUSTER_KEY="+cl.Key, "BRICK_GOSSIP_PROFILE=local", "BRICK_RAFT_HEARTBEAT=500ms", "BRICK_LOG_LEVEL=debug",
		"data.source="+pluginData)
	r.must("plugin", "enable", name)
	if en := r.must("plugin", "inspect", "-f", "{{.Enabled}}", name); en != "true" {
		t.Fatalf("plugin enabled = %s", en)
	}
	waitRoles(t, ds[0], 60*time.Second, func(ps []peer) bool {
		for _, p := range ps {
			if p.Name == "plugin" && p.GossipState == "alive" && (p.RaftRole == "voter" || p.RaftRole == "leader") {
				return true
			}
		}
		return false
	})
	dirs := dockerDataDirs(ds)
	dirs["plugin"] = pluginData
	dockerVolumeLifecycle(t, r, ds[0], dirs)
}
