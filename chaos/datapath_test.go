package chaos

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	bolt "go.etcd.io/bbolt"

	"github.com/brickvol/brick/chaos/harness"
	"github.com/brickvol/brick/internal/sysmon"
	"github.com/brickvol/brick/replica"
)

const (
	netPosix = 30 + iota
	netBrickKill
	netBrickStop
	netMinISR
	netSQLite
	netDaemonRestart
	netBrickWipe
	netProportional
	netQuota
	netLocalReads
)

// netPowerLoss is past the failover scenarios' subnets (40 on).
const netPowerLoss = 90

// posixSkips are the posixtest cases that cannot pass on any brick mount;
// docs/posix.md gives the reasons.
var posixSkips = map[string]string{
	"FcntlFlockLocksFile": "same-process POSIX locks never conflict: a test bug, skipped by go-fuse itself",
}

func mount(t *testing.T, d *harness.Daemon, vol string) string {
	t.Helper()
	dir := filepath.Join(c(d).Dir, "mnt-"+vol)
	os.MkdirAll(dir, 0o755)
	if out, e, err := d.CLI("--timeout", "60s", "volume", "mount", vol, dir); err != nil {
		t.Fatalf("mount %s on %s: %v: %s %s", vol, d.Name, err, out, e)
	}
	t.Cleanup(func() {
		if _, e, err := d.CLI("--timeout", "60s", "volume", "unmount", dir); err != nil && d.Running() {
			t.Logf("unmount %s: %v: %s", dir, err, e)
		}
		syscall.Unmount(dir, syscall.MNT_DETACH)
	})
	return dir
}

func c(d *harness.Daemon) *harness.Cluster { return d.Cluster() }

func needFUSE(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("SKIPPING: no /dev/fuse on this machine; the data-path scenarios need FUSE")
	}
}

// Promise: a brick volume is a POSIX file system (go-fuse's posixtest), with
// one replica and with three.
func TestPosixOnMount(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netPosix)
	ds := startThree(t, cl)
	for _, replicas := range []string{"1", "3"} {
		t.Run("replicas="+replicas, func(t *testing.T) {
			names := make([]string, 0, len(posixtest.All))
			for n := range posixtest.All {
				names = append(names, n)
			}
			sort.Strings(names)
			for i, name := range names {
				fn := posixtest.All[name]
				t.Run(name, func(t *testing.T) {
					if why, ok := posixSkips[name]; ok {
						t.Skip(why)
					}
					// A fresh volume per case, as posixtest expects an empty directory.
					vol := fmt.Sprintf("px%s-%d", replicas, i)
					createVolume(t, ds[0], vol, "--replicas", replicas, "--size", "2G")
					dir := mount(t, ds[0], vol)
					fn(t, dir)
				})
			}
		})
	}
}

// ledger records every write that an fsync acknowledged.
type ledger struct {
	mu    sync.Mutex
	files map[string][32]byte
	onAdd func(name string, sum [32]byte) // optional
	// rewriteOnEIO makes writer write a file again when its fsync fails
	// with EIO (a shared volume's fsync across a head change that may have
	// lost the write), counting it in eio, instead of stopping.
	rewriteOnEIO bool
	eio          int
}

func (l *ledger) add(name string, sum [32]byte) {
	l.mu.Lock()
	l.files[name] = sum
	l.mu.Unlock()
	if l.onAdd != nil {
		l.onAdd(name, sum)
	}
}

// writer writes files with fsync until stop is closed, recording each
// acknowledged one, and reports the longest time one file took.
func writer(t *testing.T, dir string, l *ledger, stop <-chan struct{}) (longest time.Duration, n int, err error) {
	buf := make([]byte, 64<<10)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return longest, i, nil
		default:
		}
		start := time.Now()
		for j := range buf {
			buf[j] = byte(i*31 + j)
		}
		name := fmt.Sprintf("f%05d", i)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return longest, i, err
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return longest, i, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			if l.rewriteOnEIO && errors.Is(err, syscall.EIO) {
				l.mu.Lock()
				l.eio++
				l.mu.Unlock()
				i-- // not acknowledged: write it again
				continue
			}
			return longest, i, fmt.Errorf("fsync %s: %w", name, err)
		}
		f.Close()
		l.add(name, sha256.Sum256(buf))
		if d := time.Since(start); d > longest {
			longest = d
		}
	}
}

