package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/auth"
	"github.com/brickvol/brick/proto/brickpb"
)

// header is the request header of every CLI call: the CLI does not know the
// cluster ID, so it leaves it empty.
func header() *brickpb.Header {
	return &brickpb.Header{SenderId: "cli", ProtocolVersion: brickpb.ProtocolVersion}
}

// call opens a connection to the daemon the global options name, makes one
// or more RPCs within --timeout, and turns a failure into one sentence an
// operator can act on. Nothing is dialled before call, so a command that
// validates its input first never contacts the daemon with bad input.
func call[T any](ctx context.Context, a *app, rpc func(context.Context, brickpb.ControlClient) (T, error)) (T, error) {
	var zero T
	c, err := a.connect()
	if err != nil {
		return zero, err
	}
	defer c.cc.Close()
	ctx, cancel := context.WithTimeout(ctx, a.opts.timeout)
	defer cancel()
	resp, err := rpc(ctx, brickpb.NewControlClient(c.cc))
	if err != nil {
		return zero, c.explain(ctx, err, a.opts.timeout)
	}
	return resp, nil
}

// conn is a client connection that remembers why its transport failed, so
// that errors can name the cause (refused, wrong key) without parsing gRPC's
// status strings.
type conn struct {
	cc      *grpc.ClientConn
	display string // the daemon's address as shown to people

	mu           sync.Mutex
	dialErr      error // last failed dial, nil after a successful one
	handshakeErr error // last failed TLS handshake
	connected    bool  // a transport was established at least once
}

func (a *app) connect() (*conn, error) {
	c := &conn{}
	var target string
	var opts []grpc.DialOption
	if a.opts.server != "" {
		addr, err := serverAddress(a.opts.server)
		if err != nil {
			return nil, usageError{err}
		}
		key, err := a.clusterKey()
		if err != nil {
			return nil, usageError{err}
		}
		c.display = addr
		target = "passthrough:///" + addr
		opts = append(opts,
			grpc.WithTransportCredentials(recordingCreds{credentials.NewTLS(key.ClientTLS()), c}),
			grpc.WithContextDialer(c.dialer("tcp", addr)))
	} else {
		if a.opts.socket == "" {
			return nil, usagef("no daemon to talk to: set --server (or %s), or --socket (or %s)", envServer, envSocket)
		}
		path, err := filepath.Abs(a.opts.socket)
		if err != nil {
			return nil, usagef("--socket %q: %w", a.opts.socket, err)
		}
		c.display = path
		target = "unix://" + path
		opts = append(opts,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(c.dialer("unix", path)))
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to brickd at %s: %w", c.display, err)
	}
	c.cc = cc
	return c, nil
}

// clusterKey is --cluster-key, else BRICK_CLUSTER_KEY, else auth.DevKey.
// Errors name where the key came from, never the key.
func (a *app) clusterKey() (*auth.Key, error) {
	secret, from := a.opts.clusterKey, "--cluster-key"
	if secret == "" {
		secret, from = a.env(envClusterKey), envClusterKey
	}
	if secret == "" {
		secret, from = auth.DevKey, "development key"
	}
	k, err := auth.NewKey(secret)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return k, nil
}

// serverAddress turns IP[:PORT] (or HOST[:PORT], or a bracketed IPv6
// address) into host:port, adding the default port.
func serverAddress(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: "10.0.0.5", "ci-1", "::1", "[::1]".
		host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if strings.Contains(host, ":") && net.ParseIP(host) == nil {
			return "", fmt.Errorf("--server %q: want IP[:PORT], e.g. 10.0.0.5 or 10.0.0.5:7400", s)
		}
		port = defaultPort
	}
	if host == "" || strings.ContainsAny(host, "[]/ \t") {
		return "", fmt.Errorf("--server %q: want IP[:PORT], e.g. 10.0.0.5 or 10.0.0.5:7400", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("--server %q: port %q is not a number from 1 to 65535", s, port)
	}
	return net.JoinHostPort(host, port), nil
}

func (c *conn) dialer(network, address string) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, address)
		c.mu.Lock()
		c.dialErr = err
		if err == nil && network == "unix" {
			c.connected = true // no handshake follows on the socket
		}
		c.mu.Unlock()
		return nc, err
	}
}

// recordingCreds remembers TLS handshake failures, which gRPC reports only
// as codes.Unavailable with the cause folded into a string.
type recordingCreds struct {
	credentials.TransportCredentials
	c *conn
}

func (r recordingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := r.TransportCredentials.ClientHandshake(ctx, authority, raw)
	r.c.mu.Lock()
	r.c.handshakeErr = err
	if err == nil {
		r.c.connected = true
	}
	r.c.mu.Unlock()
	return nc, info, err
}

func (r recordingCreds) Clone() credentials.TransportCredentials {
	return recordingCreds{r.TransportCredentials.Clone(), r.c}
}

// explain maps an RPC error to one sentence. The daemon's own messages
// already name the problem and pass through as they are; transport failures
// are told in terms of what the operator can check.
func (c *conn) explain(ctx context.Context, err error, timeout time.Duration) error {
	c.mu.Lock()
	dialErr, handshakeErr, connected := c.dialErr, c.handshakeErr, c.connected
	c.mu.Unlock()

	if errors.Is(handshakeErr, auth.ErrWrongKey) {
		return fmt.Errorf("brickd at %s does not use this cluster key: set %s (or --cluster-key) to the cluster's key",
			c.display, envClusterKey)
	}
	if handshakeErr != nil {
		return fmt.Errorf("TLS handshake with brickd at %s failed: %v (is %s a brickd address, and %s the cluster's key?)",
			c.display, handshakeErr, envServer, envClusterKey)
	}
	if dialErr != nil {
		return c.unreachable(dialErr)
	}
	if timedOut(ctx, err, timeout) {
		if !connected {
			return c.unreachable(fmt.Errorf("no connection within %s", timeout))
		}
		return fmt.Errorf("brickd at %s did not answer within %s (raise --timeout or %s)", c.display, timeout, envTimeout)
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		if !connected {
			return c.unreachable(errors.New(st.Message()))
		}
		// The daemon's own Unavailable (no Raft leader) leaves the
		// connection ready; a transport that broke mid-call does not.
		if c.cc.GetState() != connectivity.Ready {
			return fmt.Errorf("lost the connection to brickd at %s: %s", c.display, st.Message())
		}
	case codes.Unimplemented:
		return fmt.Errorf("%s (is brickd at %s older than this brick command?)", st.Message(), c.display)
	}
	return errors.New(st.Message())
}

// timedOut tells whether err is --timeout running out. The daemon sees the
// same deadline and may give up a moment before the client's own context
// expires, so an RPC ending as Canceled or DeadlineExceeded within the last
// tenth of the timeout counts too; earlier, it is the daemon's own error.
func timedOut(ctx context.Context, err error, timeout time.Duration) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	code := status.Code(err)
	if code != codes.DeadlineExceeded && code != codes.Canceled {
		return false
	}
	deadline, ok := ctx.Deadline()
	return ok && time.Until(deadline) < 50*time.Millisecond+timeout/10
}

func (c *conn) unreachable(cause error) error {
	detail := cause.Error()
	var op *net.OpError
	if errors.As(cause, &op) && op.Err != nil {
		detail = op.Err.Error() // "connect: connection refused", without the repeated address
	}
	hint := fmt.Sprintf("is it running? set --server or %s", envServer)
	if errors.Is(cause, fs.ErrPermission) {
		hint = "run as root, or as a user allowed to open the socket"
	}
	return fmt.Errorf("cannot reach brickd at %s: %s (%s)", c.display, detail, hint)
}
