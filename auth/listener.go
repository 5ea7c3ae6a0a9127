package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// HandshakeTimeout bounds how long an unauthenticated connection may hold a
// handshake goroutine.
const HandshakeTimeout = 5 * time.Second

// Listener wraps a TCP listener so that Accept returns only connections that
// completed a TLS handshake with this cluster's key. A peer without the key is
// logged (once per address per minute) and dropped; it never reaches the
// protocol above (gRPC, Raft), so that protocol needs no credentials of its
// own.
type Listener struct {
	inner   net.Listener
	key     *Key
	log     *slog.Logger
	service string

	conns chan net.Conn
	done  chan struct{}
	once  sync.Once

	mu       sync.Mutex
	lastWarn map[string]time.Time
	routed   map[string]chan net.Conn // ALPN protocol → its Route's connections
}

// Listen wraps ln. service names what is served ("grpc", "raft") in logs.
func (k *Key) Listen(ln net.Listener, service string, log *slog.Logger) *Listener {
	l := &Listener{
		inner: ln, key: k, log: log, service: service,
		conns: make(chan net.Conn), done: make(chan struct{}),
		lastWarn: map[string]time.Time{}, routed: map[string]chan net.Conn{},
	}
	go l.acceptLoop()
	return l
}

func (l *Listener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			l.Close()
			return
		}
		go l.handshake(c)
	}
}

func (l *Listener) handshake(c net.Conn) {
	tc := tls.Server(c, l.key.ServerTLS())
	tc.SetDeadline(time.Now().Add(HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		l.warn(c.RemoteAddr().String(), err)
		c.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	to := l.conns
	if p := tc.ConnectionState().NegotiatedProtocol; p == ProtoReplicate {
		l.mu.Lock()
		to = l.routed[p]
		l.mu.Unlock()
		if to == nil { // nobody serves it on this listener (Raft's)
			tc.Close()
			return
		}
	}
	select {
	case to <- tc:
	case <-l.done:
		tc.Close()
	}
}

func (l *Listener) warn(addr string, err error) {
	host, _, _ := net.SplitHostPort(addr)
	l.mu.Lock()
	last, seen := l.lastWarn[host]
	now := time.Now()
	if seen && now.Sub(last) < time.Minute {
		l.mu.Unlock()
		return
	}
	l.lastWarn[host] = now
	l.mu.Unlock()
	l.log.Warn("connection refused: peer failed cluster authentication",
		"service", l.service, "from", addr, "reason", describe(err))
}

func describe(err error) string {
	if errors.Is(err, ErrWrongKey) {
		return ErrWrongKey.Error()
	}
	return fmt.Sprintf("%v (a peer must use TLS with this cluster's BRICK_CLUSTER_KEY)", err)
}

// Accept returns the next authenticated connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; established connections are not touched.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Route is the listener of the connections that negotiated protocol
// (ProtoReplicate, the only one) through ALPN; Accept never returns them.
// Until Route is called such connections are closed after the handshake.
// Closing the route closes l.
func (l *Listener) Route(protocol string) (net.Listener, error) {
	if protocol != ProtoReplicate {
		return nil, fmt.Errorf("listener for %s: no route for protocol %q", l.service, protocol)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := l.routed[protocol]
	if ch == nil {
		ch = make(chan net.Conn)
		l.routed[protocol] = ch
	}
	return &route{l: l, conns: ch}, nil
}

type route struct {
	l     *Listener
	conns chan net.Conn
}

func (r *route) Accept() (net.Conn, error) {
	select {
	case c := <-r.conns:
		return c, nil
	case <-r.l.done:
		return nil, net.ErrClosed
	}
}

func (r *route) Close() error   { return r.l.Close() }
func (r *route) Addr() net.Addr { return r.l.Addr() }

// Dial opens an authenticated connection to addr; a server without the
// cluster key fails with an error wrapping ErrWrongKey.
func (k *Key) Dial(ctx context.Context, addr string) (net.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: k.ClientTLS()}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return c, nil
}

// ErrNoProtocol is what DialProtocol returns (wrapped) when the server
// does not route the protocol: a daemon of an older version.
var ErrNoProtocol = errors.New("the daemon does not speak this protocol")

// DialProtocol opens an authenticated connection to addr for protocol,
// which the server's Listener hands to its Route(protocol).
func (k *Key) DialProtocol(ctx context.Context, addr, protocol string) (net.Conn, error) {
	cfg := k.ClientTLS()
	// h2 too: an older daemon, which knows no routes, then completes the
	// handshake and the caller learns it here instead of from a refusal
	// logged as a failed authentication.
	cfg.NextProtos = []string{protocol, "h2"}
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s for %s: %w", addr, protocol, err)
	}
	if got := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != protocol {
		c.Close()
		return nil, fmt.Errorf("connecting to %s for %s (it offered %q): %w", addr, protocol, got, ErrNoProtocol)
	}
	return c, nil
}
