// Package harness starts real brickd processes on loopback addresses for the
// chaos scenarios, and kills, pauses and restarts them with real signals.
// It is test infrastructure: only _test.go files import it.
//
// Each scenario gets its own 127.0.N.0/24 so scenarios in different
// packages can run at once with brick's fixed default ports.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
)

// Binaries are the built brickd and brick.
type Binaries struct {
	Brickd, Brick string
}

var (
	buildOnce sync.Once
	built     Binaries
	buildErr  error
)

// Build compiles brickd and brick once per test binary.
func Build(t testing.TB) Binaries {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "brick-bin-")
		if err != nil {
			buildErr = err
			return
		}
		for _, name := range []string{"brickd", "brick"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("building %s: %v\n%s", name, err, out)
				return
			}
		}
		built = Binaries{Brickd: filepath.Join(dir, "brickd"), Brick: filepath.Join(dir, "brick")}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// Cluster is a set of daemons of one scenario.
type Cluster struct {
	T    testing.TB
	Bin  Binaries
	Dir  string
	Net  string // "127.0.N." prefix
	Key  string
	Env  []string // extra environment for every daemon
	mu   sync.Mutex
	All  map[string]*Daemon
	next int
}

// New prepares a cluster on 127.0.<subnet>.x. Daemons are stopped with
// SIGKILL when the test ends, and their logs are printed if it failed.
func New(t testing.TB, subnet int) *Cluster {
	c := &Cluster{
		T: t, Bin: Build(t), Dir: t.TempDir(), Net: fmt.Sprintf("127.0.%d.", subnet),
		Key: "chaos-test-cluster-key-0123456789", All: map[string]*Daemon{},
		// No Docker plugin unless a scenario asks (a Daemon's Env comes
		// last and wins): a scenario daemon must not take Docker's "brick"
		// driver from a make-up cluster, nor leave its socket behind.
		Env: []string{"BRICK_GOSSIP_PROFILE=local", "BRICK_RAFT_HEARTBEAT=500ms", "BRICK_RECONCILE_INTERVAL=500ms",
			"BRICK_LOG_LEVEL=debug", "BRICK_DOCKER_SOCKET=off"},
	}
	t.Cleanup(func() {
		for _, d := range c.All {
			d.signal(syscall.SIGKILL)
			d.wait()
		}
		// Mount processes run in sessions of their own and outlive their
		// brickd by design; a scenario must not leave them (or a mount a
		// test goroutine is blocked on) behind.
		for _, d := range c.All {
			d.killMounts()
		}
		if t.Failed() {
			for _, d := range c.All {
				t.Logf("==== log of %s ====\n%s", d.Name, tail(d.Log(), 200))
				logs, _ := filepath.Glob(filepath.Join(d.DataDir, "mounts", "*.log"))
				for _, p := range logs {
					b, _ := os.ReadFile(p)
					t.Logf("==== mount log %s on %s ====\n%s", filepath.Base(p), d.Name, tail(string(b), 200))
				}
			}
		}
	})
	return c
}

// Daemon is one brickd process (restartable).
type Daemon struct {
	c       *Cluster
	Name    string
	IP      string
	DataDir string
	Socket  string
	LogPath string
	Env     []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Add defines a daemon with the next address (127.0.N.1, .2, ...) and the
// given extra environment; it does not start it.
func (c *Cluster) Add(name string, env ...string) *Daemon {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	ip := fmt.Sprintf("%s%d", c.Net, c.next)
	dir := filepath.Join(c.Dir, name)
	d := &Daemon{c: c, Name: name, IP: ip, DataDir: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "brick.sock"),
		LogPath: filepath.Join(dir, "brickd.log"), Env: env}
	os.MkdirAll(dir, 0o755)
	c.All[name] = d
	return d
}

// Start starts (or restarts) the process.
func (d *Daemon) Start() *Daemon {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		d.c.T.Fatalf("%s is already running", d.Name)
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.c.T.Fatal(err)
	}
	fmt.Fprintf(logf, "---- start %s ----\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(d.c.Bin.Brickd)
	cmd.Env = append(os.Environ(), d.c.Env...)
	cmd.Env = append(cmd.Env, "BRICK_NAME="+d.Name, "BRICK_BIND="+d.IP, "BRICK_DATA_DIR="+d.DataDir,
		"BRICK_SOCKET="+d.Socket, "BRICK_CLUSTER_KEY="+d.c.Key)
	cmd.Env = append(cmd.Env, d.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		d.c.T.Fatalf("starting %s: %v", d.Name, err)
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(done)
	}(cmd, d.done)
	return d
}

