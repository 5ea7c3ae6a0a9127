package chaos

import (
	"bufio"
	"encoding/hex"
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/brickvol/brick/chaos/harness"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica"
)

const (
	netFailoverKill = 40 + iota
	netFailoverPartition
	netFailoverForce
	netFailoverShrunk
)

// mountAt mounts vol on d at a directory of d's own (two "hosts" of one
// machine must not share a mount point) and returns it.
func mountAt(t *testing.T, d *harness.Daemon, vol string, args ...string) (string, error) {
	t.Helper()
	dir := filepath.Join(c(d).Dir, d.Name+"-mnt", vol)
	os.MkdirAll(dir, 0o755)
	out, e, err := d.CLI(append([]string{"--timeout", "60s", "volume", "mount", vol, dir}, args...)...)
	if err != nil {
		return dir, fmt.Errorf("mount %s on %s: %v: %s %s", vol, d.Name, err, out, strings.TrimSpace(e))
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir, nil
}

// sqlWriter commits numbered transactions through one long-running sqlite3
// process and records the last one sqlite3 reported committed.
type sqlWriter struct {
	acked atomic.Int64
	done  chan error
}

func startSQLWriter(t *testing.T, db, journal string) *sqlWriter {
	t.Helper()
	cmd := exec.Command("sqlite3", "-bail", db)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &sqlWriter{done: make(chan error, 1)}
	// synchronous=EXTRA: in rollback-journal mode the unlink of the journal
	// is the commit, and only EXTRA makes SQLite fsync the directory after
	// it (https://sqlite.org/pragma.html#pragma_synchronous).
	fmt.Fprintf(in, "PRAGMA journal_mode=%s; PRAGMA synchronous=EXTRA;\n"+
		"CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);\nSELECT 'ready';\n", journal)
	go func() {
		defer cmd.Wait()
		sc := bufio.NewScanner(out)
		next := int64(1)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "ready":
			case strings.HasPrefix(line, "ack "):
				n, _ := strconv.ParseInt(strings.TrimPrefix(line, "ack "), 10, 64)
				w.acked.Store(n)
			default:
				continue // PRAGMA answers
			}
			if _, err := fmt.Fprintf(in, "BEGIN; INSERT INTO t(id, v) VALUES(%d, 'row %d %s'); COMMIT; SELECT 'ack %d';\n",
				next, next, strings.Repeat("x", 200), next); err != nil {
				break
			}
			next++
		}
		in.Close()
		w.done <- fmt.Errorf("sqlite3 on %s stopped after %d commits: %v", db, w.acked.Load(), sc.Err())
	}()
	return w
}

// confWriter rewrites a config file the way careful programs do (write a
// temporary file, fsync, rename over, fsync the directory) and records the
// last version whose directory fsync returned.
type confWriter struct {
	acked atomic.Int64
	done  chan error
}

