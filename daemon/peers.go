package daemon

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/brickvol/brick/auth"
	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/proto/brickpb"
)

// peerClients keeps one gRPC connection per peer address. Connections are
// authenticated by the cluster key at the TLS layer (auth.Key.Dial), so gRPC
// itself runs without credentials on top.
type peerClients struct {
	key       *auth.Key
	self      control.BrickID
	clusterID func() string

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerClients(key *auth.Key, self control.BrickID, clusterID func() string) *peerClients {
	return &peerClients{key: key, self: self, clusterID: clusterID, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerClients) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Reconnect fast: a restarted brickd is back within a second, and a
		// head must reach it well inside the replica timeout.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return p.key.Dial(ctx, a) }))
	if err != nil {
		return nil, fmt.Errorf("connecting to peer %s: %w", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerClients) control(addr string) (brickpb.ControlClient, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	return brickpb.NewControlClient(c), nil
}

func (p *peerClients) peer(addr string) (brickpb.PeerClient, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	return brickpb.NewPeerClient(c), nil
}

// header is what this daemon puts on its outgoing requests.
func (p *peerClients) header(hops uint32) *brickpb.Header {
	return &brickpb.Header{
		ClusterId:       p.clusterID(),
		SenderId:        string(p.self),
		ProtocolVersion: brickpb.ProtocolVersion,
		Hops:            hops,
	}
}

func (p *peerClients) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}
