package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/chaos/harness"
)

// The CSI scenarios use 127.0.60.x to 127.0.65.x.
const (
	netCSISanity = 60 + iota
	netCSIFailover
	netCSIRestart
	netCSIBadInput
)

// csiNode is a daemon that serves the CSI driver on a socket of its own,
// with a kubelet directory under the scenario's directory.
type csiNode struct {
	*harness.Daemon
	Socket, Kubelet string
}

// startCSICluster starts three daemons; each serves CSI.
// sanityRan is set once the sanity suite ran in this test process.
var sanityRan atomic.Bool

func startCSICluster(t *testing.T, subnet int) []*csiNode {
	t.Helper()
	cl := harness.New(t, subnet)
	var out []*csiNode
	var first *harness.Daemon
	for _, name := range []string{"n1", "n2", "n3"} {
		dir := filepath.Join(cl.Dir, name+"-csi")
		n := &csiNode{Socket: filepath.Join(dir, "csi.sock"), Kubelet: filepath.Join(dir, "kubelet")}
		if err := os.MkdirAll(n.Kubelet, 0o750); err != nil {
			t.Fatal(err)
		}
		env := []string{"BRICK_CSI_ENDPOINT=unix://" + n.Socket, "BRICK_CSI_KUBELET_DIR=" + n.Kubelet,
			"BRICK_FAILOVER_TIMEOUT=3s"}
		if first != nil {
			env = append(env, "BRICK_PEERS="+first.GossipAddr())
		}
		n.Daemon = cl.Add(name, env...).Start()
		if first == nil {
			first = n.Daemon
		}
		out = append(out, n)
	}
	for _, n := range out {
		waitRoles(t, n.Daemon, 60*time.Second, func(ps []peer) bool { return voters(ps) == 3 && leaderOf(ps) != "" })
	}
	return out
}

// Promise (the CSI issue, test 1): csi-test's sanity suite passes against
// the real driver served by a real brickd of a three-daemon cluster.
func TestCSISanity(t *testing.T) {
	needFUSE(t)
	if sanityRan.Swap(true) {
		t.Skip("SKIPPING: ginkgo runs one suite per process; the sanity suite already ran (-count > 1)")
	}
	// A failed spec is restated last, after the daemons' log tails the
	// harness prints, so that it survives a CI excerpt of the output's end
	// (cleanups run last-registered first).
	var failures []string
	var seed int64
	t.Cleanup(func() {
		for _, f := range failures {
			t.Errorf("sanity spec failed (replay the order with -ginkgo.seed=%d): %s", seed, f)
		}
	})
	ns := startCSICluster(t, netCSISanity)
	n := ns[0]
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + n.Socket
	cfg.StagingPath = filepath.Join(n.Kubelet, "csi-staging")
	cfg.TargetPath = filepath.Join(n.Kubelet, "csi-target")
	cfg.TestVolumeSize = 64 << 20
	cfg.TestVolumeExpandSize = 128 << 20
	cfg.IdempotentCount = 3

	var passed, skipped, failed, total int
	ginkgo.ReportAfterSuite("brick CSI sanity counts", func(r ginkgo.Report) {
		seed = r.SuiteConfig.RandomSeed
		for _, s := range r.SpecReports {
			if s.LeafNodeType != types.NodeTypeIt {
				continue
			}
			total++
			switch s.State {
			case types.SpecStatePassed:
				passed++
			case types.SpecStateSkipped, types.SpecStatePending:
				skipped++
				t.Logf("skipped: %s: %s", s.FullText(), strings.TrimSpace(s.Failure.Message))
			default:
				failed++
				failures = append(failures, fmt.Sprintf("%s (%s, %s after the suite started, took %s): %s at %s",
					s.FullText(), s.State, s.StartTime.Sub(r.StartTime).Round(time.Millisecond),
					s.RunTime.Round(time.Millisecond), strings.TrimSpace(s.Failure.Message), s.Failure.Location))
			}
		}
	})
	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	ginkgo.RunSpecs(t, "brick CSI sanity")
	sc.Finalize()
	if !n.LogContains("volume mounted") || !n.LogContains("volume published on this node") {
		t.Error("the sanity run never mounted a volume through the mount process and a bind")
	}
	t.Logf("CSI sanity: %d specs, %d passed, %d skipped, %d failed (seed %d)", total, passed, skipped, failed, seed)
}

// csiClient is a CSI client of one daemon's socket.
type csiClient struct {
	csi.IdentityClient
	csi.ControllerClient
	csi.NodeClient
}