func startConfWriter(dir string) *confWriter {
	w := &confWriter{done: make(chan error, 1)}
	go func() {
		w.done <- func() error {
			for v := int64(1); ; v++ {
				tmp := filepath.Join(dir, ".app.conf.tmp")
				body := fmt.Sprintf("version=%d\n%s\n", v, strings.Repeat("setting=value\n", 50))
				f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
				if err != nil {
					return err
				}
				if _, err := f.WriteString(body); err != nil {
					f.Close()
					return err
				}
				if err := f.Sync(); err != nil {
					f.Close()
					return err
				}
				f.Close()
				if err := os.Rename(tmp, filepath.Join(dir, "app.conf")); err != nil {
					return err
				}
				d, err := os.Open(dir)
				if err != nil {
					return err
				}
				err = d.Sync()
				d.Close()
				if err != nil {
					return err
				}
				w.acked.Store(v)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}()
	return w
}

// h2Jar is Debian's H2 (libh2-java); the H2 scenario skips loudly without
// it or a JDK.
const h2Jar = "/usr/share/java/h2.jar"

func h2Available() string {
	if _, err := os.Stat(h2Jar); err != nil {
		return "SKIPPING H2: " + h2Jar + " is missing (scripts/deps.sh installs libh2-java)"
	}
	if _, err := exec.LookPath("java"); err != nil {
		return "SKIPPING H2: no java (scripts/deps.sh installs default-jdk-headless)"
	}
	return ""
}

// startH2Writer runs chaos/testdata/H2Writer.java against a database in dir.
func startH2Writer(t *testing.T, dir string) *sqlWriter {
	t.Helper()
	cmd := exec.Command("java", "-cp", h2Jar, "testdata/H2Writer.java", "write", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &sqlWriter{done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, err := strconv.ParseInt(strings.TrimPrefix(sc.Text(), "ack "), 10, 64); err == nil {
				w.acked.Store(n)
			}
		}
		cmd.Wait()
		w.done <- fmt.Errorf("H2 writer stopped after %d commits: %s", w.acked.Load(), lastLine(stderr.String()))
	}()
	return w
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func confVersion(t *testing.T, dir string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "app.conf"))
	if err != nil {
		t.Fatalf("reading the config after failover: %v", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	v, err := strconv.ParseInt(strings.TrimPrefix(first, "version="), 10, 64)
	if err != nil || !strings.HasSuffix(string(b), strings.Repeat("setting=value\n", 50)+"\n") {
		t.Fatalf("the config after failover is torn: %q", b)
	}
	return v
}

func sqlite(t *testing.T, db, sql string) string {
	t.Helper()
	out, err := exec.Command("sqlite3", db, sql).CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3 %s: %v: %s", db, err, out)
	}
	return strings.TrimSpace(string(out))
}

func needSQLite(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("SKIPPING: sqlite3 is not installed (scripts/deps.sh installs it)")
	}
}

// mountWhenFree retries mounting vol on d until the attach is granted (the
// failover timeout has to pass first) and reports when it was.
func mountWhenFree(t *testing.T, d *harness.Daemon, vol string, bound time.Duration) (string, time.Time) {
	dir, at, _ := mountWhenFreeDetect(t, d, vol, bound)
	return dir, at
}

// mountWhenFreeDetect is mountWhenFree that also reports when a refusal
// first said the holder was dead (zero if none did): gossip's detection.
func mountWhenFreeDetect(t *testing.T, d *harness.Daemon, vol string, bound time.Duration) (string, time.Time, time.Time) {
	t.Helper()
	var dir string
	var refusal string
	var detected time.Time
	harness.Eventually(t, bound, "mount "+vol+" on "+d.Name, func() (bool, string) {
		var err error
		dir, err = mountAt(t, d, vol)
		if err != nil && refusal == "" && strings.Contains(err.Error(), "attached to") {
			refusal = err.Error()
		}
		if err != nil && detected.IsZero() && strings.Contains(err.Error(), "(dead for") {
			detected = time.Now()
		}
		return err == nil, fmt.Sprint(err)
	})
	if refusal != "" {
		t.Logf("before the failover timeout: %s", refusal)
	}
	return dir, time.Now(), detected
}

// Issue "attach/failover", test 1: kill -9 host A (its brickd and its mount
// processes) while a database in WAL mode, one in rollback-journal mode and
// a config file are being committed on three volumes; host B mounts all
// three: the databases check clean, every acknowledged commit and config
// version is there, and B writes.
func TestFailoverKill(t *testing.T) {
	needFUSE(t)
	needSQLite(t)
	cl := harness.New(t, netFailoverKill)
	ds := startThree(t, cl)
	a, b := ds[1], ds[2] // 127.0.N.2 and .3
	vols := []string{"db-wal", "db-journal", "conf"}
	h2skip := h2Available()
	if h2skip == "" {
		vols = append(vols, "db-h2")
	} else {
		t.Log(h2skip)
	}
	for _, v := range vols {
		createVolume(t, a, v, "--replicas", "3", "--size", "1G")
	}
	dirs := map[string]string{}
	for _, v := range vols {
		dir, err := mountAt(t, a, v)
		if err != nil {
			t.Fatal(err)
		}
		dirs[v] = dir
	}
	wal := startSQLWriter(t, filepath.Join(dirs["db-wal"], "app.db"), "WAL")
	jnl := startSQLWriter(t, filepath.Join(dirs["db-journal"], "app.db"), "DELETE")
	conf := startConfWriter(dirs["conf"])
	h2 := &sqlWriter{done: make(chan error, 1)}
	if h2skip == "" {
		h2 = startH2Writer(t, dirs["db-h2"])
	} else {
		h2.done <- nil
	}
	harness.Eventually(t, 90*time.Second, "the writers commit", func() (bool, string) {
		return wal.acked.Load() >= 100 && jnl.acked.Load() >= 50 && conf.acked.Load() >= 20 && (h2skip != "" || h2.acked.Load() >= 50),
			fmt.Sprintf("wal %d, journal %d, conf %d, h2 %d", wal.acked.Load(), jnl.acked.Load(), conf.acked.Load(), h2.acked.Load())
	})
	a.Kill()
	a.KillMounts()
	killed := time.Now()
	ackWAL, ackJNL, ackConf, ackH2 := wal.acked.Load(), jnl.acked.Load(), conf.acked.Load(), h2.acked.Load()
	for _, w := range []chan error{wal.done, jnl.done, conf.done, h2.done} {
		select {
		case err := <-w:
			t.Logf("writer on A: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("a writer on the killed host did not stop")
		}
	}
	// The writers may have been acknowledged a last time between the
	// loads and the kill's effect: take the final values.
	ackWAL, ackJNL, ackConf = max(ackWAL, wal.acked.Load()), max(ackJNL, jnl.acked.Load()), max(ackConf, conf.acked.Load())
	ackH2 = max(ackH2, h2.acked.Load())
	t.Logf("killed host %s: acknowledged %d WAL commits, %d journal commits, %d H2 commits, config version %d",
		a.Name, ackWAL, ackJNL, ackH2, ackConf)

	bdirs := map[string]string{}
	var firstMount, tookOver, detected time.Time
	for i, v := range vols {
		var det time.Time
		bdirs[v], tookOver, det = mountWhenFreeDetect(t, b, v, 90*time.Second)
		if i == 0 {
			firstMount, detected = tookOver, det
		}
	}
	db := filepath.Join(bdirs["db-wal"], "app.db")
	sqlite(t, db, "INSERT INTO t(id, v) VALUES(1000000, 'written on B');")
	firstWrite := time.Now()
	for name, ack := range map[string]int64{"db-wal": ackWAL, "db-journal": ackJNL} {
		db := filepath.Join(bdirs[name], "app.db")
		if got := sqlite(t, db, "PRAGMA integrity_check;"); got != "ok" {
			t.Errorf("%s: integrity_check after failover: %s", name, got)
		}
		n, _ := strconv.ParseInt(sqlite(t, db, fmt.Sprintf("SELECT count(*) FROM t WHERE id <= %d;", ack)), 10, 64)
		if n != ack {
			t.Errorf("%s: %d of %d acknowledged transactions survived the failover", name, n, ack)
		}
	}
	if v := confVersion(t, bdirs["conf"]); v < ackConf {
		t.Errorf("config version %d after failover, %d was acknowledged", v, ackConf)
	}
	if h2skip == "" {
		out, err := exec.Command("java", "-cp", h2Jar, "testdata/H2Writer.java", "check", bdirs["db-h2"],
			strconv.FormatInt(ackH2, 10)).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != fmt.Sprintf("ok %d", ackH2) {
			t.Errorf("H2 after failover (%d commits acknowledged): %v: %s", ackH2, err, out)
		}
	}
	if got := sqlite(t, db, "SELECT v FROM t WHERE id = 1000000;"); got != "written on B" {
		t.Errorf("B's write reads back as %q", got)
	}
	det := "not seen (the holder was already dead at the first try)"
	if !detected.IsZero() {
		det = fmt.Sprintf("+%v", detected.Sub(killed).Round(100*time.Millisecond))
	}
	t.Logf("FAILOVER TIMELINE: kill -9 of %s at 0; gossip reports it dead by %s; first volume mounted on %s at +%v, all %d at +%v; first committed write (SQLite, WAL) at +%v",
		a.Name, det, b.Name, firstMount.Sub(killed).Round(time.Millisecond), len(vols), tookOver.Sub(killed).Round(time.Millisecond),
		firstWrite.Sub(killed).Round(time.Millisecond))
	// Several volumes failed over together, each at a new epoch headed by B.
	for _, v := range vols {
		var info struct {
			HeadName string `json:"head_name"`
			Epoch    uint64 `json:"epoch"`
		}
		if err := b.JSON(&info, "volume", "inspect", v); err != nil || info.HeadName != b.Name {
			t.Errorf("%s after failover: head %q (%v)", v, info.HeadName, err)
		}
	}
}

// startWriterProcess runs writer in a process of its own (see TestMain)
// and records what it acknowledges in l; done reports how it ended.
func startWriterProcess(t *testing.T, dir string, l *ledger) <-chan error {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BRICK_CHAOS_WRITER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ack" {
				continue
			}
			var sum [32]byte
			if b, err := hex.DecodeString(f[2]); err == nil && len(b) == 32 {
				copy(sum[:], b)
				l.add(f[1], sum)
			}
		}
		cmd.Wait()
		done <- fmt.Errorf("%s", strings.TrimSpace(stderr.String()))
	}()
	return done
}

