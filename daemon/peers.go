package daemon

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"

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
	c, err := p.key.NewClient(addr)
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
