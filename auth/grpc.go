package auth

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
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
	}
	return grpc.NewClient("passthrough:///"+addr, append(base, opts...)...)
}