// writeSync creates (or opens) path, writes to it and fsyncs it: the unit of
// a write a deposed head must not complete.
func writeSync(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write([]byte("late")); err != nil {
		return err
	}
	return f.Sync()
}

var startSeqRE = regexp.MustCompile(`msg=fenced .*start_seq=(\d+)`)

// takeoverSeq is the sequence number B's head started at, from its log.
func takeoverSeq(t *testing.T, d *harness.Daemon, vol string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.DataDir, "mounts", vol+".log"))
	if err != nil {
		t.Fatal(err)
	}
	m := startSeqRE.FindAllStringSubmatch(string(b), -1)
	if len(m) == 0 {
		t.Fatalf("no 'fenced' line with start_seq in %s's mount log of %s", d.Name, vol)
	}
	n, _ := strconv.ParseUint(m[len(m)-1][1], 10, 64)
	return n
}

// opsOfEpoch lists the sequence numbers of the ops of epoch in the op log
// of a replica directory (its daemon stopped).
func opsOfEpoch(t *testing.T, dir string, epoch uint64) []uint64 {
	t.Helper()
	r, err := replica.OpenReplica(dir, replica.ReplicaOptions{})
	if err != nil {
		t.Fatalf("opening replica %s: %v", dir, err)
	}
	defer r.Close()
	var out []uint64
	first, _ := r.LogRange()
	if first == 0 {
		return nil
	}
	if err := r.ScanOps(first-1, func(op *brickpb.Op) error {
		if op.Epoch == epoch {
			out = append(out, op.Seq)
		}
		return nil
	}); err != nil {
		t.Fatalf("scanning the op log of %s: %v", dir, err)
	}
	return out
}