// checkLedger verifies every acknowledged file on the mount and on each
// in-sync replica directory given.
func checkLedger(t *testing.T, l *ledger, dirs ...string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, dir := range dirs {
		for name, want := range l.files {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("%s: acknowledged file %s: %v", dir, name, err)
				continue
			}
			if sha256.Sum256(b) != want {
				t.Errorf("%s: acknowledged file %s has other content", dir, name)
			}
		}
	}
}

// replicaDir is the data tree of volume vol on daemon d.
func replicaDir(d *harness.Daemon, volID string) string {
	return filepath.Join(d.DataDir, "bricks", volID, "data")
}

type volInfo struct {
	ID          string   `json:"id"`
	ISR         []string `json:"isr"`
	State       string   `json:"state"`
	Epoch       uint64   `json:"epoch"`
	Head        string   `json:"head_name"`
	Attachments []struct {
		Name     string `json:"brick_name"`
		Endpoint string `json:"endpoint"`
	} `json:"attachments"`
}

// volumeOf inspects a volume; an error (say, during a leader election) is
// returned in the state for callers that poll.
func volumeOf(t *testing.T, d *harness.Daemon, name string) volInfo {
	t.Helper()
	var v volInfo
	if err := d.JSON(&v, "volume", "inspect", name); err != nil {
		v.State = "error: " + err.Error()
	}
	return v
}

// Promise 1 and 3: kill -9 a brick (or hang it with SIGSTOP) while a writer
// fsyncs: writing continues after at most the replica timeout, and every
// acknowledged write is on every remaining in-sync replica.
func TestBrickLossDuringWrites(t *testing.T) {
	needFUSE(t)
	for _, mode := range []string{"kill", "stop", "wipe"} {
		t.Run(mode, func(t *testing.T) {
			subnet := map[string]int{"kill": netBrickKill, "stop": netBrickStop, "wipe": netBrickWipe}[mode]
			cl := harness.New(t, subnet)
			ds := startThree(t, cl)
			createVolume(t, ds[0], "data", "--replicas", "3", "--size", "2G")
			dir := mount(t, ds[0], "data")
			vol := volumeOf(t, ds[0], "data")
			if vol.ID == "" {
				t.Fatal(vol.State)
			}
			l := &ledger{files: map[string][32]byte{}}
			stop := make(chan struct{})
			type result struct {
				longest time.Duration
				n       int
				err     error
			}
			done := make(chan result, 1)
			go func() {
				lg, n, err := writer(t, dir, l, stop)
				done <- result{lg, n, err}
			}()
			victim := ds[2]
			// Let some writes through first.
			harness.Eventually(t, 30*time.Second, "the writer makes progress", func() (bool, string) {
				l.mu.Lock()
				defer l.mu.Unlock()
				return len(l.files) >= 20, fmt.Sprint(len(l.files), " files")
			})
			failedAt := time.Now()
			if mode != "stop" {
				victim.Kill()
			} else {
				victim.Stop()
				defer victim.Cont()
			}
			t.Logf("%s brick %s", mode, victim.Name)
			harness.Eventually(t, 30*time.Second, "the brick leaves the in-sync set", func() (bool, string) {
				v := volumeOf(t, ds[0], "data")
				return len(v.ISR) == 2, fmt.Sprint(v.ISR, v.State)
			})
			t.Logf("brick dropped from the ISR %v after the %s", time.Since(failedAt).Round(time.Millisecond), mode)
			// Writing goes on.
			l.mu.Lock()
			before := len(l.files)
			l.mu.Unlock()
			harness.Eventually(t, 30*time.Second, "writes continue without the brick", func() (bool, string) {
				l.mu.Lock()
				defer l.mu.Unlock()
				return len(l.files) >= before+20, fmt.Sprint(len(l.files), " files")
			})
			if mode != "stop" {
				// A big file too, fsync'd as it grows, while the brick is away:
				// more than any op log holds, so a wiped brick needs a resync.
				bigFile(t, dir, "big.bin", 200<<20, l)
			}
			close(stop)
			r := <-done
			if r.err != nil {
				t.Fatalf("writer failed: %v", r.err)
			}
			t.Logf("%d files written with fsync; longest file (write+fsync) took %v", r.n, r.longest.Round(time.Millisecond))
			var dirs []string
			for _, d := range ds[:2] {
				dirs = append(dirs, replicaDir(d, vol.ID))
			}
			checkLedger(t, l, append([]string{dir}, dirs...)...)
			// Bring the brick back: it heals from the op log and rejoins.
			backAt := time.Now()
			if mode == "wipe" {
				// The brick comes back with its replica gone (a replaced disk).
				if err := os.RemoveAll(filepath.Dir(replicaDir(victim, vol.ID))); err != nil {
					t.Fatal(err)
				}
				victim.Start()
			} else if mode == "kill" {
				victim.Start()
			} else {
				victim.Cont()
			}
			waitISR(t, ds[0], "data", 3, 120*time.Second)
			t.Logf("brick healed and back in the ISR %v after it returned; %s", time.Since(backAt).Round(time.Millisecond), healBytes(t, ds[0], "data"))
			syncDir(t, dir) // a barrier every ISR brick, the healed one included, must honour
			dirs = append(dirs, replicaDir(victim, vol.ID))
			checkLedger(t, l, dirs...)
			sameTrees(t, dirs...)
		})
	}
}

