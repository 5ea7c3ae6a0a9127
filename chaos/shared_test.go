package chaos

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"github.com/brickvol/brick/chaos/harness"
)

const (
	netSharedTwoWriters = 70 + iota
	netSharedPosix
	netSharedHeadKill
	netSharedClassic
	netSharedStale
	netMountProcessDies
	netSharedHeadFrozen
)

// sharedMount mounts vol on d at d's own directory and unmounts it at the
// end of the test.
func sharedMount(t *testing.T, d *harness.Daemon, vol string) string {
	t.Helper()
	dir, err := mountAt(t, d, vol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.Running() {
			d.CLI("--timeout", "60s", "volume", "unmount", dir)
		}
	})
	return dir
}

// Issue test 2: two hosts write different files into one shared volume at
// once and each sees the other's; two hosts append records to one log
// under flock and none is lost or torn.
func TestSharedTwoWriters(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netSharedTwoWriters)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "web", "--replicas", "3", "--access", "shared", "--size", "1G")
	dirs := []string{sharedMount(t, ds[0], "web"), sharedMount(t, ds[1], "web")}
	if v := volumeOf(t, ds[2], "web"); v.Head != "n1" || len(v.Attachments) != 2 {
		t.Fatalf("after two mounts: head %q, %d attachments (%+v)", v.Head, len(v.Attachments), v)
	}

	// Different files from both hosts at once, each fsync'd.
	const files = 40
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for h, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < files && errs[h] == nil; i++ {
				errs[h] = writeFileSync(filepath.Join(dir, fmt.Sprintf("host%d-%03d", h, i)), sharedContent(h, i))
			}
		}()
	}
	wg.Wait()
	for h, err := range errs {
		if err != nil {
			t.Fatalf("host %d: %v", h, err)
		}
	}
	for h, dir := range dirs {
		other := 1 - h
		harness.Eventually(t, 10*time.Second, fmt.Sprintf("host %d sees host %d's files", h, other), func() (bool, string) {
			for i := 0; i < files; i++ {
				b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("host%d-%03d", other, i)))
				if err != nil {
					return false, err.Error()
				}
				if !bytes.Equal(b, sharedContent(other, i)) {
					return false, fmt.Sprintf("host%d-%03d has %d bytes, not what was written", other, i, len(b))
				}
			}
			return true, ""
		})
	}
	t.Logf("each of 2 hosts wrote %d files and read the other's %d back", files, files)

	// Close-to-open: a file rewritten and closed on one host shows its new
	// content when opened on the other.
	p0, p1 := filepath.Join(dirs[0], "cto"), filepath.Join(dirs[1], "cto")
	for i := 0; i < 20; i++ {
		want := []byte(strings.Repeat(fmt.Sprintf("version %d\n", i), i+1))
		if err := os.WriteFile(p0, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("close-to-open, round %d: the other host read %q", i, got)
		}
	}

	// Appends under flock from both hosts: every record whole, none lost.
	const records = 150
	log := []string{filepath.Join(dirs[0], "app.log"), filepath.Join(dirs[1], "app.log")}
	if err := os.WriteFile(log[0], nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for h := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[h] = appendUnderFlock(log[h], h, records)
		}()
	}
	wg.Wait()
	for h, err := range errs {
		if err != nil {
			t.Fatalf("appender on host %d: %v", h, err)
		}
	}
	b, err := os.ReadFile(log[1])
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, b, records)

	// A host that disappears loses its locks: n3 takes an exclusive flock,
	// its mount process dies, and once its lease runs out n2 gets the lock.
	d3 := sharedMount(t, ds[2], "web")
	f3, err := os.Open(filepath.Join(d3, "app.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f3.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("flock on n3: %v", err)
	}
	f2, err := os.Open(log[1])
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := syscall.Flock(int(f2.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Fatalf("flock on n2 while n3 holds it: %v, want EWOULDBLOCK", err)
	}
	ds[2].KillMounts()
	f3.Close() // the mount is gone: nothing reaches the head
	killed := time.Now()
	harness.Eventually(t, 60*time.Second, "n2 gets the lock of the vanished n3", func() (bool, string) {
		err := syscall.Flock(int(f2.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("n3's mount process died holding an exclusive flock; n2 got the lock %.1fs later (the lease)", time.Since(killed).Seconds())
	syscall.Flock(int(f2.Fd()), syscall.LOCK_UN)

	// The head unmounts cleanly: the other mounting host becomes head at
	// the next epoch and carries on without remounting.
	before := volumeOf(t, ds[1], "web")
	if _, e, err := ds[0].CLI("--timeout", "60s", "volume", "unmount", dirs[0]); err != nil {
		t.Fatalf("unmount the head: %v: %s", err, e)
	}
	harness.Eventually(t, 30*time.Second, "n2 heads after n1 unmounted", func() (bool, string) {
		v := volumeOf(t, ds[1], "web")
		return v.Head == "n2" && v.Epoch > before.Epoch, fmt.Sprintf("head %q epoch %d", v.Head, v.Epoch)
	})
	if err := writeFileSync(filepath.Join(dirs[1], "after-handover"), []byte("still here")); err != nil {
		t.Fatalf("writing on n2 after it became head: %v", err)
	}
	if got := read1(t, filepath.Join(dirs[1], "host0-000")); !bytes.Equal(got, sharedContent(0, 0)) {
		t.Fatalf("n1's file after the handover: %d bytes, not what was written", len(got))
	}
	t.Logf("n1 unmounted; n2 became head at epoch %d and carried on", volumeOf(t, ds[1], "web").Epoch)
}

func read1(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFileSync writes b to a new file at path and fsyncs it.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sharedContent(h, i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("host %d file %d|", h, i)), 200+i*37)
}

// appendUnderFlock appends n records "h <host> <i> <pad> <sum>\n", each
// under an exclusive flock of the file, opening it once.
func appendUnderFlock(path string, host, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for i := range n {
		body := fmt.Sprintf("h%d %04d %s", host, i, strings.Repeat(string(rune('a'+host)), 50+i%40))
		rec := fmt.Sprintf("%s %x\n", body, sha256.Sum256([]byte(body)))
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			return fmt.Errorf("flock, record %d: %w", i, err)
		}
		_, err := f.WriteString(rec)
		if uerr := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err == nil {
			err = uerr
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
	}
	return f.Sync()
}

// checkRecords checks that the log holds every record of both appenders
// exactly once, each whole, each host's in order.
func checkRecords(t *testing.T, b []byte, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	next := [2]int{}
	for k, l := range lines {
		i := strings.LastIndexByte(l, ' ')
		if i < 0 || fmt.Sprintf("%x", sha256.Sum256([]byte(l[:i]))) != l[i+1:] {
			t.Fatalf("line %d of %d is torn or interleaved: %.80q", k, len(lines), l)
		}
		var h, seq int
		if _, err := fmt.Sscanf(l, "h%d %d", &h, &seq); err != nil || h < 0 || h > 1 {
			t.Fatalf("line %d: %q", k, l)
		}
		if seq != next[h] {
			t.Fatalf("line %d: host %d record %d, want %d (a record was lost or doubled)", k, h, seq, next[h])
		}
		next[h]++
	}
	if next[0] != n || next[1] != n {
		t.Fatalf("records: host 0 %d, host 1 %d, want %d each", next[0], next[1], n)
	}
	t.Logf("%d records from 2 hosts appended under flock: none lost, none torn", len(lines))
}

// Issue test 4: posixtest on a mount that is not the head.
func TestSharedPosixOnNonHead(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netSharedPosix)
	ds := startThree(t, cl)
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
			vol := fmt.Sprintf("sx-%d", i)
			createVolume(t, ds[0], vol, "--replicas", "2", "--access", "shared", "--size", "2G")
			sharedMount(t, ds[0], vol) // the head
			dir := sharedMount(t, ds[1], vol)
			if v := volumeOf(t, ds[1], vol); v.Head != "n1" {
				t.Fatalf("head %q, want n1", v.Head)
			}
			fn(t, dir)
		})
	}
}