// Issue "attach/failover", test 2: a partition, not a death. Host A (its
// brickd and its mount process) is frozen with SIGSTOP while it writes; B
// takes the volume over; A thaws: every write A attempts fails, no brick
// holds an op of A's epoch after the takeover, and the data is B's.
func TestFailoverPartition(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netFailoverPartition)
	ds := startThree(t, cl)
	a, b := ds[1], ds[2]
	createVolume(t, a, "part", "--replicas", "3", "--size", "1G")
	adir, err := mountAt(t, a, "part")
	if err != nil {
		t.Fatal(err)
	}
	epochA := volumeOf(t, a, "part").Epoch
	l := &ledger{files: map[string][32]byte{}}
	done := startWriterProcess(t, adir, l)
	harness.Eventually(t, 60*time.Second, "A writes", func() (bool, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.files) >= 30, fmt.Sprint(len(l.files))
	})
	a.Stop()
	a.SignalMounts(syscall.SIGSTOP)
	t.Logf("froze host %s (brickd and mount process) at epoch %d", a.Name, epochA)
	bdir, _ := mountWhenFree(t, b, "part", 90*time.Second)
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(bdir, fmt.Sprintf("b%03d", i)), []byte("from B"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	syncDir(t, bdir)
	a.SignalMounts(syscall.SIGCONT)
	a.Cont()
	select {
	case err = <-done:
		t.Logf("A's writer after the thaw: %v", err)
	case <-time.After(30 * time.Second):
		t.Errorf("A's writer kept writing after it was fenced")
	}
	// Every attempt from A fails now, fsync included.
	for i := range 5 {
		name := filepath.Join(adir, fmt.Sprintf("late%d", i))
		if err := writeSync(name); err == nil {
			t.Errorf("host %s, deposed, wrote and fsync'd %s", a.Name, name)
		}
	}
	out, _, _ := a.CLI("volume", "status", "part")
	t.Logf("volume status on the deposed host:\n%s", out)
	if !strings.Contains(out, "fenced by "+b.Name) {
		t.Errorf("status on the deposed host does not say it was fenced by %s:\n%s", b.Name, out)
	}
	// B's view has every file A had acknowledged before the freeze and B's
	// own, and none of A's late attempts.
	checkLedger(t, l, bdir)
	for i := range 5 {
		if _, err := os.Stat(filepath.Join(bdir, fmt.Sprintf("late%d", i))); err == nil {
			t.Errorf("a write of the deposed host reached the volume: late%d", i)
		}
	}
	vol := volumeOf(t, b, "part")
	waitISR(t, b, "part", 3, 90*time.Second)
	syncDir(t, bdir)
	var rdirs []string
	for _, d := range ds {
		rdirs = append(rdirs, replicaDir(d, vol.ID))
	}
	sameTrees(t, rdirs...)
	start := takeoverSeq(t, b, "part")
	if _, _, err := b.CLI("volume", "unmount", bdir); err != nil {
		t.Fatal(err)
	}
	syscall.Unmount(adir, syscall.MNT_DETACH)
	a.KillMounts()
	for _, d := range ds {
		d.Term()
	}
	for _, d := range ds {
		for _, seq := range opsOfEpoch(t, filepath.Dir(replicaDir(d, vol.ID)), epochA) {
			if seq > start {
				t.Errorf("brick %s holds op %d of the deposed epoch %d, after the takeover at seq %d", d.Name, seq, epochA, start)
			}
		}
	}
}

