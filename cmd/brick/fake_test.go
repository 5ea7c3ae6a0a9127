package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/proto/brickpb"
)

// fakeControl is an in-process Control service that records every call and
// answers from fixed data. err, when set, is every call's answer.
type fakeControl struct {
	brickpb.UnimplementedControlServer

	mu      sync.Mutex
	calls   []string
	headers []*brickpb.Header
	created *brickpb.CreateVolumeRequest
	deleted *brickpb.DeleteVolumeRequest
	err     error
	block   chan struct{} // when set, calls wait for it (or their deadline)
}

func (f *fakeControl) record(ctx context.Context, method string, h *brickpb.Header) error {
	f.mu.Lock()
	f.calls = append(f.calls, method)
	f.headers = append(f.headers, h)
	err, block := f.err, f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return err
}

func (f *fakeControl) callNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeControl) lastCreated() *brickpb.CreateVolumeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.created
}

func (f *fakeControl) lastDeleted() *brickpb.DeleteVolumeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deleted
}

func (f *fakeControl) allHeaders() []*brickpb.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*brickpb.Header(nil), f.headers...)
}

func (f *fakeControl) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeControl) ClusterStatus(ctx context.Context, req *brickpb.ClusterStatusRequest) (*brickpb.ClusterStatusResponse, error) {
	if err := f.record(ctx, "ClusterStatus", req.GetHeader()); err != nil {
		return nil, err
	}
	return fixtureStatus(), nil
}

func (f *fakeControl) ListPeers(ctx context.Context, req *brickpb.ListPeersRequest) (*brickpb.ListPeersResponse, error) {
	if err := f.record(ctx, "ListPeers", req.GetHeader()); err != nil {
		return nil, err
	}
	return &brickpb.ListPeersResponse{Peers: fixturePeers(), AnsweredBy: "ci-2"}, nil
}

func (f *fakeControl) ListVolumes(ctx context.Context, req *brickpb.ListVolumesRequest) (*brickpb.ListVolumesResponse, error) {
	if err := f.record(ctx, "ListVolumes", req.GetHeader()); err != nil {
		return nil, err
	}
	return &brickpb.ListVolumesResponse{Volumes: fixtureVolumes()}, nil
}