// Issue test 3: kill -9 the head host (its brickd and its mount process)
// while two other hosts write with fsync and read: one of them becomes
// head, both carry on without remounting, no acknowledged fsync is lost.
func TestSharedHeadKill(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netSharedHeadKill)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "web", "--replicas", "3", "--access", "shared", "--size", "2G")
	sharedMount(t, ds[0], "web") // n1: the head
	dirs := []string{sharedMount(t, ds[1], "web"), sharedMount(t, ds[2], "web")}
	if v := volumeOf(t, ds[1], "web"); v.Head != "n1" {
		t.Fatalf("head %q, want n1", v.Head)
	}
	type run struct {
		l       *ledger
		longest time.Duration
		n       int
		err     error
		reads   int
		readErr error
	}
	runs := make([]*run, 2)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for h, dir := range dirs {
		sub := filepath.Join(dir, fmt.Sprintf("w%d", h))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		r := &run{l: &ledger{files: map[string][32]byte{}, rewriteOnEIO: true}}
		runs[h] = r
		wg.Add(2)
		go func() {
			defer wg.Done()
			r.longest, r.n, r.err = writer(t, sub, r.l, stop)
		}()
		go func() { // reads what the other host's writer acknowledged
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				other := runs[1-h]
				if other == nil {
					continue
				}
				other.l.mu.Lock()
				var name string
				var sum [32]byte
				for name, sum = range other.l.files {
					break
				}
				other.l.mu.Unlock()
				if name == "" {
					continue
				}
				b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("w%d", 1-h), name))
				if err == nil && sha256.Sum256(b) != sum {
					err = fmt.Errorf("%s read back other bytes than acknowledged", name)
				}
				if err != nil {
					r.readErr = err
					return
				}
				r.reads++
			}
		}()
	}
	time.Sleep(3 * time.Second)
	killedAt := time.Now()
	ds[0].KillMounts()
	ds[0].Kill()
	t.Logf("killed the head host n1 (brickd and mount process)")
	var newHead string
	harness.Eventually(t, 90*time.Second, "another mounting host is head", func() (bool, string) {
		v := volumeOf(t, ds[1], "web")
		newHead = v.Head
		return v.Head == "n2" || v.Head == "n3", fmt.Sprintf("head %q epoch %d %s", v.Head, v.Epoch, v.State)
	})
	t.Logf("%s became head %.1fs after the kill", newHead, time.Since(killedAt).Seconds())
	// Both writers make progress under the new head.
	before := []int{len(runs[0].l.files), len(runs[1].l.files)}
	harness.Eventually(t, 60*time.Second, "both writers progress under the new head", func() (bool, string) {
		var s []string
		ok := true
		for h, r := range runs {
			r.l.mu.Lock()
			n := len(r.l.files)
			r.l.mu.Unlock()
			if n < before[h]+20 {
				ok = false
			}
			if r.err != nil {
				t.Fatalf("writer on %s: %v", ds[h+1].Name, r.err)
			}
			s = append(s, fmt.Sprint(n))
		}
		return ok, strings.Join(s, ", ")
	})
	close(stop)
	wg.Wait()
	for h, r := range runs {
		if r.err != nil {
			t.Errorf("writer on %s stopped: %v", ds[h+1].Name, r.err)
		}
		if r.readErr != nil {
			t.Errorf("reader on %s: %v", ds[h+1].Name, r.readErr)
		}
		t.Logf("%s: %d files acknowledged, longest write+fsync %v (the failover stall), %d reads of the other host's files, %d fsyncs failed with EIO across the head change (rewritten)", ds[h+1].Name, r.n, r.longest.Round(time.Millisecond), r.reads, r.l.eio)
		for _, dir := range dirs {
			checkLedger(t, r.l, filepath.Join(dir, fmt.Sprintf("w%d", h)))
		}
	}
}

