package mounter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/auth"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica/framed"
	"github.com/brickvol/brick/replica/head"
)

// transport is the head's Transport: replication streams on connections
// of their own (package framed), or gRPC Replicate streams with
// grpcStreams or when a brick serves no others.
type transport struct {
	c           *conns
	volID       string
	addrs       map[string]string // brick ID → gRPC address
	grpcStreams bool
	log         *slog.Logger
}

// Open fences the brick at the head's epoch, then opens its stream. The
// stream outlives ctx (which bounds only the opening).
func (t *transport) Open(ctx context.Context, brick string, epoch uint64) (head.Stream, head.Position, error) {
	rc, addr, ref, pos, err := t.fence(ctx, brick, epoch, "")
	if err != nil {
		return nil, head.Position{}, err
	}
	s, err := t.openStream(ctx, rc, addr, ref)
	if err != nil {
		return nil, head.Position{}, classify(fmt.Errorf("opening the replication stream to %s: %w", brick, err))
	}
	s.brick = brick
	return s, pos, nil
}

// Adopt fences the brick at epoch and makes it take its suspect replica's
// tree as the volume's contents (FenceRequest.adopt).
func (t *transport) Adopt(ctx context.Context, brick string, epoch uint64, why string) (head.Position, error) {
	_, _, _, pos, err := t.fence(ctx, brick, epoch, why)
	return pos, err
}

// fence fences the brick at epoch (adopting its replica when adopt is set)
// and reports its position, with the client, address and reference the
// stream opens with.
func (t *transport) fence(ctx context.Context, brick string, epoch uint64, adopt string) (brickpb.ReplicaClient, string, *brickpb.VolumeRef, head.Position, error) {
	addr, ok := t.addrs[brick]
	if !ok {
		return nil, "", nil, head.Position{}, fmt.Errorf("brick %s has no known address", brick)
	}
	cc, err := t.c.get(addr)
	if err != nil {
		return nil, "", nil, head.Position{}, err
	}
	rc := brickpb.NewReplicaClient(cc)
	ref := &brickpb.VolumeRef{Header: t.c.header(), VolumeId: t.volID, Epoch: epoch}
	f, err := rc.Fence(ctx, &brickpb.FenceRequest{Ref: ref, Adopt: adopt})
	if err != nil {
		what := "fencing " + brick
		if adopt != "" {
			what = "adopting the replica on " + brick
		}
		return nil, "", nil, head.Position{}, classify(fmt.Errorf("%s at epoch %d: %w", what, epoch, err))
	}
	if f.PromisedEpoch > epoch {
		return nil, "", nil, head.Position{}, fmt.Errorf("brick %s promised epoch %d, this head has %d: %w", brick, f.PromisedEpoch, epoch, head.ErrStaleEpoch)
	}
	return rc, addr, ref, head.Position{Applied: f.AppliedSeq, Synced: f.SyncedSeq, AppliedEpoch: f.AppliedEpoch,
		MaxFID: f.MaxFid, NeedsFullHeal: f.NeedsFullHeal, UsedBytes: f.UsedBytes}, nil
}

// openStream opens a stream at ref and sends its open message.
func (t *transport) openStream(ctx context.Context, rc brickpb.ReplicaClient, addr string, ref *brickpb.VolumeRef) (*stream, error) {
	if !t.grpcStreams {
		c, err := t.c.key.DialProtocol(ctx, addr, auth.ProtoReplicate)
		if err == nil {
			fc, err := framed.Open(c, ref)
			if err != nil {
				return nil, err
			}
			t.log.Debug("replication stream open", "addr", addr, "epoch", ref.Epoch, "stream", "framed")
			return &stream{st: fc, close: fc.Close}, nil
		}
		if !errors.Is(err, auth.ErrNoProtocol) {
			return nil, err
		}
		t.log.Warn("brick serves replication streams over gRPC only (an older brickd?); using gRPC", "addr", addr)
	}
	sctx, cancel := context.WithCancel(context.Background())
	st, err := rc.Replicate(sctx)
	if err == nil {
		err = st.Send(&brickpb.ReplicateRequest{Open: ref})
	}
	if err != nil {
		cancel()
		return nil, err
	}
	t.log.Debug("replication stream open", "addr", addr, "epoch", ref.Epoch, "stream", "grpc")
	return &stream{st: st, close: func() error { cancel(); return nil }}, nil
}

