package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/volspec"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Name = "n1"
	if err := good.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Name = "" }, "--name"},
		{func(c *Config) { c.Name = "a b" }, "--name"},
		{func(c *Config) { c.Bind = "localhost" }, "--bind"},
		{func(c *Config) { c.Bind = "0.0.0.0" }, "wildcard"},
		{func(c *Config) { c.DataDir = "" }, "--data-dir"},
		{func(c *Config) { c.Peers = []string{"h:notaport"} }, "--peers"},
		{func(c *Config) { c.Peers = []string{""} }, "--peers"},
		{func(c *Config) { c.BootstrapExpect = 0 }, "--bootstrap-expect"},
		{func(c *Config) { c.GRPCPort = 70000 }, "--grpc-port"},
		{func(c *Config) { c.GossipProfile = "wan" }, "--gossip-profile"},
		{func(c *Config) { c.DeadVoterTimeout = 0 }, "--dead-voter-timeout"},
		{func(c *Config) { c.ReplicaTimeout = -time.Second }, "--replica-timeout"},
		{func(c *Config) { c.WritebackWindow = 4096 }, "--writeback-window"},
		{func(c *Config) { c.WritebackWindow = -1 }, "--writeback-window"},
		{func(c *Config) { c.DirectWriteMin = 1000 }, "--direct-write-min"},
		{func(c *Config) { c.DirectWriteMin = 6 << 10 }, "--direct-write-min"},
		{func(c *Config) { c.DirectWriteMin = -4096 }, "--direct-write-min"},
		{func(c *Config) { c.SpareFiles = -1 }, "--spare-files"},
		{func(c *Config) { c.SpareFiles = 1<<20 + 1 }, "--spare-files"},
		{func(c *Config) { c.ReplicationStream = "http" }, "--replication-stream"},
		{func(c *Config) { c.ReplicationStream = "" }, "--replication-stream"},
	} {
		c := good
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
}

// The daemon's "off" (0) must reach a replica as off, not as the
// replica's own default.
func TestOffReachesReplicas(t *testing.T) {
	c := DefaultConfig()
	if w := c.replicaOptions(nil).WritebackWindow; w != 8<<20 {
		t.Errorf("default window %d, want 8 MiB", w)
	}
	c.WritebackWindow = 0
	if w := c.replicaOptions(nil).WritebackWindow; w >= 0 {
		t.Errorf("--writeback-window 0 gives replicas %d, want a negative (off)", w)
	}
	if n := c.replicaOptions(nil).DirectWriteMin; n > 0 {
		t.Errorf("default direct-write minimum %d, want off", n)
	}
	c.DirectWriteMin = 256 << 10
	if n := c.replicaOptions(nil).DirectWriteMin; n != 256<<10 {
		t.Errorf("--direct-write-min 256K gives replicas %d", n)
	}
	if n := c.replicaOptions(nil).SpareFiles; n != 16384 {
		t.Errorf("default spare files %d, want 16384", n)
	}
	c.SpareFiles = 0
	if n := c.replicaOptions(nil).SpareFiles; n >= 0 {
		t.Errorf("--spare-files 0 gives replicas %d, want a negative (none)", n)
	}
}

func TestSplitPeer(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.1": "10.0.0.1:7401", "10.0.0.1:9000": "10.0.0.1:9000",
		"host": "host:7401", "[::1]:7000": "::1:7000", "::1": "::1:7401"} {
		h, p, err := SplitPeer(in, DefaultGossipPort)
		if got := fmt.Sprintf("%s:%d", h, p); err != nil || got != want {
			t.Errorf("SplitPeer(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", " ", "h:0", "h:x", ":7401", "a:b:c"} {
		if _, _, err := SplitPeer(in, DefaultGossipPort); err == nil {
			t.Errorf("SplitPeer(%q) accepted", in)
		}
	}
}

func TestBrickIDPersistsAndCorruptionIsRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "brick-id")
	a, err := loadOrCreateID(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadOrCreateID(p)
	if err != nil || a != b {
		t.Fatalf("second load: %q %v, want %q", b, err, a)
	}
	os.WriteFile(p, []byte("garbage"), 0o600)
	if _, err := loadOrCreateID(p); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt ID file: %v", err)
	}
}

func TestToStatusMapsSentinels(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("x: %w", control.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", control.ErrExists), codes.AlreadyExists},
		{fmt.Errorf("x: %w", control.ErrAttached), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", control.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("x: %w", volspec.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("x: %w", control.ErrStaleEpoch), codes.Aborted},
		{fmt.Errorf("x: %w", control.ErrNotLeader), codes.Unavailable},
		{fmt.Errorf("x: %w", errNoLeader), codes.Unavailable},
		{errors.New("boom"), codes.Internal},
		{status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.code {
			t.Errorf("toStatus(%v) = %v, want %v", tc.err, got, tc.code)
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}
