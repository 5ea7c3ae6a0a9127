package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

type headered interface{ GetHeader() *brickpb.Header }

// referenced requests (the Replica service) carry their header in a
// VolumeRef.
type referenced interface{ GetRef() *brickpb.VolumeRef }

// unaryInterceptor checks every request's identity header before a handler
// sees it, logs every call, turns panics into Internal errors, and maps
// internal errors to gRPC codes once, here.
func (d *Daemon) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("panic in gRPC handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "internal error in %s (see brickd log)", info.FullMethod)
		}
		lvl := slog.LevelDebug
		if err != nil && status.Code(err) == codes.Internal {
			lvl = slog.LevelWarn
		}
		d.log.Log(ctx, lvl, "grpc call", "method", info.FullMethod, "took", time.Since(start).Round(time.Microsecond),
			"code", status.Code(err).String(), "err", err)
	}()
	if err := d.checkHeader(req); err != nil {
		return nil, err
	}
	resp, err = h(ctx, req)
	return resp, toStatus(err)
}

func (d *Daemon) checkHeader(req any) error {
	var h *brickpb.Header
	switch r := req.(type) {
	case headered:
		h = r.GetHeader()
	case referenced:
		h = r.GetRef().GetHeader()
	}
	if h == nil {
		return status.Error(codes.InvalidArgument, "request has no header (cluster ID, sender, protocol version)")
	}
	if h.ProtocolVersion != brickpb.ProtocolVersion {
		return status.Errorf(codes.FailedPrecondition, "protocol version %d is not supported: this daemon speaks version %d (upgrade the older side)",
			h.ProtocolVersion, brickpb.ProtocolVersion)
	}
	if h.SenderId == "" {
		return status.Error(codes.InvalidArgument, "request header has no sender ID")
	}
	if mine := d.clusterID(); h.ClusterId != "" && mine != "" && h.ClusterId != mine {
		return status.Errorf(codes.PermissionDenied, "request from %s is for cluster %s, this daemon belongs to cluster %s",
			h.SenderId, h.ClusterId, mine)
	}
	if h.Hops > maxHops {
		return status.Errorf(codes.Unavailable, "request forwarded %d times without reaching the Raft leader; leadership is changing, try again", h.Hops)
	}
	return nil
}

// toStatus maps internal sentinel errors to gRPC codes; errors that already
// carry a status pass through.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, control.ErrInvalid), errors.Is(err, volspec.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, control.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, control.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, control.ErrAttached), errors.Is(err, control.ErrBrickInUse):
		code = codes.FailedPrecondition
	case errors.Is(err, control.ErrStaleEpoch):
		code = codes.Aborted
	case errors.Is(err, control.ErrNotLeader), errors.Is(err, errNoLeader):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

var errNoLeader = errors.New("no Raft leader")

const maxHops = 2

func invalid(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
