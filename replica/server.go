package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/proto/brickpb"
)

// ErrNoReplica is what a Server's lookup returns (wrapped) for a volume
// with no replica on this brick; it maps to codes.NotFound.
var ErrNoReplica = errors.New("no replica of this volume here")

// Server serves brickpb.Replica for the replicas of one brick. It checks
// every request's header (protocol version) and volume reference before
// touching a replica; fencing is the replica's (epoch checks on every op
// and read). Errors map to gRPC codes once, here:
//
//	stale epoch            FailedPrecondition "fenced: epoch N is older than the brick's promise M"
//	gap, log truncated     OutOfRange
//	bad header/ref/op      InvalidArgument; other protocol version: Unimplemented
//	no such replica        NotFound
//	closed                 Unavailable
//	context ended          Canceled / DeadlineExceeded
//	brick failure, corrupt Internal
type Server struct {
	brickpb.UnimplementedReplicaServer
	lookup func(volumeID string) (*Replica, error)
	log    *slog.Logger
}

// NewServer serves the replicas lookup finds (it must return the open
// Replica of a volume, or an error wrapping ErrNoReplica). log may be nil.
func NewServer(lookup func(volumeID string) (*Replica, error), log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{lookup: lookup, log: log}
}

var _ brickpb.ReplicaServer = (*Server)(nil)

// replicaFor checks ref and finds its replica.
func (s *Server) replicaFor(ref *brickpb.VolumeRef) (*Replica, error) {
	if ref == nil {
		return nil, status.Error(codes.InvalidArgument, "request has no volume reference")
	}
	h := ref.Header
	if h == nil {
		return nil, status.Error(codes.InvalidArgument, "request has no header")
	}
	if h.ProtocolVersion != brickpb.ProtocolVersion {
		return nil, status.Errorf(codes.Unimplemented, "protocol version %d not spoken here (this brick speaks %d)",
			h.ProtocolVersion, brickpb.ProtocolVersion)
	}
	if err := checkID(ref.VolumeId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	r, err := s.lookup(ref.VolumeId)
	if err != nil {
		return nil, toStatus(fmt.Errorf("volume %s: %w", ref.VolumeId, err))
	}
	return r, nil
}

// toStatus maps an error of this package to a gRPC status.
func toStatus(err error) error {
	var stale *StaleEpochError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &stale):
		return status.Error(codes.FailedPrecondition, stale.Error())
	case errors.Is(err, ErrGap), errors.Is(err, ErrLogTruncated):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNoReplica):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// errnoFor is the errno a fatal stream error is reported with.
func errnoFor(err error) uint32 {
	switch {
	case errors.Is(err, ErrStaleEpoch):
		return uint32(syscall.ESTALE)
	case errors.Is(err, ErrGap), errors.Is(err, ErrInvalid):
		return uint32(syscall.EINVAL)
	}
	if e, ok := errnoOf(err); ok {
		return uint32(e)
	}
	return uint32(syscall.EIO)
}

// Fence raises the replica's epoch promise and reports its position; with
// adopt set it then adopts a suspect replica (Replica.Adopt).
func (s *Server) Fence(ctx context.Context, req *brickpb.FenceRequest) (*brickpb.FenceResponse, error) {
	r, err := s.replicaFor(req.GetRef())
	if err != nil {
		return nil, err
	}
	if n := len(req.Adopt); n > MaxAdoptReason {
		return nil, toStatus(fmt.Errorf("%w: adopt reason of %d bytes, want at most %d", ErrInvalid, n, MaxAdoptReason))
	}
	resp, err := r.Fence(req.Ref.Epoch)
	if err == nil && req.Adopt != "" {
		resp, err = r.Adopt(req.Ref.Epoch, req.Adopt)
	}
	if err != nil {
		s.log.Error("fence failed", "volume", req.Ref.VolumeId, "epoch", req.Ref.Epoch, "adopt", req.Adopt != "", "err", err)
	}
	return resp, toStatus(err)
}

// ReplicateStream is a brick's end of a replication stream: gRPC's
// (Replicate) or one of package framed's connections. A request Recv
// returns may share memory with the stream (framed's big writes): it is
// used up before the next Recv (Apply keeps no reference to its ops).
type ReplicateStream interface {
	Recv() (*brickpb.ReplicateRequest, error)
	Send(*brickpb.ReplicateAck) error
}

// Replicate serves the head's stream over gRPC (ServeReplicate).
func (s *Server) Replicate(stream grpc.BidiStreamingServer[brickpb.ReplicateRequest, brickpb.ReplicateAck]) error {
	return s.ServeReplicate(stream)
}