// fetcher GETs the files of a web server over the shared volume in a loop,
// checking each body against its checksum; it never accepts wrong bytes.
type fetcher struct {
	base  string
	files map[string][32]byte

	mu       sync.Mutex
	ok, fail int
	wrong    []string
	lastOK   time.Time
	gap      time.Duration // longest time between two good fetches
	lastErr  string
}

func (f *fetcher) run(stop <-chan struct{}) {
	client := &http.Client{Timeout: 10 * time.Second}
	names := make([]string, 0, len(f.files))
	for n := range f.files {
		names = append(names, n)
	}
	sort.Strings(names)
	f.lastOK = time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		name := names[i%len(names)]
		resp, err := client.Get(f.base + "/" + name)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
			}
		}
		f.mu.Lock()
		switch {
		case err != nil:
			f.fail++
			f.lastErr = err.Error()
		case sha256.Sum256(body) != f.files[name]:
			f.wrong = append(f.wrong, name)
		default:
			f.ok++
			if g := time.Since(f.lastOK); g > f.gap {
				f.gap = g
			}
			f.lastOK = time.Now()
		}
		f.mu.Unlock()
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// phase returns the counts since the last call and resets them.
func (f *fetcher) phase() (ok, fail int, wrong []string, gap time.Duration, lastErr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ok, fail, wrong, gap, lastErr = f.ok, f.fail, f.wrong, f.gap, f.lastErr
	f.ok, f.fail, f.wrong, f.gap, f.lastErr = 0, 0, nil, 0, ""
	return
}

