package auth

import (
	"crypto/tls"
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