// waitISR waits until the volume's ISR has n bricks.
func waitISR(t *testing.T, d *harness.Daemon, name string, n int, bound time.Duration) {
	t.Helper()
	harness.Eventually(t, bound, fmt.Sprintf("%s's ISR has %d bricks", name, n), func() (bool, string) {
		v := volumeOf(t, d, name)
		return len(v.ISR) == n, fmt.Sprint(v.ISR, " ", v.State)
	})
}

// Promise 3: below min-isr the volume turns read-only, loudly; reads work.
func TestBelowMinISRReadOnly(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netMinISR)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "ro", "--replicas", "3", "--min-isr", "2", "--size", "1G")
	dir := mount(t, ds[0], "ro")
	if err := os.WriteFile(filepath.Join(dir, "before"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncDir(t, dir)
	ds[1].Kill()
	ds[2].Kill()
	var werr error
	harness.Eventually(t, 60*time.Second, "writes fail once two of three bricks are gone", func() (bool, string) {
		f, err := os.OpenFile(filepath.Join(dir, "after"), os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.Write([]byte("x"))
			err = f.Sync()
			f.Close()
		}
		werr = err
		return err != nil, fmt.Sprint(err)
	})
	if !strings.Contains(werr.Error(), "read-only") && !strings.Contains(werr.Error(), "input/output") {
		t.Errorf("write below min-isr failed with %v, want EROFS or EIO", werr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "before")); err != nil || string(b) != "kept" {
		t.Errorf("read below min-isr: %q %v", b, err)
	}
	// One brick back: it heals, rejoins, and writes work again.
	ds[1].Start()
	harness.Eventually(t, 60*time.Second, "writes work again once a brick is back", func() (bool, string) {
		err := os.WriteFile(filepath.Join(dir, "again"), []byte("y"), 0o644)
		if err == nil {
			var f *os.File
			if f, err = os.Open(filepath.Join(dir, "again")); err == nil {
				err = f.Sync()
				f.Close()
			}
		}
		return err == nil, fmt.Sprint(err)
	})
}

// sameTrees fails unless every replica tree has the same digest (paths,
// modes, owners, contents, link targets, xattrs), showing the difference.
func sameTrees(t *testing.T, dirs ...string) {
	t.Helper()
	var first []string
	for i, dir := range dirs {
		m, err := replica.TreeManifest(dir)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = m
			continue
		}
		if strings.Join(m, "\n") != strings.Join(first, "\n") {
			t.Errorf("replica trees %s and %s differ:\n%s", dirs[0], dir, manifestDiff(first, m))
		}
	}
}

func manifestDiff(a, b []string) string {
	in := map[string]int{}
	for _, l := range a {
		in[l]++
	}
	for _, l := range b {
		in[l]--
	}
	var out []string
	for l, n := range in {
		if n > 0 {
			out = append(out, "- "+l)
		} else if n < 0 {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], "...")
	}
	return strings.Join(out, "\n")
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", dir, err)
	}
}