// ServeReplicate applies the head's stream: the first message opens it
// (volume and epoch; ops may follow in the same message), every message is
// acked with the position and the results of its ops. Every op must carry
// the stream's epoch. A fatal error is acked (error, errno, and the
// results of the ops applied before it) and then ends the stream with its
// status, which ServeReplicate returns.
func (s *Server) ServeReplicate(stream ReplicateStream) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	open := req.GetOpen()
	if open == nil {
		return status.Error(codes.InvalidArgument, "the first Replicate message must carry open")
	}
	r, err := s.replicaFor(open)
	if err != nil {
		return err
	}
	if _, _, promised, _ := r.State(); open.Epoch < promised {
		return s.fail(stream, r, nil, &StaleEpochError{Epoch: open.Epoch, Promise: promised})
	}
	log := s.log.With("volume", open.VolumeId, "epoch", open.Epoch, "sender", open.Header.SenderId)
	for first := true; ; first = false {
		if !first {
			if req, err = stream.Recv(); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			if req.Open != nil {
				return s.fail(stream, r, nil, fmt.Errorf("%w: open sent twice on one stream", ErrInvalid))
			}
		}
		for _, op := range req.Ops {
			if op != nil && op.Epoch != open.Epoch {
				return s.fail(stream, r, nil, fmt.Errorf("%w: op %d carries epoch %d on a stream opened at %d",
					ErrInvalid, op.Seq, op.Epoch, open.Epoch))
			}
		}
		var results []*brickpb.OpResult
		if len(req.Ops) > 0 {
			results, err = r.Apply(req.Ops)
			if err != nil {
				log.Warn("replication stream refused", "err", err)
				return s.fail(stream, r, results, err)
			}
		}
		applied, synced, _, _ := r.State()
		used, usedAt := r.Usage()
		if usedAt != applied {
			used = -1 // another stream moved on meanwhile: no figure this time
		}
		if err := stream.Send(&brickpb.ReplicateAck{AppliedSeq: applied, SyncedSeq: synced, Results: results, UsedBytes: used}); err != nil {
			return err
		}
	}
}

// fail acks a fatal error and returns the status that ends the stream.
func (s *Server) fail(stream ReplicateStream, r *Replica, results []*brickpb.OpResult, err error) error {
	applied, synced, _, _ := r.State()
	st := toStatus(err)
	_ = stream.Send(&brickpb.ReplicateAck{
		AppliedSeq: applied, SyncedSeq: synced, Results: results,
		Error: status.Convert(st).Message(), Errno: errnoFor(err),
	})
	return st
}

// Meta answers a lookup, getattr, listing, link, xattr or statfs.
func (s *Server) Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	r, err := s.replicaFor(req.GetRef())
	if err != nil {
		return nil, err
	}
	resp, err := r.Meta(ctx, req)
	return resp, toStatus(err)
}

// Read reads file data.
func (s *Server) Read(ctx context.Context, req *brickpb.ReadRequest) (*brickpb.ReadResponse, error) {
	r, err := s.replicaFor(req.GetRef())
	if err != nil {
		return nil, err
	}
	resp, err := r.Read(ctx, req)
	return resp, toStatus(err)
}

// OpsSince streams the logged ops after req.AfterSeq, refusing a stale
// epoch like a read.
func (s *Server) OpsSince(req *brickpb.OpsSinceRequest, stream grpc.ServerStreamingServer[brickpb.Op]) error {
	r, err := s.replicaFor(req.GetRef())
	if err != nil {
		return err
	}
	if _, _, promised, _ := r.State(); req.Ref.Epoch < promised {
		return toStatus(&StaleEpochError{Epoch: req.Ref.Epoch, Promise: promised})
	}
	return toStatus(r.ScanOps(req.AfterSeq, stream.Send))
}

// Snapshot streams the replica's structure at its applied position, then
// the chunk checksums of its regular files, refusing a stale epoch like a
// read (see Replica.Snapshot).
func (s *Server) Snapshot(req *brickpb.SnapshotRequest, stream grpc.ServerStreamingServer[brickpb.SnapshotPart]) error {
	r, err := s.replicaFor(req.GetRef())
	if err != nil {
		return err
	}
	if _, _, promised, _ := r.State(); req.Ref.Epoch < promised {
		return toStatus(&StaleEpochError{Epoch: req.Ref.Epoch, Promise: promised})
	}
	part, err := r.Snapshot()
	if err != nil {
		return toStatus(err)
	}
	var files []uint64
	for _, e := range part.Entries {
		if e.Mode&syscall.S_IFMT == syscall.S_IFREG && !slices.Contains(files, e.Fid) {
			files = append(files, e.Fid)
		}
	}
	// Structure in slices of a few thousand entries, so no message nears
	// gRPC's size limit.
	ents := part.Entries
	part.Entries = nil
	for first := true; first || len(ents) > 0; first = false {
		n := min(len(ents), 2000)
		part.Entries = ents[:n]
		ents = ents[n:]
		if err := stream.Send(part); err != nil {
			return err
		}
		part = &brickpb.SnapshotPart{}
	}
	var batch []*brickpb.FileSums
	size := 0
	for _, fid := range files {
		sums, sz, err := r.ChunkSums(fid)
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL) {
			continue // gone or replaced since the snapshot: the replay decides
		}
		if err != nil {
			return toStatus(err)
		}
		batch = append(batch, &brickpb.FileSums{Fid: fid, Size: sz, Chunks: sums})
		size += 4*len(sums) + 16
		if size > 1<<20 {
			if err := stream.Send(&brickpb.SnapshotPart{Sums: batch}); err != nil {
				return err
			}
			batch, size = nil, 0
		}
	}
	if len(batch) > 0 {
		return stream.Send(&brickpb.SnapshotPart{Sums: batch})
	}
	return nil
}