func (d *Daemon) signal(s syscall.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		d.cmd.Process.Signal(s)
	}
}

func (d *Daemon) wait() {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		d.c.T.Errorf("%s did not exit within 30 s of a signal", d.Name)
		d.cmd.Process.Kill()
		<-done
	}
	d.mu.Lock()
	d.cmd, d.done = nil, nil
	d.mu.Unlock()
}

// Kill sends SIGKILL and waits for the process to die.
func (d *Daemon) Kill() { d.signal(syscall.SIGKILL); d.wait() }

// Term sends SIGTERM and waits for a clean exit.
func (d *Daemon) Term() { d.signal(syscall.SIGTERM); d.wait() }

// Stop pauses the process (SIGSTOP); Cont resumes it.
func (d *Daemon) Stop() { d.signal(syscall.SIGSTOP) }
func (d *Daemon) Cont() { d.signal(syscall.SIGCONT) }

// Running reports whether the process is alive.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd != nil
}

// PID is the process ID of the running daemon (0 when it is not running).
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// MountPIDs are the PIDs of the daemon's mount processes, from brickd's
// records.
func (d *Daemon) MountPIDs() []int {
	recs, _ := filepath.Glob(filepath.Join(d.DataDir, "mounts", "*.json"))
	var out []int
	for _, p := range recs {
		var r struct {
			PID int `json:"pid"`
		}
		b, _ := os.ReadFile(p)
		if json.Unmarshal(b, &r) == nil && r.PID > 0 {
			out = append(out, r.PID)
		}
	}
	return out
}

// SignalMounts sends s to every mount process of the daemon (SIGSTOP and
// SIGCONT freeze and thaw a host together with Stop and Cont).
func (d *Daemon) SignalMounts(s syscall.Signal) {
	for _, pid := range d.MountPIDs() {
		syscall.Kill(pid, s)
	}
}

// KillMounts kills the daemon's mount processes with SIGKILL: with Kill,
// a host dying. The mount points stay (every access fails with ENOTCONN,
// as on a host whose FUSE server died) until the test's cleanup.
func (d *Daemon) KillMounts() { d.SignalMounts(syscall.SIGKILL) }

// killMounts kills the daemon's mount processes (from brickd's records)
// and lazily unmounts their mount points.
func (d *Daemon) killMounts() {
	recs, _ := filepath.Glob(filepath.Join(d.DataDir, "mounts", "*.json"))
	for _, p := range recs {
		var r struct {
			PID int    `json:"pid"`
			Dir string `json:"dir"`
		}
		b, _ := os.ReadFile(p)
		if json.Unmarshal(b, &r) != nil {
			continue
		}
		if r.PID > 0 {
			syscall.Kill(r.PID, syscall.SIGKILL)
		}
		syscall.Unmount(r.Dir, syscall.MNT_DETACH)
	}
}

// Cluster is the cluster the daemon belongs to.
func (d *Daemon) Cluster() *Cluster { return d.c }

// GossipAddr is what BRICK_PEERS names to join through this daemon.
func (d *Daemon) GossipAddr() string { return d.IP }

// Log returns the daemon's log so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// CLI runs the brick CLI against this daemon's unix socket.
func (d *Daemon) CLI(args ...string) (stdout, stderr string, err error) {
	return d.c.CLIEnv([]string{"BRICK_SOCKET=" + d.Socket}, args...)
}

// CLIEnv runs the brick CLI with extra environment.
func (c *Cluster) CLIEnv(env []string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Bin.Brick, args...)
	cmd.Env = append(append(os.Environ(), "BRICK_CLUSTER_KEY="+c.Key), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// JSON runs the CLI with --json and decodes stdout into v.
func (d *Daemon) JSON(v any, args ...string) error {
	out, errOut, err := d.CLI(append([]string{"--json"}, args...)...)
	if err != nil {
		return fmt.Errorf("brick %s on %s: %v: %s", strings.Join(args, " "), d.Name, err, strings.TrimSpace(errOut))
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("brick %s on %s: decoding %q: %v", strings.Join(args, " "), d.Name, out, err)
	}
	return nil
}

// Eventually polls cond until it holds or the bound passes. The bound is a
// failure limit, not a timing assertion: scenarios wait on observable
// state, never on sleeps.
func Eventually(t testing.TB, bound time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(bound)
	last := ""
	for {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v; last: %s", what, bound, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// LogContains reports whether any line of the daemon's log contains all of
// the substrings.
func (d *Daemon) LogContains(subs ...string) bool {
	sc := bufio.NewScanner(strings.NewReader(d.Log()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		all := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