// Issue test 7: SQLite runs committed transactions on the mount and checks
// clean, also while a non-head brick is killed.
func TestSQLiteOnMount(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("SKIPPING: sqlite3 is not installed (scripts/deps.sh installs it)")
	}
	// Both ways of carrying the replication stream (--replication-stream).
	for _, stream := range []string{"framed", "grpc"} {
		t.Run("stream="+stream, func(t *testing.T) {
			cl := harness.New(t, netSQLite)
			cl.Env = append(cl.Env, "BRICK_REPLICATION_STREAM="+stream)
			ds := startThree(t, cl)
			createVolume(t, ds[0], "db", "--replicas", "3", "--size", "1G")
			dir := mount(t, ds[0], "db")
			db := filepath.Join(dir, "test.db")
			run := func(sql string) string {
				out, err := exec.Command("sqlite3", db, sql).CombinedOutput()
				if err != nil {
					t.Fatalf("sqlite3: %v: %s", err, out)
				}
				return strings.TrimSpace(string(out))
			}
			run("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
			var script strings.Builder
			for i := 0; i < 1000; i++ {
				fmt.Fprintf(&script, "BEGIN; INSERT INTO t(v) VALUES('row %d'); COMMIT;\n", i)
			}
			run(script.String())
			ds[2].Kill()
			t.Logf("killed brick %s after 1000 transactions", ds[2].Name)
			run(script.String())
			if got := run("SELECT count(*) FROM t;"); got != "2000" {
				t.Errorf("count = %s, want 2000", got)
			}
			if got := run("PRAGMA integrity_check;"); got != "ok" {
				t.Errorf("integrity_check: %s", got)
			}
			checkSysmon(t, ds[0])
			checkStreams(t, ds[0], "db", stream)
		})
	}
}

// checkStreams: every replication stream the mount of vol on d opened went
// the way it was told to.
func checkStreams(t *testing.T, d *harness.Daemon, vol, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.DataDir, "mounts", vol+".log"))
	if err != nil {
		t.Fatal(err)
	}
	opened := 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "replication stream open") {
			continue
		}
		opened++
		if !strings.Contains(line, "stream="+want) {
			t.Errorf("mount of %s opened a stream not %s: %s", vol, want, line)
		}
	}
	if opened < 3 {
		t.Errorf("mount log of %s shows %d replication streams opened, want one per brick at least", vol, opened)
	}
}

// checkSysmon: a brickd runs re-executed with its monitor thread kept
// steady (--steady-sysmon, on by default), its mount processes without.
func checkSysmon(t *testing.T, d *harness.Daemon) {
	t.Helper()
	godebug := func(pid int) string {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("reading the environment of process %d: %v", pid, err)
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
				return v
			}
		}
		return ""
	}
	if g := godebug(d.PID()); !strings.Contains(g, sysmon.Setting) {
		t.Errorf("%s runs with GODEBUG=%q, want it to hold %s", d.Name, g, sysmon.Setting)
	}
	pids := d.MountPIDs()
	if len(pids) == 0 {
		t.Fatalf("%s has no mount process", d.Name)
	}
	for _, pid := range pids {
		if g := godebug(pid); strings.Contains(g, sysmon.Setting) {
			t.Errorf("mount process %d runs with GODEBUG=%q, want Go's default", pid, g)
		}
	}
}

// Design "Mount process": restarting (SIGTERM) the brickd of
// the mounting host under a running writer pauses I/O at most; nothing the
// writer was acknowledged is lost, and the mount never breaks.
func TestDaemonRestartUnderMount(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netDaemonRestart)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "busy", "--replicas", "3", "--size", "2G")
	dir := mount(t, ds[0], "busy")
	vol := volumeOf(t, ds[0], "busy")
	l := &ledger{files: map[string][32]byte{}}
	stop := make(chan struct{})
	type result struct {
		longest time.Duration
		n       int
		err     error
	}
	done := make(chan result, 1)
	go func() {
		lg, n, err := writer(t, dir, l, stop)
		done <- result{lg, n, err}
	}()
	progress := func(what string, more int) {
		l.mu.Lock()
		before := len(l.files)
		l.mu.Unlock()
		harness.Eventually(t, 60*time.Second, what, func() (bool, string) {
			l.mu.Lock()
			defer l.mu.Unlock()
			return len(l.files) >= before+more, fmt.Sprint(len(l.files), " files")
		})
	}
	progress("the writer makes progress", 20)
	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		if how == "SIGTERM" {
			ds[0].Term()
		} else {
			ds[0].Kill()
		}
		t.Logf("%s to brickd on the mounting host %s", how, ds[0].Name)
		ds[0].Start()
		progress("the writer carries on after the "+how+" restart", 20)
	}
	close(stop)
	r := <-done
	if r.err != nil {
		t.Fatalf("writer failed across brickd restarts: %v", r.err)
	}
	t.Logf("%d files written with fsync across the brickd restart; longest file (write+fsync) took %v", r.n, r.longest.Round(time.Millisecond))
	var dirs []string
	for _, d := range ds {
		dirs = append(dirs, replicaDir(d, vol.ID))
	}
	checkLedger(t, l, dir)
	// The local brick, if it left the ISR during the restarts, heals back.
	waitISR(t, ds[1], "busy", 3, 60*time.Second)
	syncDir(t, dir)
	checkLedger(t, l, dirs...)
	sameTrees(t, dirs...)
}

