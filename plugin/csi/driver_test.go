package csi

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/volspec"
)

type testDriver struct {
	*Driver
	c    *fakeCluster
	m    *fakeMounter
	root string
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newTestDriver(t *testing.T) *testDriver {
	t.Helper()
	root := t.TempDir()
	m := newFakeMounter()
	c := newFakeCluster(m)
	d, err := New(Config{NodeID: "n1", PathRoots: []string{root}, Mounter: m,
		Logger: slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}, c)
	if err != nil {
		t.Fatal(err)
	}
	return &testDriver{Driver: d, c: c, m: m, root: root}
}

var ctx = context.Background()

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}}}
}

var rwo = mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)

func blockCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}
}

func wantCode(t *testing.T, err error, code codes.Code, mentions ...string) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("code %v (%v), want %v", got, err, code)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

func (d *testDriver) create(t *testing.T, name string, size int64, params map[string]string, caps ...*csi.VolumeCapability) *csi.Volume {
	t.Helper()
	if len(caps) == 0 {
		caps = []*csi.VolumeCapability{rwo}
	}
	resp, err := d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: caps, Parameters: params})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return resp.Volume
}

func TestCreateVolumeIdempotentByName(t *testing.T) {
	d := newTestDriver(t)
	a := d.create(t, "pvc-1", 1<<30, map[string]string{"replicas": "3", "minIsr": "2"})
	b := d.create(t, "pvc-1", 1<<30, map[string]string{"replicas": "3", "minIsr": "2"})
	if a.VolumeId != b.VolumeId || len(d.c.vols) != 1 {
		t.Fatalf("second create gave %s, first %s; %d volumes", b.VolumeId, a.VolumeId, len(d.c.vols))
	}
	if a.CapacityBytes != 1<<30 || a.AccessibleTopology[0].Segments[TopologyKey] != "c-test" {
		t.Errorf("volume %+v", a)
	}
	_, err := d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30},
		VolumeCapabilities: []*csi.VolumeCapability{rwo}})
	wantCode(t, err, codes.AlreadyExists, "pvc-1")
	_, err = d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
		VolumeCapabilities: []*csi.VolumeCapability{rwo}, Parameters: map[string]string{"replicas": "2"}})
	wantCode(t, err, codes.AlreadyExists, "pvc-1", "replicas=3")
	// A range that holds the existing size is compatible.
	resp, err := d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20, LimitBytes: 2 << 30},
		VolumeCapabilities: []*csi.VolumeCapability{rwo}, Parameters: map[string]string{"replicas": "3", "minIsr": "2"}})
	if err != nil || resp.Volume.VolumeId != a.VolumeId {
		t.Fatalf("compatible range: %v %v", resp, err)
	}
}

func TestCreateVolumeRefusals(t *testing.T) {
	d := newTestDriver(t)
	for _, tc := range []struct {
		name    string
		req     *csi.CreateVolumeRequest
		code    codes.Code
		mention string
	}{
		{"no name", &csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{rwo}}, codes.InvalidArgument, "name"},
		{"no caps", &csi.CreateVolumeRequest{Name: "a"}, codes.InvalidArgument, `"a"`},
		{"unknown parameter", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			Parameters: map[string]string{"replicaz": "3"}}, codes.InvalidArgument, "replicaz"},
		{"size parameter", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			Parameters: map[string]string{"size": "1G"}}, codes.InvalidArgument, "storage request"},
		{"bad replicas", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			Parameters: map[string]string{"replicas": "x"}}, codes.InvalidArgument, "replicas"},
		{"block", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{blockCap()}}, codes.InvalidArgument, "block"},
		{"fs type", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{{
			AccessMode: rwo.AccessMode, AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}}}}},
			codes.InvalidArgument, "ext4"},
		{"mount flag", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{
			mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "discard")}}, codes.InvalidArgument, "discard"},
		{"no access mode", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{
			mountCap(csi.VolumeCapability_AccessMode_UNKNOWN)}}, codes.InvalidArgument, "access mode"},
		{"single with multi-node", &csi.CreateVolumeRequest{Name: "a", Parameters: map[string]string{"access": "single"},
			VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}},
			codes.InvalidArgument, "access=single"},
		{"required above limit", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 10, LimitBytes: 5}}, codes.InvalidArgument, "limit"},
		{"beyond the cluster", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 50}}, codes.OutOfRange, `"a"`},
		{"from a snapshot", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			VolumeContentSource: &csi.VolumeContentSource{}}, codes.InvalidArgument, "snapshot"},
		{"foreign topology", &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{"zone": "x"}}}}},
			codes.ResourceExhausted, "c-test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.CreateVolume(ctx, tc.req)
			wantCode(t, err, tc.code, tc.mention)
		})
	}
	if len(d.c.vols) != 0 || len(d.c.calls) != 0 {
		t.Fatalf("refused requests changed the cluster: %v", d.c.calls)
	}
}