// Issue "attach/failover", test 3: attaching a volume whose holder is alive
// is refused with the holder's name; --force takes it over and fences the
// holder, whose writes then fail.
func TestAttachRefusedThenForced(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netFailoverForce)
	ds := startThree(t, cl)
	a, b := ds[1], ds[2]
	createVolume(t, a, "held", "--replicas", "3", "--size", "1G")
	adir, err := mountAt(t, a, "held")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(adir, "before"), []byte("A"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncDir(t, adir)
	before := volumeOf(t, a, "held")
	_, e, err := b.CLI("volume", "attach", "held")
	if err == nil || !strings.Contains(e, "attached to "+a.Name) || !strings.Contains(e, "alive") || !strings.Contains(e, "--force") {
		t.Fatalf("attach while %s holds the volume: err %v, stderr %q; want a refusal naming %s, its state and --force", a.Name, err, e, a.Name)
	}
	t.Logf("refused: %s", strings.TrimSpace(e))
	if _, err := mountAt(t, b, "held"); err == nil || !strings.Contains(err.Error(), "attached to "+a.Name) {
		t.Fatalf("mount while %s holds the volume: %v", a.Name, err)
	}
	if after := volumeOf(t, a, "held"); after.Epoch != before.Epoch {
		t.Fatalf("a refused attach moved the epoch from %d to %d", before.Epoch, after.Epoch)
	}
	// A forced attach to n1 that mounts nothing: no new head opens a stream,
	// yet the holder is fenced, because every brick's daemon raises its
	// replica's promise to the catalog's epoch (self-fencing).
	if _, e, err := ds[0].CLI("volume", "attach", "held", "--force"); err != nil {
		t.Fatalf("forced attach to %s: %v %s", ds[0].Name, err, e)
	}
	harness.Eventually(t, 10*time.Second, "the holder is fenced by the catalog alone", func() (bool, string) {
		err := writeSync(filepath.Join(adir, "after-attach"))
		return err != nil, fmt.Sprint("write+fsync: ", err)
	})
	bdir, err := mountAt(t, b, "held", "--force")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(bdir, "before")); err != nil || string(b) != "A" {
		t.Fatalf("B reads %q, %v", b, err)
	}
	// The holder is fenced: its next write+fsync fails.
	err = writeSync(filepath.Join(adir, "after"))
	if err == nil {
		t.Fatalf("the fenced holder %s still writes", a.Name)
	}

	t.Logf("fenced holder's write: %v", err)
	harness.Eventually(t, 10*time.Second, "status on A says fenced", func() (bool, string) {
		out, _, _ := a.CLI("volume", "status", "held")
		return strings.Contains(out, "fenced by "+b.Name), out
	})
	// Idempotent: attaching again on the holder changes nothing.
	e1 := volumeOf(t, b, "held").Epoch
	if _, e, err := b.CLI("volume", "attach", "held"); err != nil {
		t.Fatalf("re-attach on the holder: %v %s", err, e)
	}
	if e2 := volumeOf(t, b, "held").Epoch; e2 != e1 {
		t.Fatalf("re-attach on the holder moved the epoch %d → %d", e1, e2)
	}
	// A resize reaches the mounted file system online; shrinking is refused.
	if _, e, err := a.CLI("volume", "resize", "held", "3G"); err != nil {
		t.Fatalf("resize: %v %s", err, e)
	}
	harness.Eventually(t, 20*time.Second, "df on B shows the new size", func() (bool, string) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(bdir, &st); err != nil {
			return false, err.Error()
		}
		size := uint64(st.Blocks) * uint64(st.Bsize)
		return size == 3<<30, fmt.Sprint(size, " bytes")
	})
	if _, e, err := a.CLI("volume", "resize", "held", "1G"); err == nil || !strings.Contains(e, "only grow") {
		t.Fatalf("shrinking resize: %v %q", err, e)
	}
}