func dialCSI(t *testing.T, n *csiNode) csiClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+n.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csiClient{csi.NewIdentityClient(conn), csi.NewControllerClient(conn), csi.NewNodeClient(conn)}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var csiRWO = &csi.VolumeCapability{
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
}

// csiCreate creates a volume through the controller, retrying while the
// cluster elects a leader.
func csiCreate(t *testing.T, c csiClient, name string, params map[string]string) *csi.Volume {
	t.Helper()
	var vol *csi.Volume
	harness.Eventually(t, 60*time.Second, "CreateVolume "+name, func() (bool, string) {
		r, err := c.CreateVolume(callCtx(t), &csi.CreateVolumeRequest{Name: name, Parameters: params,
			CapacityRange: &csi.CapacityRange{RequiredBytes: 256 << 20}, VolumeCapabilities: []*csi.VolumeCapability{csiRWO}})
		if err == nil {
			vol = r.Volume
		}
		return err == nil, fmt.Sprint(err)
	})
	return vol
}

// publishOn stages and publishes vol on node n (the kubelet's two steps)
// and returns the target path.
func publishOn(t *testing.T, n *csiNode, c csiClient, volID, pod string) (staging, target string) {
	t.Helper()
	staging = filepath.Join(n.Kubelet, "plugins", "kubernetes.io", "csi", "brick.csi.brickvol.io", volID, "globalmount")
	target = filepath.Join(n.Kubelet, "pods", pod, "volumes", "kubernetes.io~csi", volID, "mount")
	if _, err := c.NodeStageVolume(callCtx(t), &csi.NodeStageVolumeRequest{VolumeId: volID, StagingTargetPath: staging, VolumeCapability: csiRWO}); err != nil {
		t.Fatalf("NodeStageVolume %s on %s: %v", volID, n.Name, err)
	}
	if _, err := c.NodePublishVolume(callCtx(t), &csi.NodePublishVolumeRequest{VolumeId: volID, StagingTargetPath: staging,
		TargetPath: target, VolumeCapability: csiRWO}); err != nil {
		t.Fatalf("NodePublishVolume %s on %s: %v", volID, n.Name, err)
	}
	t.Cleanup(func() {
		syscall.Unmount(target, syscall.MNT_DETACH)
		syscall.Unmount(staging, syscall.MNT_DETACH)
	})
	return staging, target
}

// writeSynced writes a file and fsyncs it and its directory.
func writeSynced(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatalf("create %s in %s: %v", name, dir, err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", name, err)
	}
	f.Close()
	syncDir(t, dir)
}

// killHost kills a daemon and its mount processes with SIGKILL, as a host
// dying does, and lazily unmounts what the dead mount processes served.
func killHost(t *testing.T, n *csiNode, also ...string) {
	t.Helper()
	n.Kill()
	recs, _ := filepath.Glob(filepath.Join(n.DataDir, "mounts", "*.json"))
	for _, p := range recs {
		var r struct {
			PID int    `json:"pid"`
			Dir string `json:"dir"`
		}
		b, _ := os.ReadFile(p)
		if json.Unmarshal(b, &r) == nil && r.PID > 0 {
			syscall.Kill(r.PID, syscall.SIGKILL)
			also = append(also, r.Dir)
		}
	}
	for _, d := range also {
		syscall.Unmount(d, syscall.MNT_DETACH)
	}
}

// The CSI issue, test 2: a volume published to node A, written with fsync,
// survives A's daemon and mount process dying: after the failover timeout
// ControllerPublish to node B succeeds and B sees every fsync'd byte.
func TestCSIFailoverToAnotherNode(t *testing.T) {
	needFUSE(t)
	ns := startCSICluster(t, netCSIFailover)
	a, b, ctl := ns[0], ns[1], dialCSI(t, ns[2])
	ca, cb := dialCSI(t, a), dialCSI(t, b)
	vol := csiCreate(t, ctl, "pvc-failover", map[string]string{"replicas": "3", "minIsr": "2"})
	if _, err := ctl.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: a.Name,
		VolumeCapability: csiRWO}); err != nil {
		t.Fatalf("ControllerPublishVolume to %s: %v", a.Name, err)
	}
	stagingA, targetA := publishOn(t, a, ca, vol.VolumeId, "pod-a")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	writeSynced(t, targetA, "db.bin", data)
	// While A holds it, B may not have it.
	_, err := ctl.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: b.Name, VolumeCapability: csiRWO})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("publishing to %s while %s holds the volume: %v, want FailedPrecondition", b.Name, a.Name, err)
	}
	killHost(t, a, targetA, stagingA)
	killed := time.Now()
	t.Logf("kill -9 of %s's daemon and mount process", a.Name)
	var last error
	harness.Eventually(t, 90*time.Second, "ControllerPublishVolume to "+b.Name+" after the failover timeout", func() (bool, string) {
		_, last = ctl.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: b.Name, VolumeCapability: csiRWO})
		return last == nil, fmt.Sprint(last)
	})
	t.Logf("ControllerPublishVolume to %s succeeded %v after the kill", b.Name, time.Since(killed).Round(100*time.Millisecond))
	_, targetB := publishOn(t, b, cb, vol.VolumeId, "pod-b")
	got, err := os.ReadFile(filepath.Join(targetB, "db.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("on %s after the failover: %d bytes, %v; want the %d fsync'd bytes", b.Name, len(got), err, len(data))
	}
	writeSynced(t, targetB, "after.bin", []byte("B writes"))
	t.Logf("first write on %s done %v after the kill", b.Name, time.Since(killed).Round(100*time.Millisecond))
}

