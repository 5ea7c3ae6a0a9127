package daemon

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/plugin/docker"
	"github.com/brickvol/brick/proto/brickpb"
)

func TestDockerConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.Name = "n1"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.DockerSocket = "brick.sock" }, "--docker-socket"},
		{func(c *Config) { c.DockerMountRoot = "mnt" }, "--docker-mount-root"},
		{func(c *Config) { c.DockerTimeout = 0 }, "--docker-timeout"},
	} {
		c := DefaultConfig()
		c.Name = "n1"
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
	c.DockerSocket = "" // disabled
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Control-service errors, local sentinels or forwarded statuses, reach the
// plugin as its kinds with the daemon's message.
func TestDockerErr(t *testing.T) {
	for _, tc := range []struct {
		err  error
		kind error
		msg  string
	}{
		{fmt.Errorf("volume %q: %w", "x", control.ErrNotFound), docker.ErrNotFound, `volume "x": not found`},
		{status.Error(codes.NotFound, "volume x: not found"), docker.ErrNotFound, "volume x: not found"},
		{fmt.Errorf("volume %q already exists: %w", "x", control.ErrExists), docker.ErrExists, `volume "x" already exists: already exists`},
		{status.Error(codes.FailedPrecondition, "volume x is attached to n2"), docker.ErrInUse, "volume x is attached to n2"},
		{fmt.Errorf("delete: %w on n2", control.ErrAttached), docker.ErrInUse, "delete: volume is attached on n2"},
		{status.Error(codes.InvalidArgument, "bad"), docker.ErrInvalid, "bad"},
		{fmt.Errorf("%w: 1 of 3", errNoLeader), docker.ErrUnavailable, "no Raft leader: 1 of 3"},
		{errors.New("disk on fire"), nil, "disk on fire"},
	} {
		err := dockerErr(tc.err)
		if err.Error() != tc.msg {
			t.Errorf("%v: message %q, want %q", tc.err, err, tc.msg)
		}
		if tc.kind != nil && !errors.Is(err, tc.kind) {
			t.Errorf("%v: not %v", tc.err, tc.kind)
		}
	}
	if dockerErr(nil) != nil {
		t.Error("nil is an error")
	}
}

func TestDockerVolumeNames(t *testing.T) {
	pv := &brickpb.Volume{Name: "data", Layout: "replicas=3", SizeBytes: 1 << 30, Access: "single", MinIsr: 2, Epoch: 4,
		HeadName: "n1", State: "degraded", StateReason: "a brick is down", CreatedUnixMs: 1_800_000_000_000,
		Placement: []*brickpb.Placement{{BrickId: "b-1", BrickName: "n1"}, {BrickId: "b-2", BrickName: "n2"}, {BrickId: "b-3", BrickName: "n3"}},
		Isr:       []string{"b-1", "b-3"}, Attachments: []*brickpb.Attachment{{BrickId: "b-1", BrickName: "n1"}}}
	v := dockerVolume(pv)
	if strings.Join(v.InSync, ",") != "n1,n3" || strings.Join(v.Placement, ",") != "n1,n2,n3" || strings.Join(v.Attached, ",") != "n1" ||
		v.Head != "n1" || v.MinISR != 2 || v.Epoch != 4 || v.State != "degraded" || !v.CreatedAt.Equal(time.UnixMilli(1_800_000_000_000)) {
		t.Errorf("%+v", v)
	}
	if got := driverName("/run/docker/plugins/bricktest50.sock"); got != "bricktest50" {
		t.Errorf("driver name %q", got)
	}
}

func TestDockerHealText(t *testing.T) {
	got := healText([]*brickpb.HealProgress{
		{BrickName: "n3", State: "healing", Phase: "op-log", BytesRemaining: 25 << 20, BytesTotal: 100 << 20, OpsRemaining: 441,
			RateBytesPerSec: 12 << 20, EtaMs: 4200},
		{BrickId: "b-2", State: "unreachable", BytesRemaining: -1, EtaMs: -1, Reason: "no answer"},
	})
	want := "n3 healing (op-log) 75%, 25 MiB and 441 ops left, 12 MiB/s, eta 4s; b-2 unreachable, 0 ops left: no answer"
	if got != want {
		t.Errorf("heal text\n got %q\nwant %q", got, want)
	}
	if healText(nil) != "" {
		t.Error("no heals is not empty")
	}
}