// OpsSince streams source's op log after afterSeq (Replica.OpsSince at
// epoch) to fn, for heal. A stale epoch comes back wrapping
// head.ErrStaleEpoch; a log that no longer holds afterSeq+1 as a
// *head.LogTruncatedError.
func (t *transport) OpsSince(ctx context.Context, source string, epoch, afterSeq uint64, fn func(*brickpb.Op) error) error {
	addr, ok := t.addrs[source]
	if !ok {
		return fmt.Errorf("brick %s has no known address", source)
	}
	cc, err := t.c.get(addr)
	if err != nil {
		return err
	}
	rc := brickpb.NewReplicaClient(cc)
	ref := &brickpb.VolumeRef{Header: t.c.header(), VolumeId: t.volID, Epoch: epoch}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // also ends the stream when fn stops early
	st, err := rc.OpsSince(sctx, &brickpb.OpsSinceRequest{Ref: ref, AfterSeq: afterSeq})
	for err == nil {
		var op *brickpb.Op
		if op, err = st.Recv(); err == nil {
			if ferr := fn(op); ferr != nil {
				return ferr
			}
		}
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return t.logError(ctx, rc, ref, source, afterSeq, err)
}

// logError classifies a failed op log read. OutOfRange is either a
// truncated log or a source behind afterSeq (a gap); the source's Fence at
// the head's own epoch (which changes nothing there, the brick promised it
// already) reports its log's first seq and its applied seq, which tell them
// apart.
func (t *transport) logError(ctx context.Context, rc brickpb.ReplicaClient, ref *brickpb.VolumeRef, source string, afterSeq uint64, err error) error {
	wrapped := classify(fmt.Errorf("reading the op log of %s after seq %d: %w", source, afterSeq, err))
	if status.Code(err) != codes.OutOfRange {
		return wrapped
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f, ferr := rc.Fence(fctx, &brickpb.FenceRequest{Ref: ref})
	switch {
	case ferr != nil:
		return &head.LogTruncatedError{Source: source, AfterSeq: afterSeq, Err: wrapped} // most likely
	case f.PromisedEpoch > ref.Epoch:
		return fmt.Errorf("brick %s promised epoch %d: %w: %w", source, f.PromisedEpoch, head.ErrStaleEpoch, wrapped)
	case afterSeq > f.AppliedSeq:
		return fmt.Errorf("brick %s has applied only %d: %w", source, f.AppliedSeq, wrapped)
	case f.LogFirstSeq == 0 || afterSeq+1 < f.LogFirstSeq:
		return &head.LogTruncatedError{Source: source, AfterSeq: afterSeq, FirstSeq: f.LogFirstSeq, Err: wrapped}
	}
	return wrapped // the log covers it now: worth a retry
}

// stream is one brick's replication stream, framed or gRPC.
type stream struct {
	st interface {
		Send(*brickpb.ReplicateRequest) error
		Recv() (*brickpb.ReplicateAck, error)
	}
	close func() error
	brick string
}

func (s *stream) Send(ops []*brickpb.Op) error {
	if err := s.st.Send(&brickpb.ReplicateRequest{Ops: ops}); err != nil {
		return classify(fmt.Errorf("sending to %s: %w", s.brick, err))
	}
	return nil
}

func (s *stream) Recv() (*brickpb.ReplicateAck, error) {
	ack, err := s.st.Recv()
	if err != nil {
		return nil, classify(fmt.Errorf("receiving from %s: %w", s.brick, err))
	}
	if ack.Error != "" && strings.Contains(ack.Error, "fenced") {
		return ack, fmt.Errorf("brick %s: %s: %w", s.brick, ack.Error, head.ErrStaleEpoch)
	}
	return ack, nil
}

func (s *stream) Close() error {
	return s.close()
}

// classify marks a brick's refusal of our epoch as head.ErrStaleEpoch.
func classify(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), "fenced") {
		return fmt.Errorf("%w: %w", head.ErrStaleEpoch, err)
	}
	return err
}

// control is the head's Control: SetISR through a daemon (which forwards it
// to the Raft leader).
type control struct {
	c      *conns
	daemon string
	// others are the other daemons' addresses: any of them forwards to the
	// Raft leader, so an ISR change does not wait for this host's brickd
	// when it is the one restarting.
	others []string
	volID  string
}

func (k *control) SetISR(ctx context.Context, epoch uint64, isr []string) (uint64, error) {
	var lastErr error
	for _, addr := range append([]string{k.daemon}, k.others...) {
		cc, err := k.c.get(addr)
		if err != nil {
			lastErr = err
			continue
		}
		resp, err := brickpb.NewControlClient(cc).SetISR(ctx, &brickpb.SetISRRequest{Header: k.c.header(), VolumeId: k.volID, Epoch: epoch, Isr: isr})
		switch {
		case status.Code(err) == codes.Aborted:
			return 0, fmt.Errorf("%w: %w", head.ErrStaleEpoch, err)
		case err == nil:
			return resp.RaftIndex, nil
		case status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded:
			return 0, err
		}
		lastErr = err
	}
	return 0, lastErr
}