// The CSI issue, test 3: restarting the node plugin (brickd, by SIGTERM and
// by SIGKILL) while a volume is published leaves the target path working,
// and the restarted driver unpublishes and unstages it.
func TestCSINodePluginRestart(t *testing.T) {
	needFUSE(t)
	ns := startCSICluster(t, netCSIRestart)
	n := ns[0]
	c := dialCSI(t, n)
	vol := csiCreate(t, c, "pvc-restart", nil)
	if _, err := c.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: n.Name,
		VolumeCapability: csiRWO}); err != nil {
		t.Fatal(err)
	}
	staging, target := publishOn(t, n, c, vol.VolumeId, "pod")
	writeSynced(t, target, "before", []byte("before the restart"))
	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		if how == "SIGTERM" {
			n.Term()
		} else {
			n.Kill()
		}
		// While brickd is down the mount serves on.
		writeSynced(t, target, "while-down-"+how, []byte(how))
		n.Start()
		writeSynced(t, target, "after-"+how, []byte(how))
		for _, f := range []string{"before", "while-down-" + how} {
			if _, err := os.ReadFile(filepath.Join(target, f)); err != nil {
				t.Fatalf("after the %s restart: %v", how, err)
			}
		}
		t.Logf("target path kept working across a %s restart of brickd", how)
	}
	unpublishAfterRestart(t, n, vol.VolumeId, staging, target)
}