// bigFile writes a file of size bytes (a pattern that differs per MiB),
// fsyncing every 32 MiB and at the end, and records it in l.
func bigFile(t *testing.T, dir, name string, size int64, l *ledger) {
	t.Helper()
	start := time.Now()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		fillChunk(buf, off)
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("writing %s at %d: %v", name, off, err)
		}
		h.Write(buf)
		if (off+int64(len(buf)))%(32<<20) == 0 {
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync %s: %v", name, err)
			}
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", name, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	l.add(name, sum)
	t.Logf("wrote %s (%d MiB) with fsync in %v", name, size>>20, time.Since(start).Round(time.Millisecond))
}

func fillChunk(buf []byte, off int64) {
	for i := range buf {
		buf[i] = byte(int64(i)*7 + off>>20)
	}
}

var healBytesRE = regexp.MustCompile(`heal_bytes=(\d+)`)
var resyncBytesRE = regexp.MustCompile(`full resync of a brick done.*bytes_fetched=(\d+)`)

// healBytes sums what the head's heals sent (op bytes) and its resyncs
// fetched, from the mount log of vol on d.
func healBytes(t *testing.T, d *harness.Daemon, vol string) string {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(d.DataDir, "mounts", vol+".log"))
	var ops, fetched int64
	for _, m := range healBytesRE.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		ops += n
	}
	resyncs := 0
	for _, m := range resyncBytesRE.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		fetched += n
		resyncs++
	}
	return fmt.Sprintf("heal sent %d MiB of ops; %d full resyncs fetched %d MiB", ops>>20, resyncs, fetched>>20)
}