// The access-mode mapping: any multi-node mode makes a shared volume.
func TestAccessModeMapping(t *testing.T) {
	d := newTestDriver(t)
	for i, tc := range []struct {
		modes []csi.VolumeCapability_AccessMode_Mode
		want  string
	}{
		{[]csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}, volspec.AccessSingle},
		{[]csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY}, volspec.AccessSingle},
		{[]csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER}, volspec.AccessSingle},
		{[]csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER}, volspec.AccessSingle},
		{[]csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY}, volspec.AccessShared},
		{[]csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER}, volspec.AccessShared},
		{[]csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}, volspec.AccessShared},
		{[]csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY}, volspec.AccessShared},
	} {
		var caps []*csi.VolumeCapability
		for _, m := range tc.modes {
			caps = append(caps, mountCap(m))
		}
		v := d.create(t, fmt.Sprintf("m%d", i), 1<<20, nil, caps...)
		if got := d.c.vols[v.VolumeId].Access; got != tc.want {
			t.Errorf("modes %v: access %s, want %s", tc.modes, got, tc.want)
		}
	}
	// The shared StorageClass may ask for shared with a single-node claim.
	v := d.create(t, "sc-shared", 1<<20, map[string]string{"access": "shared"})
	if d.c.vols[v.VolumeId].Access != volspec.AccessShared {
		t.Error("access=shared parameter ignored")
	}
}

func TestCreateVolumeParametersAndNames(t *testing.T) {
	d := newTestDriver(t)
	v := d.create(t, "pvc-ec", 1<<20, map[string]string{"ec": "2+1", "csi.storage.k8s.io/pvc/name": "data",
		"csi.storage.k8s.io/pvc/namespace": "ci", "csi.storage.k8s.io/fstype": ""})
	bv := d.c.vols[v.VolumeId]
	if bv.Layout != (volspec.Layout{ECData: 2, ECParity: 1}) || bv.MinISR != 3 || bv.Labels[labelPVCName] != "data" || bv.Labels[labelPVCNamespace] != "ci" {
		t.Fatalf("volume %+v", bv)
	}
	// Names brick refuses map deterministically to valid ones.
	long := strings.Repeat("x", 100) + "-Ä"
	a := d.create(t, long, 1<<20, nil)
	b := d.create(t, long, 1<<20, nil)
	name := d.c.vols[a.VolumeId].Name
	if a.VolumeId != b.VolumeId || volspec.ValidateName(name) != nil || brickName(long+"y") == name {
		t.Fatalf("mapped %q to %q (ids %s %s)", long, name, a.VolumeId, b.VolumeId)
	}
	for _, n := range []string{"-x", "..", "a b", "ü", strings.Repeat(".", 70)} {
		if err := volspec.ValidateName(brickName(n)); err != nil {
			t.Errorf("brickName(%q) = %q: %v", n, brickName(n), err)
		}
	}
	if brickName("pvc-0b5e1c3a-9f2e-4a43-8d1e-2f7c0f6a9d11") != "pvc-0b5e1c3a-9f2e-4a43-8d1e-2f7c0f6a9d11" {
		t.Error("a Kubernetes claim name is not kept")
	}
}

