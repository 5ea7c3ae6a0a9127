package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/auth"
	"github.com/brickvol/brick/proto/brickpb"
)

// ok runs a command that must succeed and returns its stdout.
func ok(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	r := runCLI(t, env, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("brick %s: exit %d\nstderr:\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func TestPeerLs(t *testing.T) {
	f, sock := startFake(t)
	golden(t, ok(t, onSocket(sock), "peer", "ls"), wantPeersTable)

	var peers []peerJSON
	out := ok(t, onSocket(sock), "peer", "ls", "--json")
	if err := json.Unmarshal([]byte(out), &peers); err != nil || len(peers) != 3 || peers[0].Name != "ci-1" {
		t.Errorf("peer ls --json: %v\n%s", err, out)
	}
	// Every request carries the CLI's header.
	for _, h := range f.allHeaders() {
		if h.GetSenderId() != "cli" || h.GetProtocolVersion() != brickpb.ProtocolVersion || h.GetClusterId() != "" {
			t.Errorf("header %v", h)
		}
	}
	if got := f.callNames(); len(got) != 2 {
		t.Errorf("calls %v", got)
	}

	// A plain-gRPC listener where a TLS brickd was expected.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	psrv := grpc.NewServer()
	brickpb.RegisterControlServer(psrv, &fakeControl{})
	go psrv.Serve(plain)
	defer psrv.Stop()
	r := runCLI(t, map[string]string{envServer: plain.Addr().String()}, "volume", "ls")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "brick: TLS handshake with brickd at "+plain.Addr().String()+" failed: ") ||
		!strings.Contains(r.stderr, "BRICK_CLUSTER_KEY") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestVolumeLs(t *testing.T) {
	_, sock := startFake(t)
	golden(t, ok(t, onSocket(sock), "volume", "ls"), wantVolumesTable)

	env := onSocket(sock)
	env[envJSON] = "1" // the env twin of --json
	var vols []volumeJSON
	out := ok(t, env, "volume", "ls")
	if err := json.Unmarshal([]byte(out), &vols); err != nil || len(vols) != 2 || vols[0].Name != "gocd-db" {
		t.Errorf("volume ls with BRICK_JSON=1: %v\n%s", err, out)
	}
}

func TestVolumeInspectAndStatus(t *testing.T) {
	_, sock := startFake(t)
	golden(t, ok(t, onSocket(sock), "volume", "inspect", "gocd-db"), wantGocdDetail)
	golden(t, ok(t, onSocket(sock), "volume", "inspect", "gocd-db", "--json"), wantGocdJSON)
	golden(t, ok(t, onSocket(sock), "volume", "status", "gocd-db"), wantGocdDetail)
	golden(t, ok(t, onSocket(sock), "volume", "status", "--json", "gocd-db"), wantGocdJSON)
}

func TestVolumeCreateDefaults(t *testing.T) {
	f, sock := startFake(t)
	out := ok(t, onSocket(sock), "volume", "create", "gocd-db")
	golden(t, out, "\ncreated volume gocd-db (replicas=3, 10 GiB, single) on b-4f1a(ci-1), b-9c07(ci-2), b-e210(ci-3)\n")
	// Options not given stay zero, for the daemon to fill.
	req := f.lastCreated()
	if req.GetName() != "gocd-db" || req.GetSizeBytes() != 0 || req.GetReplicas() != 0 || req.GetEcData() != 0 ||
		req.GetEcParity() != 0 || req.GetAccess() != "" || req.GetMinIsr() != 0 || len(req.GetLabels()) != 0 {
		t.Errorf("request %v", req)
	}
}

func TestVolumeCreateOptions(t *testing.T) {
	f, sock := startFake(t)
	ok(t, onSocket(sock), "volume", "create", "jenkins-home", "--size", "1.5G", "--replicas", "2",
		"--min-isr", "2", "--access", "shared", "--label", "app=jenkins", "--label", "tier=")
	req := f.lastCreated()
	if req.GetSizeBytes() != 3<<29 || req.GetReplicas() != 2 || req.GetEcData() != 0 || req.GetAccess() != "shared" ||
		req.GetMinIsr() != 2 || !maps.Equal(req.GetLabels(), map[string]string{"app": "jenkins", "tier": ""}) {
		t.Errorf("request %v", req)
	}

	ok(t, onSocket(sock), "volume", "create", "web", "--ec", "4+2", "--min-isr", "5")
	req = f.lastCreated()
	if req.GetReplicas() != 0 || req.GetEcData() != 4 || req.GetEcParity() != 2 || req.GetMinIsr() != 5 {
		t.Errorf("request %v", req)
	}

	out := ok(t, onSocket(sock), "--json", "volume", "create", "x")
	var v volumeJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Name != "x" || v.SizeBytes != 10<<30 || len(v.Placement) != 3 {
		t.Errorf("create --json: %v\n%s", err, out)
	}
}

func TestVolumeRm(t *testing.T) {
	f, sock := startFake(t)
	golden(t, ok(t, onSocket(sock), "volume", "rm", "scratch"), "\nremoved volume scratch\n")
	if f.lastDeleted().GetName() != "scratch" || f.lastDeleted().GetForce() {
		t.Errorf("request %v", f.lastDeleted())
	}
	golden(t, ok(t, onSocket(sock), "volume", "rm", "--force", "--json", "scratch"), `
{
  "name": "scratch",
  "id": "v-0001"
}
`)
	if !f.lastDeleted().GetForce() {
		t.Errorf("--force not sent: %v", f.lastDeleted())
	}
}

func TestStatus(t *testing.T) {
	_, sock := startFake(t)
	golden(t, ok(t, onSocket(sock), "status"),
		"\ncluster c-5e1d  degraded  leader ci-2  answered by ci-3\n"+wantPeersTable+wantVolumesTable)
	var s statusJSON
	out := ok(t, onSocket(sock), "status", "--json")
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.ClusterID != "c-5e1d" || len(s.Volumes) != 2 {
		t.Errorf("status --json: %v\n%s", err, out)
	}
}

func TestVersionHelpAndGroups(t *testing.T) {
	if out := ok(t, nil, "version"); !strings.HasPrefix(out, "brick ") || !strings.Contains(out, "(protocol 3, go") {
		t.Errorf("version: %q", out)
	}
	var v versionJSON
	if err := json.Unmarshal([]byte(ok(t, nil, "version", "--json")), &v); err != nil || v.ProtocolVersion != 3 {
		t.Errorf("version --json: %v %+v", err, v)
	}
	for _, args := range [][]string{nil, {"--help"}, {"volume"}, {"volume", "create", "--help"}, {"help", "peer"}} {
		if out := ok(t, nil, args...); !strings.Contains(out, "Usage:") {
			t.Errorf("brick %v: no usage in %q", args, out)
		}
	}
	// Every command has an example.
	var walk func(*testing.T, string, []string)
	walk = func(t *testing.T, path string, args []string) {
		out := ok(t, nil, append(args, "--help")...)
		if !strings.Contains(out, "Examples:") && !strings.Contains(out, "Available Commands:") {
			t.Errorf("brick %s --help has no examples:\n%s", path, out)
		}
	}
	for _, c := range [][]string{{"status"}, {"peer", "ls"}, {"volume", "create"}, {"volume", "ls"},
		{"volume", "inspect"}, {"volume", "status"}, {"volume", "rm"}, {"version"}} {
		walk(t, strings.Join(c, " "), c)
	}
}

// TestRun goes through run itself, with a real clock.
func TestRun(t *testing.T) {
	_, sock := startFake(t)
	var out, errb bytes.Buffer
	env := func(k string) string { return onSocket(sock)[k] }
	if code := run([]string{"volume", "ls"}, &out, &errb, env); code != 0 || errb.Len() > 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	golden(t, out.String(), wantVolumesTable)
}

func TestDaemonErrorsPassThrough(t *testing.T) {
	f, sock := startFake(t)
	cases := []struct {
		err  error
		args []string
		want string
	}{
		{status.Error(codes.AlreadyExists, `volume "x" already exists`), []string{"volume", "create", "x"}, `brick: volume "x" already exists` + "\n"},
		{status.Error(codes.FailedPrecondition, `volume "x" is attached on ci-2 (use --force)`), []string{"volume", "rm", "x"}, `brick: volume "x" is attached on ci-2 (use --force)` + "\n"},
		// The daemon's own Unavailable (no leader) is not "cannot reach".
		{status.Error(codes.Unavailable, "no Raft leader: 1 of 3 voters reachable"), []string{"status"}, "brick: no Raft leader: 1 of 3 voters reachable\n"},
		// The daemon's own deadline, well before --timeout runs out.
		{status.Error(codes.DeadlineExceeded, "timed out waiting for Raft to commit"), []string{"volume", "rm", "x"}, "brick: timed out waiting for Raft to commit\n"},
		{status.Error(codes.ResourceExhausted, "not enough bricks for replicas=3: 2 alive"), []string{"volume", "create", "y"}, "brick: not enough bricks for replicas=3: 2 alive\n"},
	}
	for _, tc := range cases {
		f.setErr(tc.err)
		for _, js := range []bool{false, true} {
			args := tc.args
			if js {
				args = append([]string{"--json"}, args...)
			}
			r := runCLI(t, onSocket(sock), args...)
			if r.code != 1 || r.stderr != tc.want || r.stdout != "" {
				t.Errorf("brick %v: exit %d, stdout %q, stderr %q; want exit 1, stderr %q", args, r.code, r.stdout, r.stderr, tc.want)
			}
		}
	}
	f.setErr(nil)
	r := runCLI(t, onSocket(sock), "volume", "inspect", "nope")
	if r.code != 1 || r.stderr != "brick: volume \"nope\" does not exist\n" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestUnreachable(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "none.sock")
	r := runCLI(t, onSocket(sock), "status")
	want := "brick: cannot reach brickd at " + sock + ": connect: no such file or directory (is it running? set --server or BRICK_SERVER)\n"
	if r.code != 1 || r.stderr != want || r.stdout != "" {
		t.Errorf("exit %d\nstderr %q\nwant   %q", r.code, r.stderr, want)
	}

	// A TCP port nobody listens on.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	r = runCLI(t, map[string]string{envServer: addr}, "--json", "volume", "ls")
	want = "brick: cannot reach brickd at " + addr + ": connect: connection refused (is it running? set --server or BRICK_SERVER)\n"
	if r.code != 1 || r.stderr != want || r.stdout != "" {
		t.Errorf("exit %d\nstderr %q\nwant   %q", r.code, r.stderr, want)
	}
}

func TestTimeout(t *testing.T) {
	f, sock := startFake(t)
	f.block = make(chan struct{})
	defer close(f.block)
	r := runCLI(t, onSocket(sock), "--timeout", "100ms", "peer", "ls")
	want := "brick: brickd at " + sock + " did not answer within 100ms (raise --timeout or BRICK_TIMEOUT)\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("exit %d\nstderr %q\nwant   %q", r.code, r.stderr, want)
	}
}

func TestOlderDaemon(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "old.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	brickpb.RegisterControlServer(srv, brickpb.UnimplementedControlServer{})
	go srv.Serve(lis)
	defer srv.Stop()
	r := runCLI(t, onSocket(sock), "status")
	if r.code != 1 || !strings.Contains(r.stderr, "ClusterStatus not implemented") ||
		!strings.Contains(r.stderr, "older than this brick command") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestTLS talks to a fake daemon over TCP with the cluster key, and checks
// that a wrong key is reported as a key problem.
func TestTLS(t *testing.T) {
	const secret = "the-right-cluster-key"
	key, err := auth.NewKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeControl{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(key.ServerTLS())))
	brickpb.RegisterControlServer(srv, f)
	go srv.Serve(lis)
	defer srv.Stop()
	addr := lis.Addr().String()

	golden(t, ok(t, map[string]string{envServer: addr, envClusterKey: secret}, "volume", "ls"), wantVolumesTable)
	golden(t, ok(t, nil, "--server", addr, "--cluster-key", secret, "volume", "ls"), wantVolumesTable)

	for _, env := range []map[string]string{
		{envServer: addr, envClusterKey: "some-other-cluster-key"},
		{envServer: addr}, // the development key
	} {
		r := runCLI(t, env, "volume", "ls")
		want := "brick: brickd at " + addr + " does not use this cluster key: set BRICK_CLUSTER_KEY (or --cluster-key) to the cluster's key\n"
		if r.code != 1 || r.stderr != want || r.stdout != "" {
			t.Errorf("exit %d\nstderr %q\nwant   %q", r.code, r.stderr, want)
		}
		if strings.Contains(r.stderr, env[envClusterKey]) && env[envClusterKey] != "" {
			t.Errorf("stderr shows the key: %q", r.stderr)
		}
	}
	if got := f.callNames(); len(got) != 2 {
		t.Errorf("calls %v", got)
	}

	// A plain-gRPC listener where a TLS brickd was expected.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	psrv := grpc.NewServer()
	brickpb.RegisterControlServer(psrv, &fakeControl{})
	go psrv.Serve(plain)
	defer psrv.Stop()
	r := runCLI(t, map[string]string{envServer: plain.Addr().String()}, "volume", "ls")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "brick: TLS handshake with brickd at "+plain.Addr().String()+" failed: ") ||
		!strings.Contains(r.stderr, "BRICK_CLUSTER_KEY") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
