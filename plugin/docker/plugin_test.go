package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newPlugin is a plugin over a fake, with its state in dir (a fresh temp
// dir when "").
func newPlugin(t *testing.T, f *fakeVolumes, dir string) *Plugin {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p, err := New(Config{Volumes: f, Host: f.here, MountRoot: filepath.Join(dir, "mnt"), StateFile: filepath.Join(dir, "docker-mounts.json"),
		Timeout: 5 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func mustCreate(t *testing.T, p *Plugin, name string, opts map[string]string) {
	t.Helper()
	if err := p.Create(&volume.CreateRequest{Name: name, Options: opts}); err != nil {
		t.Fatalf("create %s %v: %v", name, opts, err)
	}
}

func mustMount(t *testing.T, p *Plugin, name, id string) string {
	t.Helper()
	r, err := p.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		t.Fatalf("mount %s for %s: %v", name, id, err)
	}
	return r.Mountpoint
}

func mustUnmount(t *testing.T, p *Plugin, name, id string) {
	t.Helper()
	if err := p.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
		t.Fatalf("unmount %s for %s: %v", name, id, err)
	}
}

// oneSentence fails unless msg reads as one sentence for the docker CLI:
// one line, no gRPC or Go noise.
func oneSentence(t *testing.T, msg string) {
	t.Helper()
	if msg == "" || strings.Contains(msg, "\n") || strings.Contains(msg, "rpc error") || strings.Contains(msg, "%!") {
		t.Errorf("error %q is not one clear sentence", msg)
	}
}

func TestCapabilitiesGlobal(t *testing.T) {
	p := newPlugin(t, newFake(), "")
	if got := p.Capabilities().Capabilities.Scope; got != "global" {
		t.Errorf("scope = %q, want global", got)
	}
}

func TestCreateOptions(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	mustCreate(t, p, "data", map[string]string{"replicas": "3", "size": "1G", "min-isr": "2", "label": "team=ci"})
	v := f.vols["data"]
	if v.Layout != "replicas=3" || v.SizeBytes != 1<<30 || v.MinISR != 2 || v.Access != "single" {
		t.Errorf("created %+v", v)
	}
	mustCreate(t, p, "dflt", nil)
	if v := f.vols["dflt"]; v.Layout == "" || v.SizeBytes == 0 || v.MinISR == 0 {
		t.Errorf("defaults not filled: %+v", v)
	}
	mustCreate(t, p, "coded", map[string]string{"ec": "2+1", "access": "shared"})
	if v := f.vols["coded"]; v.Layout != "ec=2+1" || v.Access != "shared" {
		t.Errorf("created %+v", v)
	}
}

// Bad input gets one clear sentence and creates nothing (promise 6).
func TestCreateRefusesBadInput(t *testing.T) {
	cases := []struct {
		name string
		opts map[string]string
		want string
	}{
		{"data", map[string]string{"colour": "red"}, `unknown option "colour"`},
		{"data", map[string]string{"size": "12Q"}, "size"},
		{"data", map[string]string{"replicas": "0"}, "replicas"},
		{"data", map[string]string{"replicas": "2", "ec": "2+1"}, "replicas"},
		{"data", map[string]string{"min-isr": "4", "replicas": "3"}, "min-isr"},
		{"data", map[string]string{"size": ""}, "empty"},
		{"data", map[string]string{"label": "bad key=x"}, "label"},
		{"a..b", nil, `".."`},
		{strings.Repeat("x", 65), nil, "too long"},
		{"", nil, "empty"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.name, c.opts), func(t *testing.T) {
			f := newFake()
			p := newPlugin(t, f, "")
			err := p.Create(&volume.CreateRequest{Name: c.name, Options: c.opts})
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			oneSentence(t, err.Error())
			if len(f.vols) != 0 {
				t.Errorf("something was created: %v", f.vols)
			}
		})
	}
}

// Docker (and Swarm, on every host a task lands on) creates a volume that
// may exist already: the same options succeed, others are refused.
func TestCreateExisting(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	mustCreate(t, p, "data", map[string]string{"replicas": "3", "size": "1G"})
	mustCreate(t, p, "data", map[string]string{"replicas": "3", "size": "1G"})
	mustCreate(t, p, "data", nil) // no options: whatever exists
	err := p.Create(&volume.CreateRequest{Name: "data", Options: map[string]string{"replicas": "2"}})
	if err == nil || !strings.Contains(err.Error(), `volume "data" already exists with replicas=3, size 1 GiB`) {
		t.Fatalf("create with other options: %v", err)
	}
	oneSentence(t, err.Error())
}

// Two Docker mounts share one brick mount; the last unmount detaches.
func TestMountRefCounting(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	mustCreate(t, p, "data", nil)
	dir := mustMount(t, p, "data", "c1")
	if !f.isMounted(dir) {
		t.Fatal("not mounted after the first Mount")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("mount point %s: %v", dir, err)
	}
	if got := mustMount(t, p, "data", "c2"); got != dir {
		t.Errorf("second mount at %s, want %s", got, dir)
	}
	mustMount(t, p, "data", "c2") // Docker repeating itself counts once
	if m, _ := f.calls(); m != 1 {
		t.Errorf("%d mounts for one volume, want 1", m)
	}
	if r, _ := p.Path(&volume.PathRequest{Name: "data"}); r.Mountpoint != dir {
		t.Errorf("path = %q, want %s", r.Mountpoint, dir)
	}
	mustUnmount(t, p, "data", "c1")
	if !f.isMounted(dir) || len(f.attached("data")) != 1 {
		t.Fatal("the first unmount of two unmounted or detached")
	}
	mustUnmount(t, p, "data", "c2")
	if f.isMounted(dir) {
		t.Fatal("still mounted after the last unmount")
	}
	if a := f.attached("data"); len(a) != 0 {
		t.Errorf("still attached to %v after the last unmount", a)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left behind: %v", err)
	}
	if r, _ := p.Path(&volume.PathRequest{Name: "data"}); r.Mountpoint != "" {
		t.Errorf("path after unmount = %q", r.Mountpoint)
	}
	// An ID never mounted is released already.
	mustUnmount(t, p, "data", "c9")
	if _, u := f.calls(); u != 1 {
		t.Errorf("%d unmounts, want 1", u)
	}
}

// A brickd restart under running containers keeps their counts: the new
// plugin reads them back, and only the last unmount detaches.
func TestRefCountsSurviveRestart(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	p1 := newPlugin(t, f, dir)
	mustCreate(t, p1, "data", nil)
	mnt := mustMount(t, p1, "data", "c1")
	mustMount(t, p1, "data", "c2")
	p1.Close()

	p2 := newPlugin(t, f, dir)
	if r, _ := p2.Path(&volume.PathRequest{Name: "data"}); r.Mountpoint != mnt {
		t.Fatalf("after restart path = %q, want %s", r.Mountpoint, mnt)
	}
	mustUnmount(t, p2, "data", "c1")
	if !f.isMounted(mnt) {
		t.Fatal("unmounted while a container still uses it")
	}
	p2.Close()
	p3 := newPlugin(t, f, dir)
	mustUnmount(t, p3, "data", "c2")
	if f.isMounted(mnt) || len(f.attached("data")) != 0 {
		t.Fatal("the last unmount after two restarts did not unmount and detach")
	}
	b, err := os.ReadFile(filepath.Join(dir, "docker-mounts.json"))
	if err != nil || strings.Contains(string(b), "data") {
		t.Errorf("state after the last unmount: %s %v", b, err)
	}
}

func TestCorruptStateRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "docker-mounts.json"), []byte("{not json"), 0o600)
	_, err := New(Config{Volumes: newFake(), MountRoot: filepath.Join(dir, "mnt"), StateFile: filepath.Join(dir, "docker-mounts.json"), Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt state: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "docker-mounts.json"), []byte(`{"version":7}`), 0o600)
	_, err = New(Config{Volumes: newFake(), MountRoot: filepath.Join(dir, "mnt"), StateFile: filepath.Join(dir, "docker-mounts.json"), Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "version 7") {
		t.Fatalf("future state: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Volumes: newFake(), MountRoot: "/mnt/x", Timeout: time.Second}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{
		{MountRoot: "/mnt/x", Timeout: time.Second},
		{Volumes: newFake(), MountRoot: "rel", Timeout: time.Second},
		{Volumes: newFake(), MountRoot: "/mnt/x", StateFile: "rel", Timeout: time.Second},
		{Volumes: newFake(), MountRoot: "/mnt/x"},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestMountInUseElsewhere(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	mustCreate(t, p, "data", nil)
	f.attachElsewhere("data", "h2")
	_, err := p.Mount(&volume.MountRequest{Name: "data", ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), `volume "data" is in use on host h2`) {
		t.Fatalf("mount of a volume held elsewhere: %v", err)
	}
	oneSentence(t, err.Error())
	if r, _ := p.Path(&volume.PathRequest{Name: "data"}); r.Mountpoint != "" {
		t.Errorf("failed mount left a mountpoint %q", r.Mountpoint)
	}
	if _, err := os.Stat(p.dir("data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed mount left its directory: %v", err)
	}
	_, err = p.Mount(&volume.MountRequest{Name: "nope", ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), `no such volume "nope"`) {
		t.Errorf("mount of a missing volume: %v", err)
	}
}

func TestMountFailureLeavesNothing(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	mustCreate(t, p, "data", nil)
	f.failMount = &Error{Msg: "mounting data at /x: the mount process exited without a word"}
	_, err := p.Mount(&volume.MountRequest{Name: "data", ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), `mounting volume "data" at `) || !strings.Contains(err.Error(), "without a word") {
		t.Fatalf("failed mount: %v", err)
	}
	oneSentence(t, err.Error())
	if _, ok := p.mounts.get("data"); ok {
		t.Error("a failed mount was counted")
	}
	// Docker never unmounts a failed mount; the next mount works.
	mustMount(t, p, "data", "c2")
}

func TestTimeoutIsNamed(t *testing.T) {
	f := newFake()
	p, err := New(Config{Volumes: f, MountRoot: t.TempDir(), Timeout: 100 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	mustCreate(t, p, "data", nil)
	f.block = true
	_, err = p.Mount(&volume.MountRequest{Name: "data", ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), "no answer within 100ms") {
		t.Fatalf("hung daemon: %v", err)
	}
	oneSentence(t, err.Error())
}

func TestRemove(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	mustCreate(t, p, "data", nil)
	f.attachElsewhere("data", "h3")
	err := p.Remove(&volume.RemoveRequest{Name: "data"})
	if err == nil || !strings.Contains(err.Error(), `volume "data" is in use on host h3`) || !strings.Contains(err.Error(), "nothing was removed") {
		t.Fatalf("remove of a volume in use elsewhere: %v", err)
	}
	oneSentence(t, err.Error())
	if _, ok := f.vols["data"]; !ok {
		t.Fatal("removed anyway")
	}
	f.vols["data"].Attached = nil
	mustMount(t, p, "data", "c1")
	if err := p.Remove(&volume.RemoveRequest{Name: "data"}); err == nil || !strings.Contains(err.Error(), "mounted on this host") {
		t.Fatalf("remove of a volume mounted here: %v", err)
	}
	mustUnmount(t, p, "data", "c1")
	if err := p.Remove(&volume.RemoveRequest{Name: "data"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.vols["data"]; ok {
		t.Fatal("not removed")
	}
	// Removing what is gone already succeeds, so Docker can forget it.
	if err := p.Remove(&volume.RemoveRequest{Name: "data"}); err != nil {
		t.Fatalf("remove of a missing volume: %v", err)
	}
}

func TestGetStatusAndList(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	mustCreate(t, p, "b", map[string]string{"replicas": "3", "size": "1G"})
	mustCreate(t, p, "a", nil)
	dir := mustMount(t, p, "b", "c1")
	f.mu.Lock()
	f.vols["b"].InSync = []string{"h1", "h2"}
	f.vols["b"].State, f.vols["b"].StateReason = "degraded", "a brick is down or out of the in-sync set"
	f.mu.Unlock()
	r, err := p.Get(&volume.GetRequest{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	v := r.Volume
	if v.Name != "b" || v.Mountpoint != dir || v.CreatedAt != "2026-11-23T14:00:00Z" {
		t.Errorf("get: %+v", v)
	}
	want := map[string]any{"state": "degraded", "layout": "replicas=3", "size": "1 GiB", "head": "h1", "epoch": uint64(1),
		"in-sync": "h1,h2 (2 of 3)", "attached": "h1", "reason": "a brick is down or out of the in-sync set", "min-isr": 2}
	for k, w := range want {
		if v.Status[k] != w {
			t.Errorf("status[%s] = %v (%T), want %v", k, v.Status[k], v.Status[k], w)
		}
	}
	if s, _ := v.Status["mounted-here"].(string); !strings.Contains(s, "1 container") {
		t.Errorf("mounted-here = %q", s)
	}
	if _, err := p.Get(&volume.GetRequest{Name: "zz"}); err == nil || err.Error() != `no such volume "zz" in the brick cluster` {
		t.Errorf("get of a missing volume: %v", err)
	}
	l, err := p.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Volumes) != 2 || l.Volumes[0].Name != "a" || l.Volumes[1].Name != "b" || l.Volumes[1].Mountpoint != dir || l.Volumes[0].Mountpoint != "" {
		t.Errorf("list: %+v %+v", l.Volumes[0], l.Volumes[1])
	}
}

// Names brick refuses never reach brick, on any request.
func TestBadNamesEverywhere(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	bad := "../etc"
	errs := []error{
		p.Create(&volume.CreateRequest{Name: bad}),
		p.Remove(&volume.RemoveRequest{Name: bad}),
		p.Unmount(&volume.UnmountRequest{Name: bad, ID: "x"}),
	}
	_, err := p.Mount(&volume.MountRequest{Name: bad, ID: "x"})
	errs = append(errs, err)
	_, err = p.Get(&volume.GetRequest{Name: bad})
	errs = append(errs, err)
	_, err = p.Path(&volume.PathRequest{Name: bad})
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "volume name") {
			t.Errorf("request %d with name %q: %v", i, bad, err)
		}
	}
	if m, _ := f.calls(); m != 0 {
		t.Error("a bad name reached brick")
	}
}

// Concurrent mounts of one volume mount it once; concurrent unmounts
// unmount it once.
func TestConcurrentMounts(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	mustCreate(t, p, "data", nil)
	mustCreate(t, p, "other", nil)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vol := []string{"data", "other"}[i%2]
			if _, err := p.Mount(&volume.MountRequest{Name: vol, ID: fmt.Sprint("c", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if m, _ := f.calls(); m != 2 {
		t.Fatalf("%d mounts for two volumes", m)
	}
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vol := []string{"data", "other"}[i%2]
			if err := p.Unmount(&volume.UnmountRequest{Name: vol, ID: fmt.Sprint("c", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, u := f.calls(); u != 2 {
		t.Fatalf("%d unmounts for two volumes", u)
	}
}

// The protocol end to end over a unix socket, as Docker speaks it.
func TestProtocolOverSocket(t *testing.T) {
	f := newFake()
	p := newPlugin(t, f, "")
	sock := filepath.Join(t.TempDir(), "brick.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(l) }()
	defer func() {
		l.Close()
		<-done
	}()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	post := func(path string, body any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, err := c.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.1+json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if _, out := post("/Plugin.Activate", nil); fmt.Sprint(out["Implements"]) != "[VolumeDriver]" {
		t.Errorf("activate: %v", out)
	}
	if _, out := post("/VolumeDriver.Capabilities", nil); fmt.Sprint(out["Capabilities"]) != "map[Scope:global]" {
		t.Errorf("capabilities: %v", out)
	}
	if code, out := post("/VolumeDriver.Create", map[string]any{"Name": "data", "Opts": map[string]string{"bogus": "1"}}); code != 500 ||
		!strings.HasPrefix(fmt.Sprint(out["Err"]), `unknown option "bogus"`) {
		t.Errorf("create with a bad option: %d %v", code, out)
	}
	if code, out := post("/VolumeDriver.Create", map[string]any{"Name": "data", "Opts": map[string]string{"replicas": "3"}}); code != 200 || out["Err"] != nil && out["Err"] != "" {
		t.Errorf("create: %d %v", code, out)
	}
	_, out := post("/VolumeDriver.Mount", map[string]any{"Name": "data", "ID": "abc"})
	if mp, _ := out["Mountpoint"].(string); mp != p.dir("data") {
		t.Errorf("mount: %v", out)
	}
	_, out = post("/VolumeDriver.Get", map[string]any{"Name": "data"})
	if v, _ := out["Volume"].(map[string]any); v == nil || v["Status"].(map[string]any)["layout"] != "replicas=3" {
		t.Errorf("get: %v", out)
	}
	if code, _ := post("/VolumeDriver.Unmount", map[string]any{"Name": "data", "ID": "abc"}); code != 200 || f.isMounted(p.dir("data")) {
		t.Errorf("unmount: %d", code)
	}
	_, out = post("/VolumeDriver.List", nil)
	if vs, _ := out["Volumes"].([]any); len(vs) != 1 {
		t.Errorf("list: %v", out)
	}
}

// A plugin restarted with another mount root keeps serving a volume in use
// at the directory it was mounted at.
func TestMountRootChangedUnderUse(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	p1 := newPlugin(t, f, dir)
	mustCreate(t, p1, "data", nil)
	old := mustMount(t, p1, "data", "c1")
	p1.Close()
	p2, err := New(Config{Volumes: f, Host: f.here, MountRoot: filepath.Join(dir, "elsewhere"), StateFile: filepath.Join(dir, "docker-mounts.json"),
		Timeout: 5 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if got := mustMount(t, p2, "data", "c2"); got != old {
		t.Errorf("second mount at %s, want the first's %s", got, old)
	}
	if m, _ := f.calls(); m != 1 {
		t.Errorf("%d mounts, want 1", m)
	}
	mustUnmount(t, p2, "data", "c1")
	mustUnmount(t, p2, "data", "c2")
	if f.isMounted(old) {
		t.Error("still mounted")
	}
}