// classicCluster is s1 and s2 (bricks) and web (a disk-less tie-breaker
// that mounts the volume and serves its files over HTTP).
func classicCluster(t *testing.T, subnet int) (s1, s2, web *harness.Daemon, dir string, f *fetcher) {
	cl := harness.New(t, subnet)
	s1 = cl.Add("s1").Start()
	s2 = cl.Add("s2", "BRICK_PEERS="+s1.GossipAddr()).Start()
	web = cl.Add("web", "BRICK_NO_DISK=true", "BRICK_PEERS="+s1.GossipAddr()).Start()
	for _, d := range []*harness.Daemon{s1, s2, web} {
		waitRoles(t, d, 60*time.Second, func(ps []peer) bool { return voters(ps) == 3 && leaderOf(ps) != "" })
	}
	createVolume(t, web, "game", "--replicas", "2", "--min-isr", "1", "--access", "shared", "--size", "1G")
	dir = sharedMount(t, web, "game")
	files := map[string][32]byte{}
	for i := range 12 {
		b := bytes.Repeat([]byte(fmt.Sprintf("level %d asset|", i)), 3000+i*511)
		name := fmt.Sprintf("asset-%02d.bin", i)
		if err := writeFileSync(filepath.Join(dir, name), b); err != nil {
			t.Fatal(err)
		}
		files[name] = sha256.Sum256(b)
	}
	ln, err := net.Listen("tcp", web.IP+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s1, s2, web, dir, &fetcher{base: "http://" + ln.Addr().String(), files: files}
}

// expectServing lets the fetcher run for d and requires every fetch in that
// time to have succeeded.
func expectServing(t *testing.T, f *fetcher, what string, d time.Duration) time.Duration {
	t.Helper()
	f.phase()
	time.Sleep(d)
	ok, fail, wrong, gap, lastErr := f.phase()
	if len(wrong) > 0 {
		t.Fatalf("%s: WRONG BYTES served for %v", what, wrong)
	}
	if fail > 0 || ok == 0 {
		t.Fatalf("%s: %d fetches failed, %d succeeded (last error: %s)", what, fail, ok, lastErr)
	}
	t.Logf("%s: %d fetches, all good; longest gap between good fetches %v", what, ok, gap.Round(time.Millisecond))
	return gap
}

// Issue test 1: the classic two-server setup. Stop either storage host and
// the web tier keeps serving; stop both and fetches fail, never with wrong
// bytes; start one and it serves again, content identical.
func TestSharedClassicTwoServers(t *testing.T) {
	needFUSE(t)
	s1, s2, web, _, f := classicCluster(t, netSharedClassic)
	stop := make(chan struct{})
	defer close(stop)
	go f.run(stop)
	var longest time.Duration
	longest = max(longest, expectServing(t, f, "both servers up", 3*time.Second))

	s2.Term()
	longest = max(longest, expectServing(t, f, "s2 stopped", 10*time.Second))

	s2.Start()
	waitISR(t, web, "game", 2, 60*time.Second)
	s1.Term()
	longest = max(longest, expectServing(t, f, "s2 back and healed, s1 stopped", 10*time.Second))

	s2.Term()
	f.phase()
	time.Sleep(8 * time.Second)
	ok, fail, wrong, _, lastErr := f.phase()
	if len(wrong) > 0 {
		t.Fatalf("both servers stopped: WRONG BYTES served for %v", wrong)
	}
	if fail == 0 {
		t.Fatalf("both servers stopped: %d fetches succeeded and none failed", ok)
	}
	t.Logf("both servers stopped: %d fetches failed, none with wrong bytes (%d still served before the stall was noticed); last error: %s", fail, ok, lastErr)

	// Nothing was written while s1 was away: it is level and rejoins alone.
	s1.Start()
	harness.Eventually(t, 90*time.Second, "fetches succeed again with only s1", func() (bool, string) {
		f.phase()
		time.Sleep(time.Second)
		ok, fail, wrong, _, lastErr := f.phase()
		if len(wrong) > 0 {
			t.Fatalf("s1 restarted: WRONG BYTES served for %v", wrong)
		}
		return ok > 0 && fail == 0, fmt.Sprintf("%d ok, %d failed: %s", ok, fail, lastErr)
	})
	longest = max(longest, expectServing(t, f, "s1 back alone", 5*time.Second))
	t.Logf("longest gap between good fetches while one server was up: %v", longest.Round(time.Millisecond))
}

// Issue test 1, variant: a file changes while s1 is away; then s2 stops
// and s1 starts. s1 lacks the change, so the volume stays unavailable
// (EIO, and the status says why) until s2 returns: never stale bytes.
func TestSharedClassicStaleServer(t *testing.T) {
	needFUSE(t)
	s1, s2, web, dir, f := classicCluster(t, netSharedStale)
	stop := make(chan struct{})
	defer close(stop)
	go f.run(stop)
	expectServing(t, f, "both servers up", 2*time.Second)

	s1.Term()
	// The change drops s1 from the ISR (it cannot acknowledge it).
	changed := bytes.Repeat([]byte("the new level 3|"), 4000)
	if err := writeFileSync(filepath.Join(dir, "asset-03.bin"), changed); err != nil {
		t.Fatal(err)
	}
	waitISR(t, web, "game", 1, 60*time.Second)
	f.mu.Lock()
	f.files["asset-03.bin"] = sha256.Sum256(changed)
	f.mu.Unlock()
	expectServing(t, f, "s1 stopped, asset-03 changed", 3*time.Second)

	s2.Term()
	s1.Start()
	f.phase()
	time.Sleep(15 * time.Second)
	ok, fail, wrong, _, lastErr := f.phase()
	if len(wrong) > 0 {
		t.Fatalf("only the stale s1 up: WRONG (stale) BYTES served for %v", wrong)
	}
	if ok > 0 {
		t.Fatalf("only the stale s1 up: %d fetches succeeded (%d failed)", ok, fail)
	}
	v := volumeOf(t, web, "game")
	t.Logf("only the stale s1 up: %d fetches failed, none succeeded; last error: %s; volume state: %s", fail, lastErr, v.State)
	readAt := time.Now()
	if _, err := os.ReadFile(filepath.Join(dir, "asset-03.bin")); err == nil {
		t.Fatalf("reading on the mount succeeded with only the stale brick up")
	} else {
		t.Logf("read on the mount failed after %v: %v", time.Since(readAt).Round(time.Millisecond), err)
	}
	out, _, _ := web.CLI("volume", "status", "game")
	t.Logf("volume status with only the stale s1 up:\n%s", out)

	s2.Start()
	harness.Eventually(t, 90*time.Second, "fetches succeed once s2 is back", func() (bool, string) {
		f.phase()
		time.Sleep(time.Second)
		ok, fail, wrong, _, lastErr := f.phase()
		if len(wrong) > 0 {
			t.Fatalf("s2 back: WRONG BYTES served for %v", wrong)
		}
		return ok > 0 && fail == 0, fmt.Sprintf("%d ok, %d failed: %s", ok, fail, lastErr)
	})
	waitISR(t, web, "game", 2, 90*time.Second)
	expectServing(t, f, "s2 back, s1 healed", 3*time.Second)
}

// A mount process that dies while its host's brickd lives (a crash, an
// OOM kill) does not hold its volume hostage: brickd notices within its
// reconcile interval, cleans up the mount point and detaches. A shared
// volume's head passes to another mounting host, which carries on; a
// single volume can be mounted elsewhere at once, without --force.
func TestMountProcessDies(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netMountProcessDies)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "web", "--replicas", "2", "--access", "shared", "--size", "1G")
	createVolume(t, ds[0], "db", "--replicas", "2", "--size", "1G")
	headDir := sharedMount(t, ds[0], "web")
	other := sharedMount(t, ds[1], "web")
	dbDir, err := mountAt(t, ds[0], "db")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFileSync(filepath.Join(other, "before"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := writeFileSync(filepath.Join(dbDir, "before"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	ds[0].KillMounts() // brickd on n1 lives on
	harness.Eventually(t, 30*time.Second, "n2 heads web", func() (bool, string) {
		v := volumeOf(t, ds[1], "web")
		return v.Head == "n2", fmt.Sprintf("head %q epoch %d", v.Head, v.Epoch)
	})
	if err := writeFileSync(filepath.Join(other, "after"), []byte("after")); err != nil {
		t.Fatalf("writing on n2 after n1's mount process died: %v", err)
	}
	t.Logf("n1's mount process (web's head) killed; n2 heads web and writes %.1fs later", time.Since(killed).Seconds())
	harness.Eventually(t, 30*time.Second, "n1's dead mount points are cleaned up", func() (bool, string) {
		return !isMounted(headDir) && !isMounted(dbDir), fmt.Sprint(isMounted(headDir), isMounted(dbDir))
	})
	// db was released too: n2 mounts it without --force, while n1 lives.
	harness.Eventually(t, 30*time.Second, "db detached from n1", func() (bool, string) {
		v := volumeOf(t, ds[1], "db")
		return len(v.Attachments) == 0, fmt.Sprint(v.Attachments)
	})
	dir2, err := mountAt(t, ds[1], "db")
	if err != nil {
		t.Fatalf("mounting db on n2 after n1's mount process died: %v", err)
	}
	if got := read1(t, filepath.Join(dir2, "before")); string(got) != "before" {
		t.Fatalf("db on n2: %q", got)
	}
	t.Logf("db mounted on n2 %.1fs after n1's mount process died, without --force", time.Since(killed).Seconds())
	ds[1].CLI("--timeout", "60s", "volume", "unmount", dir2)
}

// The head's host freezes (SIGSTOP of its brickd and mount process: a
// partition that sends no reset): calls to it hang until the Share
// connection's keepalive gives up, another mounting host takes the head
// over once gossip has had the frozen host dead for the failover timeout,
// and the writer on it carries on. Thawed, the old head finds itself
// fenced, attaches again as an ordinary host and serves its mount from the
// new head: a write there is read on another host.
func TestSharedHeadFrozen(t *testing.T) {
	needFUSE(t)
	cl := harness.New(t, netSharedHeadFrozen)
	ds := startThree(t, cl)
	createVolume(t, ds[0], "web", "--replicas", "3", "--access", "shared", "--size", "1G")
	d1 := sharedMount(t, ds[0], "web")
	d2 := sharedMount(t, ds[1], "web")
	if v := volumeOf(t, ds[1], "web"); v.Head != "n1" {
		t.Fatalf("head %q, want n1", v.Head)
	}
	l := &ledger{files: map[string][32]byte{}, rewriteOnEIO: true}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var longest time.Duration
	var n int
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		longest, n, werr = writer(t, d2, l, stop)
	}()
	// The head's host writes too, from a process of its own (a process
	// with a file open on a frozen mount cannot fork: see TestMain).
	w1 := filepath.Join(d1, "w1")
	if err := os.Mkdir(w1, 0o755); err != nil {
		t.Fatal(err)
	}
	l1 := &ledger{files: map[string][32]byte{}}
	startWriterProcess(t, w1, l1)
	epoch1 := volumeOf(t, ds[1], "web").Epoch
	time.Sleep(2 * time.Second) // both writers under way
	frozen := time.Now()
	ds[0].Stop()
	ds[0].SignalMounts(syscall.SIGSTOP)
	t.Logf("froze the head host n1 (brickd and mount process)")
	harness.Eventually(t, 90*time.Second, "another host heads web", func() (bool, string) {
		v := volumeOf(t, ds[1], "web")
		return v.Head == "n2" || v.Head == "n3", fmt.Sprintf("head %q epoch %d", v.Head, v.Epoch)
	})
	t.Logf("%s heads web %.1fs after n1 froze", volumeOf(t, ds[1], "web").Head, time.Since(frozen).Seconds())
	before := func() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.files) }()
	harness.Eventually(t, 60*time.Second, "the writer on n2 carries on", func() (bool, string) {
		l.mu.Lock()
		k := len(l.files)
		l.mu.Unlock()
		if werr != nil {
			t.Fatalf("writer on n2: %v", werr)
		}
		return k >= before+20, fmt.Sprint(k)
	})

	ds[0].SignalMounts(syscall.SIGCONT)
	ds[0].Cont()
	thawed := time.Now()
	harness.Eventually(t, 60*time.Second, "n1 attached again, not as head", func() (bool, string) {
		v := volumeOf(t, ds[1], "web")
		for _, a := range v.Attachments {
			if a.Name == "n1" {
				return v.Head != "n1", fmt.Sprintf("head %q", v.Head)
			}
		}
		return false, fmt.Sprintf("attachments %+v", v.Attachments)
	})
	harness.Eventually(t, 60*time.Second, "a write on thawed n1 is read on n2", func() (bool, string) {
		err := writeFileSync(filepath.Join(d1, "from-n1"), []byte("n1 is back"))
		if err != nil {
			return false, err.Error()
		}
		b, err := os.ReadFile(filepath.Join(d2, "from-n1"))
		return err == nil && string(b) == "n1 is back", fmt.Sprint(err)
	})
	t.Logf("n1 thawed: fenced, attached again and serving its mount through the new head %.1fs later", time.Since(thawed).Seconds())
	close(stop)
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer on n2: %v", werr)
	}
	t.Logf("writer on n2: %d files acknowledged, longest write+fsync %v (the stall)", n, longest.Round(time.Millisecond))
	checkLedger(t, l, d2, d1)
	// What the head's host had acknowledged, before the freeze and after
	// it through the new head, is all there.
	l1.mu.Lock()
	acked1 := len(l1.files)
	l1.mu.Unlock()
	if acked1 == 0 {
		t.Fatal("the writer on n1 acknowledged nothing")
	}
	checkLedger(t, l1, filepath.Join(d2, "w1"))
	t.Logf("writer on n1: %d files acknowledged, all on n2's mount (it stops at its first failed fsync: an EIO for writes the frozen head had acknowledged but not replicated is the honest answer)", acked1)

	// Promise 2: no brick took an op of the deposed head's epoch after the
	// takeover (read from the op logs, the daemons stopped).
	v := volumeOf(t, ds[1], "web")
	newHead := ds[1]
	if v.Head == "n3" {
		newHead = ds[2]
	}
	start := takeoverSeq(t, newHead, "web")
	for _, d := range ds {
		d.KillMounts()
		d.Term()
	}
	for _, d := range ds {
		for _, seq := range opsOfEpoch(t, filepath.Dir(replicaDir(d, v.ID)), epoch1) {
			if seq > start {
				t.Errorf("brick %s holds op %d of the deposed epoch %d, after the takeover at seq %d", d.Name, seq, epoch1, start)
			}
		}
	}
}
