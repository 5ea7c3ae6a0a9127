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
}

// Listen wraps ln. service names what is served ("grpc", "raft") in logs.
func (k *Key) Listen(ln net.Listener, service string, log *slog.Logger) *Listener {
	l := &Listener{
		inner: ln, key: k, log: log, service: service,
		conns: make(chan net.Conn), done: make(chan struct{}),
		lastWarn: map[string]time.Time{},
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
	select {
	case l.conns <- tc:
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
