// Package auth turns the cluster key into the credentials that authenticate
// cluster traffic (design.md promise 7): a TLS identity shared by every
// daemon that knows the key, and the gossip encryption key.
//
// Every daemon derives the same Ed25519 key pair and self-signed certificate
// from the cluster key, and accepts a TLS peer only if it presents exactly
// that certificate. A daemon without the key can neither complete a
// handshake nor decrypt gossip, so it cannot join, read or write.
//
// auth never logs, stores or prints the key.
package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// DevKey is used when no cluster key is configured. It authenticates nothing
// (it is public); brickd warns loudly when it runs with it.
const DevKey = "brick-insecure-development-key"

// MinKeyLen is the shortest cluster key accepted.
const MinKeyLen = 16

// ErrWrongKey is what a failed handshake is reported as: the peer does not
// hold this cluster's key.
var ErrWrongKey = errors.New("peer does not present this cluster's key (is BRICK_CLUSTER_KEY the same on every daemon?)")

// Key holds the credentials derived from a cluster key.
type Key struct {
	cert   tls.Certificate
	leaf   []byte // DER of the certificate every peer must present
	gossip []byte
}

// NewKey derives the credentials from a cluster key. The derivation is
// deterministic, so every daemon given the same key derives the same
// identity.
func NewKey(secret string) (*Key, error) {
	if len(secret) < MinKeyLen {
		return nil, fmt.Errorf("cluster key is %d characters long, want at least %d", len(secret), MinKeyLen)
	}
	seed := derive(secret, "brick tls identity v1")
	priv := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "brick cluster"},
		DNSNames:              []string{"brick"},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(zeroReader{}, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, fmt.Errorf("deriving the cluster certificate: %w", err)
	}
	return &Key{
		cert:   tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv},
		leaf:   der,
		gossip: derive(secret, "brick gossip key v1"),
	}, nil
}

// ProtoReplicate is the ALPN name of the replication stream's own framing
// (package replica/framed). A Listener hands connections that negotiated it
// to the listener Route returns, the rest to its own Accept.
const ProtoReplicate = "brick-replicate/1"

// GossipKey is the 32-byte AES key for memberlist's encryption.
func (k *Key) GossipKey() []byte { return append([]byte(nil), k.gossip...) }

// ServerTLS is the TLS configuration for a listener: it requires the client
// to present the cluster certificate.
func (k *Key) ServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{k.cert},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS13,
		// A client that names ProtoReplicate gets it (Listener.Route); gRPC
		// clients that insist on ALPN get h2.
		NextProtos:            []string{ProtoReplicate, "h2"},
		VerifyPeerCertificate: k.verify,
	}
}

// ClientTLS is the TLS configuration for dialing a daemon.
func (k *Key) ClientTLS() *tls.Config {
	return &tls.Config{
		Certificates:          []tls.Certificate{k.cert},
		ServerName:            "brick",
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by verify: the peer must present our exact certificate
		VerifyPeerCertificate: k.verify,
	}
}

func (k *Key) verify(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) != 1 || !bytes.Equal(raw[0], k.leaf) {
		return ErrWrongKey
	}
	return nil
}

func derive(secret, label string) []byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write([]byte(secret))
	return h.Sum(nil)
}

// zeroReader makes certificate creation deterministic; Ed25519 signing uses
// no randomness, and the serial number is fixed.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