func (f *fakeControl) GetVolume(ctx context.Context, req *brickpb.GetVolumeRequest) (*brickpb.VolumeResponse, error) {
	if err := f.record(ctx, "GetVolume", req.GetHeader()); err != nil {
		return nil, err
	}
	for _, v := range fixtureVolumes() {
		if v.GetName() == req.GetName() {
			return &brickpb.VolumeResponse{Volume: v}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "volume %q does not exist", req.GetName())
}

// CreateVolume answers as a daemon with the default options would.
func (f *fakeControl) CreateVolume(ctx context.Context, req *brickpb.CreateVolumeRequest) (*brickpb.VolumeResponse, error) {
	if err := f.record(ctx, "CreateVolume", req.GetHeader()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.created = req
	f.mu.Unlock()
	v := &brickpb.Volume{
		Id: "v-0001", Name: req.GetName(), SizeBytes: req.GetSizeBytes(),
		Replicas: req.GetReplicas(), Access: req.GetAccess(), MinIsr: req.GetMinIsr(),
		Labels: req.GetLabels(), State: "healthy", CreatedUnixMs: fixtureNow.UnixMilli(),
		Placement: []*brickpb.Placement{
			{BrickId: "b-4f1a", BrickName: "ci-1", InSync: true, GossipState: "alive"},
			{BrickId: "b-9c07", BrickName: "ci-2", InSync: true, GossipState: "alive"},
			{BrickId: "b-e210", BrickName: "ci-3", InSync: true, GossipState: "alive"},
		},
		Isr: []string{"b-4f1a", "b-9c07", "b-e210"},
	}
	if v.SizeBytes == 0 {
		v.SizeBytes = 10 << 30
	}
	if v.Replicas == 0 {
		v.Replicas = 3
	}
	v.Layout = "replicas=3"
	if v.Access == "" {
		v.Access = "single"
	}
	if v.MinIsr == 0 {
		v.MinIsr = 2
	}
	return &brickpb.VolumeResponse{Volume: v}, nil
}

func (f *fakeControl) DeleteVolume(ctx context.Context, req *brickpb.DeleteVolumeRequest) (*brickpb.DeleteVolumeResponse, error) {
	if err := f.record(ctx, "DeleteVolume", req.GetHeader()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.deleted = req
	f.mu.Unlock()
	return &brickpb.DeleteVolumeResponse{VolumeId: "v-0001"}, nil
}

// shortTempDir is a temporary directory with a path short enough for a unix
// socket (t.TempDir's can pass the 108-byte limit with long test names).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "brick")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startFake serves a fakeControl on a unix socket in a temporary directory
// and returns it with the socket's path.
func startFake(t *testing.T) (*fakeControl, string) {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "brick.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeControl{}
	srv := grpc.NewServer()
	brickpb.RegisterControlServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f, sock
}

type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs brick with a fixed clock and UTC times. env holds the whole
// environment; everything else is unset.
func runCLI(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{
		stdout: &out,
		stderr: &errb,
		env:    func(k string) string { return env[k] },
		now:    func() time.Time { return fixtureNow },
		loc:    time.UTC,
	}
	code := a.run(context.Background(), args)
	return result{code, out.String(), errb.String()}
}

// onSocket is the environment that points brick at sock.
func onSocket(sock string) map[string]string {
	return map[string]string{envSocket: sock}
}

var fixtureNow = time.Date(2026, 11, 23, 14, 2, 30, 0, time.UTC)

func msAgo(d time.Duration) int64 { return fixtureNow.Add(-d).UnixMilli() }

func fixturePeers() []*brickpb.PeerInfo {
	return []*brickpb.PeerInfo{
		{Name: "ci-2", BrickId: "b-9c07", Address: "10.0.0.2:7400", GossipState: "alive",
			GossipSinceUnixMs: msAgo(3 * time.Hour), RaftRole: "leader", CapacityBytes: 1 << 40, FreeBytes: 200 << 30},
		{Name: "ci-1", BrickId: "b-4f1a", Address: "10.0.0.1:7400", GossipState: "dead",
			GossipSinceUnixMs: msAgo(12 * time.Second), RaftRole: "voter", CapacityBytes: 1 << 40, FreeBytes: 3 << 29},
		{Name: "tiebreak", BrickId: "b-0001", Address: "10.0.0.9:7400", GossipState: "alive",
			RaftRole: "voter"},
	}
}

func fixtureVolumes() []*brickpb.Volume {
	return []*brickpb.Volume{
		{
			Id: "v-77aa", Name: "web", SizeBytes: 3 << 29, Layout: "ec=2+1", EcData: 2, EcParity: 1,
			Access: "shared", MinIsr: 3, State: "healthy", Epoch: 2,
			Placement: []*brickpb.Placement{
				{BrickId: "b-4f1a", BrickName: "ci-1", InSync: true, GossipState: "alive"},
				{BrickId: "b-9c07", BrickName: "ci-2", InSync: true, GossipState: "alive"},
				{BrickId: "b-e210", BrickName: "ci-3", InSync: true, GossipState: "alive"},
			},
			Isr: []string{"b-4f1a", "b-9c07", "b-e210"},
		},
		{
			Id: "v-31c9", Name: "gocd-db", SizeBytes: 10 << 30, Layout: "replicas=3", Replicas: 3,
			Access: "single", MinIsr: 2, Labels: map[string]string{"tier": "db", "app": "gocd"},
			State: "degraded", StateReason: "b-4f1a is out of the ISR", Epoch: 7,
			Head: "b-9c07", HeadName: "ci-2",
			Placement: []*brickpb.Placement{
				{BrickId: "b-4f1a", BrickName: "ci-1", InSync: false, GossipState: "dead"},
				{BrickId: "b-9c07", BrickName: "ci-2", InSync: true, GossipState: "alive"},
				{BrickId: "b-e210", BrickName: "ci-3", InSync: true, GossipState: "alive"},
			},
			Isr: []string{"b-9c07", "b-e210"},
			Attachments: []*brickpb.Attachment{
				{BrickId: "b-9c07", BrickName: "ci-2", Epoch: 7, SinceUnixMs: msAgo(19 * time.Second)},
			},
			CreatedUnixMs: msAgo(72 * time.Hour),
			Heals: []*brickpb.HealProgress{{BrickId: "b-4f1a", BrickName: "ci-1", State: "healing", Phase: "op-log",
				BytesRemaining: 48 << 20, BytesTotal: 192 << 20, OpsRemaining: 1200, FilesRemaining: -1,
				RateBytesPerSec: 16 << 20, EtaMs: 3000}},
		},
	}
}

func fixtureStatus() *brickpb.ClusterStatusResponse {
	return &brickpb.ClusterStatusResponse{
		ClusterId: "c-5e1d", Health: "degraded", Leader: "ci-2", AnsweredBy: "ci-3",
		Peers: fixturePeers(), Volumes: fixtureVolumes(),
	}
}
