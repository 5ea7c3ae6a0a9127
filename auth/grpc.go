package auth

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Flow-control windows of the cluster's gRPC connections, for clients
// (NewClient) and servers alike. Static windows turn off gRPC's
// bandwidth-delay probing, a PING and its answer on a connection for
// every few stream messages: a replication stream sent one for every
// three or four fsyncs, each a write and a wake-up on both ends. A
// stream window of 8 MiB holds eight 1 MiB write messages in flight (the
// probing's own ceiling is 16 MiB).
const (
	StreamWindow = 8 << 20
	ConnWindow   = 32 << 20
)

// NewClient opens a gRPC client connection to a daemon at addr, over a TLS
// connection authenticated with the cluster key (Dial). gRPC runs without
// credentials of its own on top. It reconnects fast: a restarted brickd is
// back within a second, and a head must reach it well inside the replica
// timeout.
func (k *Key) NewClient(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return k.Dial(ctx, a) }),
		grpc.WithInitialWindowSize(StreamWindow), grpc.WithInitialConnWindowSize(ConnWindow),
	}
	return grpc.NewClient("passthrough:///"+addr, append(base, opts...)...)
}