// unpublishAfterRestart waits for a restarted node plugin to answer, then
// unpublishes and unstages a volume it published before the restart: the
// proof that the restarted brickd adopted the mount.
func unpublishAfterRestart(t *testing.T, n *csiNode, volID, staging, target string) {
	t.Helper()
	c := dialCSI(t, n)
	harness.Eventually(t, 60*time.Second, "the restarted driver answers", func() (bool, string) {
		_, err := c.NodeGetInfo(callCtx(t), &csi.NodeGetInfoRequest{})
		return err == nil, fmt.Sprint(err)
	})
	if _, err := c.NodeUnpublishVolume(callCtx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NodeUnstageVolume(callCtx(t), &csi.NodeUnstageVolumeRequest{VolumeId: volID, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if isMounted(staging) || isMounted(target) {
		t.Fatal("still mounted after unpublish and unstage")
	}
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// The CSI issue, test 4: bad requests get the right code and create or
// mount nothing.
func TestCSIBadRequests(t *testing.T) {
	needFUSE(t)
	ns := startCSICluster(t, netCSIBadInput)
	n := ns[0]
	c := dialCSI(t, n)
	vol := csiCreate(t, c, "pvc-ok", nil)
	mountsBefore, _ := os.ReadFile("/proc/self/mountinfo")
	block := &csi.VolumeCapability{AccessMode: csiRWO.AccessMode, AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}
	outside := filepath.Join(c0(n).Dir, "not-kubelet", "staging")
	for _, tc := range []struct {
		what string
		call func() error
		code codes.Code
	}{
		{"CreateVolume without a name", func() error {
			_, err := c.CreateVolume(callCtx(t), &csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{csiRWO}})
			return err
		}, codes.InvalidArgument},
		{"CreateVolume with an unknown parameter", func() error {
			_, err := c.CreateVolume(callCtx(t), &csi.CreateVolumeRequest{Name: "bad-param", VolumeCapabilities: []*csi.VolumeCapability{csiRWO},
				Parameters: map[string]string{"replicaz": "3"}})
			return err
		}, codes.InvalidArgument},
		{"CreateVolume beyond what the cluster has", func() error {
			_, err := c.CreateVolume(callCtx(t), &csi.CreateVolumeRequest{Name: "too-big", VolumeCapabilities: []*csi.VolumeCapability{csiRWO},
				CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 60}})
			return err
		}, codes.OutOfRange},
		{"CreateVolume with more replicas than bricks", func() error {
			_, err := c.CreateVolume(callCtx(t), &csi.CreateVolumeRequest{Name: "too-wide", VolumeCapabilities: []*csi.VolumeCapability{csiRWO},
				Parameters: map[string]string{"replicas": "5"}})
			return err
		}, codes.ResourceExhausted},
		{"CreateVolume with block access", func() error {
			_, err := c.CreateVolume(callCtx(t), &csi.CreateVolumeRequest{Name: "block", VolumeCapabilities: []*csi.VolumeCapability{block}})
			return err
		}, codes.InvalidArgument},
		{"DeleteVolume without a volume ID", func() error {
			_, err := c.DeleteVolume(callCtx(t), &csi.DeleteVolumeRequest{})
			return err
		}, codes.InvalidArgument},
		{"ControllerPublishVolume without a volume ID", func() error {
			_, err := c.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{NodeId: n.Name, VolumeCapability: csiRWO})
			return err
		}, codes.InvalidArgument},
		{"ControllerPublishVolume to an unknown node", func() error {
			_, err := c.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: "nobody", VolumeCapability: csiRWO})
			return err
		}, codes.NotFound},
		{"NodeStageVolume without a volume ID", func() error {
			_, err := c.NodeStageVolume(callCtx(t), &csi.NodeStageVolumeRequest{StagingTargetPath: filepath.Join(n.Kubelet, "s"), VolumeCapability: csiRWO})
			return err
		}, codes.InvalidArgument},
		{"NodeStageVolume with block access", func() error {
			_, err := c.NodeStageVolume(callCtx(t), &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: filepath.Join(n.Kubelet, "s"), VolumeCapability: block})
			return err
		}, codes.InvalidArgument},
		{"NodeStageVolume outside the staging root", func() error {
			_, err := c.NodeStageVolume(callCtx(t), &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: outside, VolumeCapability: csiRWO})
			return err
		}, codes.InvalidArgument},
		{"NodeStageVolume of an unknown volume", func() error {
			_, err := c.NodeStageVolume(callCtx(t), &csi.NodeStageVolumeRequest{VolumeId: "v-0000000000000000", StagingTargetPath: filepath.Join(n.Kubelet, "s"), VolumeCapability: csiRWO})
			return err
		}, codes.NotFound},
		{"NodePublishVolume outside the root", func() error {
			_, err := c.NodePublishVolume(callCtx(t), &csi.NodePublishVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: filepath.Join(n.Kubelet, "s"),
				TargetPath: "/etc/brick-target", VolumeCapability: csiRWO})
			return err
		}, codes.InvalidArgument},
		{"NodePublishVolume of an unstaged volume", func() error {
			_, err := c.NodePublishVolume(callCtx(t), &csi.NodePublishVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: filepath.Join(n.Kubelet, "s"),
				TargetPath: filepath.Join(n.Kubelet, "t"), VolumeCapability: csiRWO})
			return err
		}, codes.FailedPrecondition},
	} {
		err := tc.call()
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.what, err, tc.code)
			continue
		}
		if msg := status.Convert(err).Message(); len(msg) < 20 {
			t.Errorf("%s: message %q says too little", tc.what, msg)
		}
		t.Logf("%s: %v: %s", tc.what, tc.code, status.Convert(err).Message())
	}
	r, err := c.ListVolumes(callCtx(t), &csi.ListVolumesRequest{})
	if err != nil || len(r.Entries) != 1 || r.Entries[0].Volume.VolumeId != vol.VolumeId {
		t.Errorf("volumes after the bad requests: %v %v, want only %s", r, err, vol.VolumeId)
	}
	if recs, _ := filepath.Glob(filepath.Join(n.DataDir, "mounts", "*.json")); len(recs) != 0 {
		t.Errorf("bad requests started mount processes: %v", recs)
	}
	after, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(after), "\n") {
		if (strings.Contains(line, c0(n).Dir) || strings.Contains(line, "/etc/brick-target")) && !strings.Contains(string(mountsBefore), line) {
			t.Errorf("a bad request mounted something: %s", line)
		}
	}
	for _, p := range []string{outside, "/etc/brick-target", filepath.Join(n.Kubelet, "t")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("a bad request created %s", p)
		}
	}
}

func c0(n *csiNode) *harness.Cluster { return n.Cluster() }