func TestDeleteVolume(t *testing.T) {
	d := newTestDriver(t)
	_, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{})
	wantCode(t, err, codes.InvalidArgument)
	v := d.create(t, "a", 1<<20, nil)
	if _, err := d.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: v.VolumeId, NodeId: "n2", VolumeCapability: rwo}); err != nil {
		t.Fatal(err)
	}
	_, err = d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.VolumeId})
	wantCode(t, err, codes.FailedPrecondition, v.VolumeId)
	if _, err := d.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: v.VolumeId}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.VolumeId}); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.c.vols) != 0 {
		t.Fatal("volume not deleted")
	}
}

func TestControllerPublish(t *testing.T) {
	d := newTestDriver(t)
	v := d.create(t, "a", 1<<20, nil)
	id := v.VolumeId
	pub := func(node string, c *csi.VolumeCapability) error {
		_, err := d.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: node, VolumeCapability: c})
		return err
	}
	wantCode(t, pub("", rwo), codes.InvalidArgument, id)
	wantCode(t, pub("n1", nil), codes.InvalidArgument, id)
	wantCode(t, pub("n1", blockCap()), codes.InvalidArgument, "block")
	wantCode(t, pub("nx", rwo), codes.NotFound, "nx")
	_, err := d.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "v-0000000000000099", NodeId: "n1", VolumeCapability: rwo})
	wantCode(t, err, codes.NotFound, "v-0000000000000099")
	wantCode(t, pub("n1", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)), codes.InvalidArgument, "shared")
	for range 3 {
		if err := pub("n1", rwo); err != nil {
			t.Fatal(err)
		}
	}
	if e := d.c.vols[id].Epoch; e != 1 {
		t.Errorf("repeated publish moved the epoch to %d", e)
	}
	wantCode(t, pub("n2", rwo), codes.FailedPrecondition, id, "n1")
	for range 2 {
		if _, err := d.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: "n1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub("n2", rwo); err != nil {
		t.Fatal(err)
	}
	_, err = d.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{})
	wantCode(t, err, codes.InvalidArgument)
	if _, err := d.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: "v-gone", NodeId: "n1"}); err != nil {
		t.Fatalf("unpublishing a volume that is gone: %v", err)
	}
	// A shared volume goes to several nodes.
	s := d.create(t, "s", 1<<20, nil, mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER))
	for _, n := range []string{"n1", "n2", "n3"} {
		if _, err := d.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: s.VolumeId, NodeId: n,
			VolumeCapability: mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}); err != nil {
			t.Fatal(err)
		}
	}
	g, err := d.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: s.VolumeId})
	if err != nil || len(g.Status.PublishedNodeIds) != 3 {
		t.Fatalf("get: %v %v", g, err)
	}
}

func TestListVolumesPagination(t *testing.T) {
	d := newTestDriver(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, d.create(t, fmt.Sprintf("v%d", i), 1<<20, nil).VolumeId)
	}
	page := func(tok string, n int32) ([]string, string) {
		t.Helper()
		r, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: tok, MaxEntries: n})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range r.Entries {
			got = append(got, e.Volume.VolumeId)
		}
		return got, r.NextToken
	}
	p1, tok := page("", 2)
	if fmt.Sprint(p1) != fmt.Sprint(ids[:2]) || tok != ids[1] {
		t.Fatalf("page 1: %v %q", p1, tok)
	}
	// Deleting the last volume of a page does not invalidate its token.
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: ids[1]}); err != nil {
		t.Fatal(err)
	}
	p2, tok := page(tok, 2)
	p3, end := page(tok, 2)
	if fmt.Sprint(p2) != fmt.Sprint(ids[2:4]) || fmt.Sprint(p3) != fmt.Sprint(ids[4:]) || end != "" {
		t.Fatalf("pages %v %v, end %q", p2, p3, end)
	}
	all, end := page("", 0)
	if len(all) != 4 || end != "" {
		t.Fatalf("all: %v %q", all, end)
	}
	_, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "invalid-token"})
	wantCode(t, err, codes.Aborted, "invalid-token")
	_, err = d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: -1})
	wantCode(t, err, codes.InvalidArgument)
}

