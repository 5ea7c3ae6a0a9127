package mounter

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/brickvol/brick/auth"
)

// TestConnsReachTheLocalDaemonThroughItsSocket: the daemon at the local
// address is dialled through its unix socket (a real gRPC server answers
// there, and nothing listens at the TCP address); other addresses are not.
func TestConnsReachTheLocalDaemonThroughItsSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "brick.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	defer srv.Stop()

	key, err := auth.NewKey("test-cluster-key-of-enough-length")
	if err != nil {
		t.Fatal(err)
	}
	c := newConns(key, "test")
	c.local, c.socket = "127.0.0.1:1", sock // port 1: nothing there
	defer c.closeAll()
	cc, err := c.get(c.local)
	if err != nil {
		t.Fatal(err)
	}
	if got := cc.Target(); got != "unix://"+sock {
		t.Errorf("local daemon dialled at %q, want its socket", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("a call through the socket: %v", err)
	}
	other, err := c.get("127.0.0.2:7400")
	if err != nil {
		t.Fatal(err)
	}
	if got := other.Target(); got != "passthrough:///127.0.0.2:7400" {
		t.Errorf("another daemon dialled at %q, want its TCP address", got)
	}
}
