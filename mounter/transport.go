package mounter

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica/head"
)

// transport is the head's Transport over gRPC Replicate streams.
type transport struct {
	c     *conns
	volID string
	addrs map[string]string // brick ID → gRPC address
}

// Open fences the brick at the head's epoch, then opens its stream. The
// stream outlives ctx (which bounds only the opening).
func (t *transport) Open(ctx context.Context, brick string, epoch uint64) (head.Stream, head.Position, error) {
	addr, ok := t.addrs[brick]
	if !ok {
		return nil, head.Position{}, fmt.Errorf("brick %s has no known address", brick)
	}
	cc, err := t.c.get(addr)
	if err != nil {
		return nil, head.Position{}, err
	}
	rc := brickpb.NewReplicaClient(cc)
	ref := &brickpb.VolumeRef{Header: t.c.header(), VolumeId: t.volID, Epoch: epoch}
	f, err := rc.Fence(ctx, &brickpb.FenceRequest{Ref: ref})
	if err != nil {
		return nil, head.Position{}, classify(fmt.Errorf("fencing %s at epoch %d: %w", brick, epoch, err))
	}
	if f.PromisedEpoch > epoch {
		return nil, head.Position{}, fmt.Errorf("brick %s promised epoch %d, this head has %d: %w", brick, f.PromisedEpoch, epoch, head.ErrStaleEpoch)
	}
	sctx, cancel := context.WithCancel(context.Background())
	st, err := rc.Replicate(sctx)
	if err == nil {
		err = st.Send(&brickpb.ReplicateRequest{Open: ref})
	}
	if err != nil {
		cancel()
		return nil, head.Position{}, classify(fmt.Errorf("opening the replication stream to %s: %w", brick, err))
	}
	return &stream{st: st, cancel: cancel, brick: brick}, head.Position{Applied: f.AppliedSeq, Synced: f.SyncedSeq}, nil
}

type stream struct {
	st     brickpb.Replica_ReplicateClient
	cancel context.CancelFunc
	brick  string
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
	s.cancel()
	return nil
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
	volID  string
}

func (k *control) SetISR(ctx context.Context, epoch uint64, isr []string) (uint64, error) {
	cc, err := k.c.get(k.daemon)
	if err != nil {
		return 0, err
	}
	resp, err := brickpb.NewControlClient(cc).SetISR(ctx, &brickpb.SetISRRequest{Header: k.c.header(), VolumeId: k.volID, Epoch: epoch, Isr: isr})
	if status.Code(err) == codes.Aborted {
		return 0, fmt.Errorf("%w: %w", head.ErrStaleEpoch, err)
	}
	if err != nil {
		return 0, err
	}
	return resp.RaftIndex, nil
}