// Issue "attach/failover", test 4: the ISR shrank to one brick before the
// head died; the takeover must use that brick's data, never the stale
// replicas of the others, and waits for it rather than serve them.
func TestFailoverAfterISRShrank(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netFailoverShrunk)
	// Two disk-less voters keep Raft's quorum while bricks come and go.
	t1 := cl.Add("t1", "BRICK_NO_DISK=true").Start()
	t2 := cl.Add("t2", "BRICK_NO_DISK=true", "BRICK_PEERS="+t1.GossipAddr()).Start()
	var bricks []*harness.Daemon
	for _, n := range []string{"a", "b", "c"} {
		bricks = append(bricks, cl.Add(n, "BRICK_PEERS="+t1.GossipAddr()).Start())
	}
	for _, d := range append([]*harness.Daemon{t1, t2}, bricks...) {
		waitRoles(t, d, 60*time.Second, func(ps []peer) bool { return voters(ps) == 5 && leaderOf(ps) != "" })
	}
	a, b, cc := bricks[0], bricks[1], bricks[2]
	createVolume(t, t1, "solo", "--replicas", "3", "--size", "1G", "--min-isr", "1")
	adir, err := mountAt(t, a, "solo")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(adir, "v"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncDir(t, adir)
	b.Kill()
	cc.Kill()
	// Only A's brick is left in the ISR; what is written now exists there only.
	if err := os.WriteFile(filepath.Join(adir, "v"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(adir, "v"))
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitISR(t, t1, "solo", 1, 30*time.Second)
	a.Kill()
	a.KillMounts()
	b.Start()
	cc.Start()
	// B holds a stale replica: once the takeover is allowed, mounting must
	// still not serve it.
	harness.Eventually(t, 60*time.Second, "a mount on b refused for want of an in-sync brick", func() (bool, string) {
		_, err := mountAt(t, b, "solo")
		if err == nil {
			t.Fatalf("the volume was mounted from stale replicas while its only in-sync brick was down")
		}
		return strings.Contains(err.Error(), "in-sync brick"), err.Error()
	})
	a.Start()
	bdir, _ := mountWhenFree(t, b, "solo", 90*time.Second)
	got, err := os.ReadFile(filepath.Join(bdir, "v"))
	if err != nil || string(got) != "new" {
		t.Fatalf("after failover the file reads %q (%v), want the in-sync brick's \"new\"", got, err)
	}
}
