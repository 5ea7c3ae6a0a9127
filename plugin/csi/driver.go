package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DriverName is the CSI driver's name, as in the CSIDriver object and
// StorageClasses' provisioner field.
const DriverName = "brick.csi.brickvol.io"

// TopologyKey is the one topology segment: the cluster ID. Every node of a
// cluster can reach every volume of it.
const TopologyKey = DriverName + "/cluster"

// Config is what a Driver is told. The daemon fills it from its own
// configuration; only cmd/brickd binds flags.
type Config struct {
	// NodeID is this host's daemon name, the CSI node ID.
	NodeID string
	// Version is reported by GetPluginInfo.
	Version string
	// PathRoots are the directories under which staging and target paths
	// must lie (the kubelet's directory); a path outside all of them is
	// refused, so a request cannot mount over an arbitrary host path.
	PathRoots []string
	// Expand advertises volume expansion. The cluster sets it when it can
	// grow a volume's quota online (Cluster.Expand).
	Expand bool
	// Mounter is the node's mount table; nil means NewMounter().
	Mounter Mounter
	Logger  *slog.Logger
}

// Validate names the first bad field.
func (c Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("csi: the node ID (daemon name) is empty")
	}
	if len(c.PathRoots) == 0 {
		return errors.New("csi: no path root (the kubelet directory) is set")
	}
	for _, r := range c.PathRoots {
		if !filepath.IsAbs(r) || filepath.Clean(r) == "/" {
			return fmt.Errorf("csi: path root %q must be an absolute directory other than /", r)
		}
	}
	return nil
}

// Driver implements the CSI Identity, Controller and Node services on top
// of a Cluster. It is safe for concurrent use.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	cfg     Config
	cluster Cluster
	mounter Mounter
	log     *slog.Logger
	// busy holds the keys ("create/NAME", "vol/ID", "node/ID") of requests
	// in flight; a concurrent request for the same key gets Aborted.
	mu   sync.Mutex
	busy map[string]bool
}

// New builds a driver over cluster.
func New(cfg Config, cluster Cluster) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cluster == nil {
		return nil, errors.New("csi: no cluster given")
	}
	if cfg.Mounter == nil {
		cfg.Mounter = NewMounter()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for i, r := range cfg.PathRoots {
		cfg.PathRoots[i] = filepath.Clean(r)
	}
	return &Driver{cfg: cfg, cluster: cluster, mounter: cfg.Mounter, log: cfg.Logger.With("component", "csi"),
		busy: map[string]bool{}}, nil
}

// NewServer returns a gRPC server with the three services registered and
// one interceptor that logs every call and turns panics into Internal.
func (d *Driver) NewServer() *grpc.Server {
	s := grpc.NewServer(grpc.UnaryInterceptor(d.intercept))
	csi.RegisterIdentityServer(s, d)
	csi.RegisterControllerServer(s, d)
	csi.RegisterNodeServer(s, d)
	return s
}

func (d *Driver) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("panic in CSI handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "internal error in %s (see the brickd log)", info.FullMethod)
		}
		lvl := slog.LevelDebug
		switch status.Code(err) {
		case codes.OK, codes.NotFound, codes.AlreadyExists, codes.InvalidArgument, codes.Aborted:
		default:
			lvl = slog.LevelWarn
		}
		if strings.HasSuffix(info.FullMethod, "/Probe") && err == nil {
			lvl = slog.LevelDebug - 4
		}
		d.log.Log(ctx, lvl, "csi call", "method", info.FullMethod, "took", time.Since(start).Round(time.Microsecond),
			"code", status.Code(err).String(), "err", err)
	}()
	return h(ctx, req)
}

// lock marks key busy, or refuses with Aborted when a request for it is in
// flight. The returned func releases it.
func (d *Driver) lock(key, what string) (func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy[key] {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is already in progress; retry", what)
	}
	d.busy[key] = true
	return func() {
		d.mu.Lock()
		delete(d.busy, key)
		d.mu.Unlock()
	}, nil
}

// toStatus maps a Cluster error to a gRPC status once, with what was being
// done; errors that already are a status keep their code.
func toStatus(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return status.Errorf(s.Code(), "%s: %s", what, s.Message())
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, ErrHeld):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, ErrUnsupported):
		code = codes.Unimplemented
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Errorf(code, "%s: %v", what, err)
}

// ParseEndpoint accepts "unix:///path" and "/path" and returns the path.
func ParseEndpoint(ep string) (string, error) {
	path := ep
	if rest, ok := strings.CutPrefix(ep, "unix://"); ok {
		path = rest
	} else if strings.Contains(ep, "://") {
		return "", fmt.Errorf("CSI endpoint %q: only unix sockets are served (unix:///path or /path)", ep)
	}
	if path == "" || !filepath.IsAbs(path) {
		return "", fmt.Errorf("CSI endpoint %q: want an absolute socket path (unix:///path or /path)", ep)
	}
	return filepath.Clean(path), nil
}

// Listen opens the unix socket at endpoint, removing a stale socket left by
// a driver that died but refusing one a running driver still answers on.
func Listen(endpoint string) (net.Listener, error) {
	path, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("creating the directory of CSI socket %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, 500*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("CSI socket %s is in use by another running driver", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing the stale CSI socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on CSI socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("restricting CSI socket %s: %w", path, err)
	}
	return l, nil
}