// Issue "data path", test 4: heal is proportional to what changed. A brick
// is away for 30 s while 20 MiB of a 500 MiB file change; bringing it back
// costs a small multiple of 20 MiB, not 500.
func TestProportionalHeal(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netProportional)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "big", "--replicas", "3", "--size", "2G")
	dir := mount(t, ds[0], "big")
	vol := volumeOf(t, ds[0], "big")
	l := &ledger{files: map[string][32]byte{}}
	bigFile(t, dir, "data.bin", 500<<20, l)
	victim := ds[2]
	victim.Kill()
	away := time.Now()
	f, err := os.OpenFile(filepath.Join(dir, "data.bin"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := int64(0); i < 20; i++ {
		off := (i*97 + 13) % 500 << 20
		for j := range buf {
			buf[j] = byte(i + 1)
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitISR(t, ds[0], "big", 2, 30*time.Second) // the fsync above dropped it
	if d := 30*time.Second - time.Since(away); d > 0 {
		time.Sleep(d)
	}
	victim.Start()
	back := time.Now()
	waitISR(t, ds[0], "big", 3, 120*time.Second)
	got := healBytes(t, ds[0], "big")
	t.Logf("brick back in the ISR %v after a %v outage in which 20 MiB changed: %s",
		time.Since(back).Round(time.Millisecond), back.Sub(away).Round(time.Second), got)
	b, _ := os.ReadFile(filepath.Join(ds[0].DataDir, "mounts", "big.log"))
	var total int64
	for _, m := range healBytesRE.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		total += n
	}
	for _, m := range resyncBytesRE.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		total += n
	}
	if total > 3*(20<<20) {
		t.Errorf("heal copied %d MiB for 20 MiB changed (want at most 60 MiB)", total>>20)
	}
	syncDir(t, dir)
	var dirs []string
	for _, d := range ds {
		dirs = append(dirs, replicaDir(d, vol.ID))
	}
	sameTrees(t, dirs...)
}

// The volume's size is a quota: df reports it, and writing past it fails
// with ENOSPC (at write, fsync or close: the writeback cache reports it
// late, as NFS does) instead of filling the bricks.
func TestQuotaENOSPC(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netQuota)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "small", "--replicas", "3", "--size", "64M")
	dir := mount(t, ds[0], "small")
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if size := uint64(st.Blocks) * uint64(st.Bsize); size != 64<<20 {
		t.Fatalf("df shows %d bytes, want the 64 MiB quota", size)
	}
	f, err := os.OpenFile(filepath.Join(dir, "fill"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var written int64
	for i := 0; i < 100 && err == nil; i++ {
		var n int
		n, err = f.Write(buf)
		written += int64(n)
		if err == nil && i%8 == 7 {
			err = f.Sync()
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 100 MiB into a 64 MiB volume: %v (wrote %d MiB)", err, written>>20)
	}
	t.Logf("ENOSPC after %d MiB written into a 64 MiB volume: %v", written>>20, err)
	// With the writeback cache the kernel owns a file's size while it
	// caches it, so stat on this mount may still show the buffered tail
	// whose write-back failed (docs/posix.md). What the volume stores is
	// what counts: no replica holds more than the quota, and statfs
	// agrees.
	if fi, err := os.Stat(filepath.Join(dir, "fill")); err == nil {
		t.Logf("the kernel's cached size of fill: %d MiB", fi.Size()>>20)
	}
	v := volumeOf(t, ds[0], "small")
	for _, d := range ds {
		fi, err := os.Stat(filepath.Join(replicaDir(d, v.ID), "fill"))
		if err != nil {
			t.Fatalf("brick on %s: %v", d.Name, err)
		}
		if fi.Size() > 64<<20 {
			t.Errorf("brick on %s stores fill at %d bytes, past the 64 MiB quota", d.Name, fi.Size())
		}
	}
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Bfree > st.Blocks {
		t.Errorf("statfs: %d free blocks of %d", st.Bfree, st.Blocks)
	}
	// Deleting frees the space again.
	if err := os.Remove(filepath.Join(dir, "fill")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 20*time.Second, "a 10 MiB file fits again", func() (bool, string) {
		err := os.WriteFile(filepath.Join(dir, "again"), make([]byte, 10<<20), 0o644)
		if err == nil {
			f, _ := os.Open(filepath.Join(dir, "again"))
			err = f.Sync()
			f.Close()
		}
		return err == nil, fmt.Sprint(err)
	})
	// A file that fits is written, then overwritten in place (fio lays a
	// file out so), without ENOSPC: the kernel writes it back in many
	// concurrent requests, and overwrites grow nothing, however far the
	// bricks lag behind the head.
	if err := os.Remove(filepath.Join(dir, "again")); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 20*time.Second, "the volume is empty again", func() (bool, string) {
		err := syscall.Statfs(dir, &st)
		return err == nil && st.Bfree == st.Blocks, fmt.Sprintf("%d of %d blocks free, %v", st.Bfree, st.Blocks, err)
	})
	big := filepath.Join(dir, "big")
	for pass, flags := range []int{os.O_CREATE, 0} {
		f, err := os.OpenFile(big, os.O_WRONLY|flags, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 56 && err == nil; i++ {
			_, err = f.Write(buf)
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Errorf("pass %d: writing 56 MiB into an empty 64 MiB volume: %v", pass, err)
		}
	}
}

// Promise 1 across a power cut of every host: the mount process and all
// three brickd die at once, and each brick comes back from a "reboot"
// (its meta.db names another kernel boot, as after a real one) with its
// replica suspect. Refusing every suspect replica would leave the volume
// unmountable for ever; instead the new head adopts the most advanced
// one, which holds every acknowledged fsync, and fully resyncs the others
// from it: the volume mounts, every ledger entry is there, and the three
// replicas end byte-identical. One brick's meta.db is torn too: it is
// moved aside, and that replica (no position left) is resynced like the
// other.
func TestPowerLossOfEveryHost(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netPowerLoss)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "data", "--replicas", "3", "--size", "2G")
	dir := mount(t, ds[0], "data")
	vol := volumeOf(t, ds[0], "data")
	l := &ledger{files: map[string][32]byte{}}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, _, err := writer(t, dir, l, stop)
		done <- err
	}()
	harness.Eventually(t, 30*time.Second, "the writer makes progress", func() (bool, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.files) >= 40, fmt.Sprint(len(l.files), " files")
	})
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("writer: %v", err)
	}
	// Written but never fsync'd: may come back whole, partial or not at all.
	if err := os.WriteFile(filepath.Join(dir, "unsynced"), []byte("not fsync'd"), 0o644); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "the unsynced file reaches every brick (no fsync needed)", func() (bool, string) {
		for _, d := range ds {
			if b, err := os.ReadFile(filepath.Join(replicaDir(d, vol.ID), "unsynced")); err != nil || len(b) != 11 {
				return false, fmt.Sprint(d.Name, ": ", len(b), " bytes, ", err)
			}
		}
		return true, ""
	})

	for _, d := range ds {
		d.KillMounts()
		d.Kill()
	}
	syscall.Unmount(dir, syscall.MNT_DETACH) // the reboot leaves no mount behind
	// What was never fsync'd came back differently on each: whole on n3,
	// cut short on n1, gone on n2. Whichever replica is adopted, the
	// others must become copies of it.
	if err := os.Truncate(filepath.Join(replicaDir(ds[0], vol.ID), "unsynced"), 5); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(replicaDir(ds[1], vol.ID), "unsynced")); err != nil {
		t.Fatal(err)
	}
	// Every replica comes back after an unclean shutdown under another
	// boot; n3's meta.db was torn as well (its meta pages are junk).
	for _, d := range ds[:2] {
		rebootedMeta(t, filepath.Join(filepath.Dir(replicaDir(d, vol.ID)), "meta.db"))
	}
	tearMeta(t, filepath.Join(filepath.Dir(replicaDir(ds[2], vol.ID)), "meta.db"))
	for _, d := range ds {
		d.Start()
	}
	back := time.Now()
	t.Log("every host lost power; the daemons are back, each replica shut down uncleanly under another boot, n3's meta.db torn")

	var dir2 string
	harness.Eventually(t, 90*time.Second, "the volume mounts again", func() (bool, string) {
		var err error
		dir2, err = mountAt(t, ds[0], "data")
		return err == nil, fmt.Sprint(err)
	})
	checkLedger(t, l, dir2)
	var adopted []string
	for _, d := range ds {
		if d.LogContains("adopted a suspect replica") {
			adopted = append(adopted, d.Name)
		}
	}
	if len(adopted) != 1 || adopted[0] == ds[2].Name {
		t.Errorf("bricks that adopted their suspect replica: %v, want exactly one, not %s (no position left)", adopted, ds[2].Name)
	}
	if !ds[2].LogContains("replica bookkeeping damaged: moved it aside") {
		t.Errorf("%s did not say it moved its torn meta.db aside", ds[2].Name)
	}
	t.Logf("mounted again %v after the daemons were started, with %s's replica adopted; %d acknowledged files intact",
		time.Since(back).Round(time.Millisecond), adopted, len(l.files))
	waitISR(t, ds[0], "data", 3, 120*time.Second)
	t.Logf("the other two fully resynced from it %v after the daemons were started: %s",
		time.Since(back).Round(time.Millisecond), healBytes(t, ds[0], "data"))
	syncDir(t, dir2)
	var dirs []string
	for _, d := range ds {
		dirs = append(dirs, replicaDir(d, vol.ID))
	}
	checkLedger(t, l, dirs...)
	sameTrees(t, dirs...)
	ds[0].CLI("--timeout", "60s", "volume", "unmount", dir2)
}

// tearMeta overwrites a meta.db's two meta pages with junk, as a power
// loss in the middle of writing them might leave them.
func tearMeta(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := make([]byte, 2*os.Getpagesize())
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	if _, err := f.WriteAt(junk, 0); err != nil {
		t.Fatal(err)
	}
}

// rebootedMeta makes a replica's meta.db say it was last opened under
// another kernel boot, which is all a reboot changes for a brick whose
// process was killed (the page cache here kept what a real power loss
// might have lost: what was fsync'd is on the disk either way).
func rebootedMeta(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("meta")) // replica/records.go: bucketMeta, keyBoot
		if b == nil || b.Get([]byte("boot")) == nil {
			return errors.New("no boot ID recorded")
		}
		return b.Put([]byte("boot"), []byte("a boot before the power cut"))
	}); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
