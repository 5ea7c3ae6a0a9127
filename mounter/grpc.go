package mounter

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"

	"github.com/brickvol/brick/auth"
	"github.com/brickvol/brick/proto/brickpb"
)

// conns dials daemons over TLS authenticated by the cluster key and keeps
// one gRPC connection per address.
type conns struct {
	key    *auth.Key
	sender string

	mu sync.Mutex
	m  map[string]*grpc.ClientConn
}

func newConns(key *auth.Key, sender string) *conns {
	return &conns{key: key, sender: sender, m: map[string]*grpc.ClientConn{}}
}

func (c *conns) get(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.m[addr]; ok {
		return cc, nil
	}
	cc, err := c.key.NewClient(addr, append([]grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20))}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	c.m[addr] = cc
	return cc, nil
}

func (c *conns) header() *brickpb.Header {
	return &brickpb.Header{SenderId: c.sender, ProtocolVersion: brickpb.ProtocolVersion}
}

func (c *conns) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, cc := range c.m {
		cc.Close()
		delete(c.m, a)
	}
}
