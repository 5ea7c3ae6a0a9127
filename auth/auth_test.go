package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

func TestSameKeyHandshakes(t *testing.T) {
	if err := handshake(t, "correct horse battery staple", "correct horse battery staple"); err != nil {
		t.Fatalf("same key: %v", err)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	err := handshake(t, "correct horse battery staple", "another cluster's key!!")
	if err == nil {
		t.Fatal("handshake with a different cluster key succeeded")
	}
}

func TestShortKeyRefused(t *testing.T) {
	if _, err := NewKey("short"); err == nil {
		t.Fatal("a 5-character key was accepted")
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := NewKey(DevKey)
	b, _ := NewKey(DevKey)
	if string(a.leaf) != string(b.leaf) || string(a.GossipKey()) != string(b.GossipKey()) {
		t.Fatal("the same key derived different credentials")
	}
	if len(a.GossipKey()) != 32 {
		t.Fatalf("gossip key is %d bytes, memberlist wants 32", len(a.GossipKey()))
	}
}

func handshake(t *testing.T, serverKey, clientKey string) error {
	t.Helper()
	sk, err := NewKey(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := NewKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", sk.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.(*tls.Conn).Handshake(); err != nil {
			srvErr <- err
			return
		}
		_, err = c.Write([]byte{1})
		srvErr <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), ck.ClientTLS())
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// TLS 1.3: the client may finish before the server rejects its
		// certificate; the first read tells.
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if e := <-srvErr; e != nil {
		return e
	}
	return err
}

// TestRouteByALPN: a connection dialed for ProtoReplicate reaches the
// route's listener, any other the Listener's own Accept; a daemon that
// routes nothing is told apart from one without the key.
func TestRouteByALPN(t *testing.T) {
	k, err := NewKey(DevKey)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := k.Listen(inner, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Before Route, a connection for the protocol is closed, not queued.
	early, err := k.DialProtocol(ctx, l.Addr().String(), ProtoReplicate)
	if err != nil {
		t.Fatal(err)
	}
	early.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := early.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection for an unrouted protocol was kept")
	}
	early.Close()

	routed, err := l.Route(ProtoReplicate)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Route("h2"); err == nil {
		t.Error("Route(h2) gave a listener")
	}
	accept := func(ln net.Listener) <-chan net.Conn {
		ch := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				ch <- c
			}
		}()
		return ch
	}
	plainCh, routedCh := accept(l), accept(routed)
	rc, err := k.DialProtocol(ctx, l.Addr().String(), ProtoReplicate)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	select {
	case c := <-routedCh:
		defer c.Close()
	case c := <-plainCh:
		c.Close()
		t.Fatal("a connection dialed for the replication protocol reached the plain listener")
	case <-ctx.Done():
		t.Fatal("the routed connection was never accepted")
	}
	pc, err := k.Dial(ctx, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	select {
	case c := <-plainCh:
		defer c.Close()
	case <-ctx.Done():
		t.Fatal("a plain connection was never accepted")
	}

	// A daemon of an older version offers h2 only.
	old := k.ServerTLS()
	old.NextProtos = []string{"h2"}
	ol, err := tls.Listen("tcp", "127.0.0.1:0", old)
	if err != nil {
		t.Fatal(err)
	}
	defer ol.Close()
	go func() {
		if c, err := ol.Accept(); err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	if c, err := k.DialProtocol(ctx, ol.Addr().String(), ProtoReplicate); !errors.Is(err, ErrNoProtocol) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dialing a daemon without the route: %v, want ErrNoProtocol", err)
	}
}