func TestValidateAndCapacity(t *testing.T) {
	d := newTestDriver(t)
	v := d.create(t, "a", 1<<20, map[string]string{"replicas": "2"})
	r, err := d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: v.VolumeId, VolumeCapabilities: []*csi.VolumeCapability{rwo}})
	if err != nil || r.Confirmed == nil {
		t.Fatalf("rwo: %v %v", r, err)
	}
	r, err = d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: v.VolumeId,
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}})
	if err != nil || r.Confirmed != nil || !strings.Contains(r.Message, "shared") {
		t.Fatalf("rwx on single: %v %v", r, err)
	}
	r, err = d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: v.VolumeId,
		VolumeCapabilities: []*csi.VolumeCapability{rwo}, Parameters: map[string]string{"replicas": "3"}})
	if err != nil || r.Confirmed != nil {
		t.Fatalf("other parameters: %v %v", r, err)
	}
	_, err = d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "v-nope", VolumeCapabilities: []*csi.VolumeCapability{rwo}})
	wantCode(t, err, codes.NotFound, "v-nope")
	c, err := d.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"replicas": "3"}})
	if err != nil || c.AvailableCapacity != 100<<30 {
		t.Fatalf("capacity: %v %v", c, err)
	}
	c, err = d.GetCapacity(ctx, &csi.GetCapacityRequest{AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyKey: "other"}}})
	if err != nil || c.AvailableCapacity != 0 {
		t.Fatalf("foreign topology: %v %v", c, err)
	}
	_, err = d.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"nope": "1"}})
	wantCode(t, err, codes.InvalidArgument, "nope")
}

func TestExpandVolume(t *testing.T) {
	d := newTestDriver(t)
	v := d.create(t, "a", 1<<20, nil)
	_, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: v.VolumeId})
	wantCode(t, err, codes.InvalidArgument, v.VolumeId)
	r, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: v.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 10}})
	if err != nil || r.CapacityBytes != 1<<20 {
		t.Fatalf("no-op expand: %v %v", r, err)
	}
	_, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: v.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 20}})
	wantCode(t, err, codes.Unimplemented, v.VolumeId)
	d.cfg.Expand = true
	r, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: v.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 20}})
	if err != nil || r.CapacityBytes != 2<<20 || r.NodeExpansionRequired {
		t.Fatalf("expand: %v %v", r, err)
	}
	_, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: v.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 60}})
	wantCode(t, err, codes.OutOfRange, v.VolumeId)
}

func TestNodeStagePublish(t *testing.T) {
	d := newTestDriver(t)
	v := d.create(t, "a", 1<<20, nil)
	id := v.VolumeId
	staging := filepath.Join(d.root, "plugins", "staging", "a")
	target := filepath.Join(d.root, "pods", "p1", "mount")
	stage := func(dir string, c *csi.VolumeCapability) error {
		_, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: dir, VolumeCapability: c})
		return err
	}
	publish := func(tgt string, ro bool, c *csi.VolumeCapability) error {
		_, err := d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: tgt,
			VolumeCapability: c, Readonly: ro})
		return err
	}
	// Refusals change nothing.
	wantCode(t, stage("/etc", rwo), codes.InvalidArgument, id, "outside")
	wantCode(t, stage(filepath.Join(d.root, "..", "x"), rwo), codes.InvalidArgument, "outside")
	wantCode(t, stage("relative", rwo), codes.InvalidArgument, "absolute")
	wantCode(t, stage(staging, blockCap()), codes.InvalidArgument, "block")
	wantCode(t, stage(staging, nil), codes.InvalidArgument, id)
	os.Symlink("/tmp", filepath.Join(d.root, "escape"))
	wantCode(t, stage(filepath.Join(d.root, "escape", "x"), rwo), codes.InvalidArgument, "outside")
	_, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "v-nope", StagingTargetPath: staging, VolumeCapability: rwo})
	wantCode(t, err, codes.NotFound, "v-nope")
	wantCode(t, publish(target, false, rwo), codes.FailedPrecondition, "not staged")
	if len(d.c.calls) != 1 || len(d.m.mounts) != 0 {
		t.Fatalf("refusals mounted something: %v %v", d.c.calls, d.m.mounts)
	}
	for range 3 {
		if err := stage(staging, rwo); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := publish(target, false, rwo); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.m.binds) != 1 || d.m.binds[0] != staging+"->"+target+" ro=false" {
		t.Fatalf("binds %v", d.m.binds)
	}
	wantCode(t, publish(target, true, rwo), codes.AlreadyExists, target)
	wantCode(t, publish("/var/lib/elsewhere", false, rwo), codes.InvalidArgument, "outside")
	// Read-only: asked for, or implied by a reader-only access mode.
	ro1, ro2 := filepath.Join(d.root, "pods", "p2", "mount"), filepath.Join(d.root, "pods", "p3", "mount")
	if err := publish(ro1, true, rwo); err != nil {
		t.Fatal(err)
	}
	if err := publish(ro2, false, mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{ro1, ro2} {
		if mp, ok, _ := d.m.Lookup(p); !ok || !mp.ReadOnly {
			t.Errorf("%s: %+v %v, want a read-only bind", p, mp, ok)
		}
	}
	st, err := d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	if err != nil || len(st.Usage) != 2 || st.VolumeCondition.Abnormal {
		t.Fatalf("stats: %v %v", st, err)
	}
	_, err = d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: "some/path"})
	wantCode(t, err, codes.NotFound, id)
	for _, p := range []string{target, ro1, ro2} {
		for range 2 {
			if _, err := d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: p}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s not removed: %v", p, err)
		}
	}
	for range 2 {
		if _, err := d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.m.mounts) != 0 || len(d.c.mounts) != 0 {
		t.Fatalf("left mounted: %v %v", d.m.mounts, d.c.mounts)
	}
	_, err = d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id})
	wantCode(t, err, codes.InvalidArgument, id)
}

func TestNodeInfoAndProbe(t *testing.T) {
	d := newTestDriver(t)
	info, err := d.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || info.NodeId != "n1" || info.AccessibleTopology.Segments[TopologyKey] != "c-test" {
		t.Fatalf("info %v %v", info, err)
	}
	p, _ := d.Probe(ctx, &csi.ProbeRequest{})
	if !p.Ready.GetValue() {
		t.Error("healthy cluster not ready")
	}
	d.c.status.Health = "unavailable"
	if p, _ := d.Probe(ctx, &csi.ProbeRequest{}); p.Ready.GetValue() {
		t.Error("cluster without leader is ready")
	}
	d.c.status.ClusterID = ""
	_, err = d.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	wantCode(t, err, codes.Unavailable, "n1")
}

func TestConcurrentRequestsForOneVolumeAbort(t *testing.T) {
	d := newTestDriver(t)
	unlock, err := d.lock("vol/v-1", "volume v-1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "v-1"})
	wantCode(t, err, codes.Aborted, "v-1")
	unlock()
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "v-1"}); err != nil {
		t.Fatal(err)
	}
}

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]string{"unix:///run/csi/csi.sock": "/run/csi/csi.sock", "/run/x.sock": "/run/x.sock", "unix:///a/../b.sock": "/b.sock"} {
		if got, err := ParseEndpoint(in); err != nil || got != want {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "tcp://1.2.3.4:5", "unix://relative", "csi.sock"} {
		if _, err := ParseEndpoint(bad); err == nil {
			t.Errorf("ParseEndpoint(%q) accepted", bad)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	for err, code := range map[error]codes.Code{
		fmt.Errorf("x: %w", ErrNotFound): codes.NotFound, fmt.Errorf("x: %w", ErrExists): codes.AlreadyExists,
		fmt.Errorf("x: %w", ErrHeld): codes.FailedPrecondition, fmt.Errorf("x: %w", ErrInvalid): codes.InvalidArgument,
		fmt.Errorf("x: %w", ErrUnavailable): codes.Unavailable, fmt.Errorf("x: %w", ErrUnsupported): codes.Unimplemented,
		fmt.Errorf("x: %w", context.DeadlineExceeded): codes.DeadlineExceeded, fmt.Errorf("boom"): codes.Internal,
	} {
		got := toStatus(err, "doing %s", "v-1")
		if status.Code(got) != code || !strings.Contains(got.Error(), "doing v-1") {
			t.Errorf("%v -> %v", err, got)
		}
	}
}
