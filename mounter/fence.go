package mounter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/proto/brickpb"
)

// brickState is what fencing learnt about one in-sync brick.
type brickState struct {
	id    string
	addr  string
	fence *brickpb.FenceResponse
	err   error
}

// fenceAll fences every brick of isr at epoch, in parallel, and returns
// what each reported.
func fenceAll(ctx context.Context, c *conns, volID string, epoch uint64, isr []string, addrs map[string]string) []*brickState {
	out := make([]*brickState, len(isr))
	done := make(chan struct{}, len(isr))
	for i, id := range isr {
		out[i] = &brickState{id: id, addr: addrs[id]}
		go func(s *brickState) {
			defer func() { done <- struct{}{} }()
			if s.addr == "" {
				s.err = fmt.Errorf("brick %s has no known address", s.id)
				return
			}
			cc, err := c.get(s.addr)
			if err != nil {
				s.err = err
				return
			}
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			s.fence, s.err = brickpb.NewReplicaClient(cc).Fence(fctx, &brickpb.FenceRequest{
				Ref: &brickpb.VolumeRef{Header: c.header(), VolumeId: volID, Epoch: epoch}})
		}(out[i])
	}
	for range isr {
		<-done
	}
	return out
}

// level brings every fenced brick up to the one with the longest log by
// replaying the source's op log through a replication stream at the new
// epoch. Bricks that cannot be levelled are returned in failed (they leave
// the in-sync set and heal later).
func level(ctx context.Context, c *conns, volID string, epoch uint64, states []*brickState, log *slog.Logger) (src *brickState, failed []*brickState) {
	for _, s := range states {
		if s.err == nil && (src == nil || s.fence.AppliedSeq > src.fence.AppliedSeq) {
			src = s
		}
	}
	if src == nil {
		return nil, states
	}
	for _, s := range states {
		if s.err != nil {
			failed = append(failed, s)
			continue
		}
		if s == src || s.fence.AppliedSeq == src.fence.AppliedSeq {
			continue
		}
		log.Info("levelling a brick from the longest log", "brick", s.id, "from", s.fence.AppliedSeq, "to", src.fence.AppliedSeq, "source", src.id)
		if err := replay(ctx, c, volID, epoch, src, s); err != nil {
			log.Warn("levelling failed: the brick leaves the in-sync set and heals later", "brick", s.id, "err", err)
			s.err = err
			failed = append(failed, s)
		}
	}
	return src, failed
}

func replay(ctx context.Context, c *conns, volID string, epoch uint64, src, dst *brickState) error {
	scc, err := c.get(src.addr)
	if err != nil {
		return err
	}
	dcc, err := c.get(dst.addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ref := &brickpb.VolumeRef{Header: c.header(), VolumeId: volID, Epoch: epoch}
	in, err := brickpb.NewReplicaClient(scc).OpsSince(ctx, &brickpb.OpsSinceRequest{Ref: ref, AfterSeq: dst.fence.AppliedSeq})
	if err != nil {
		return fmt.Errorf("reading the op log of %s: %w", src.id, err)
	}
	out, err := brickpb.NewReplicaClient(dcc).Replicate(ctx)
	if err != nil {
		return fmt.Errorf("opening a stream to %s: %w", dst.id, err)
	}
	if err := out.Send(&brickpb.ReplicateRequest{Open: ref}); err != nil {
		return fmt.Errorf("opening a stream to %s: %w", dst.id, err)
	}
	last := dst.fence.AppliedSeq
	for {
		op, err := in.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if status.Code(err) == codes.OutOfRange {
				return fmt.Errorf("the op log of %s no longer covers seq %d: %w", src.id, dst.fence.AppliedSeq+1, err)
			}
			return fmt.Errorf("reading the op log of %s: %w", src.id, err)
		}
		// A brick takes ops only at its stream's epoch: the new head
		// re-stamps the history it adopts.
		op.Epoch = epoch
		if err := out.Send(&brickpb.ReplicateRequest{Ops: []*brickpb.Op{op}}); err != nil {
			return fmt.Errorf("sending to %s: %w", dst.id, err)
		}
		last = op.Seq
	}
	if last != src.fence.AppliedSeq {
		return fmt.Errorf("the op log of %s ended at %d, want %d", src.id, last, src.fence.AppliedSeq)
	}
	// Applied is enough: like any op, the replayed ones become durable with
	// the head's next sync barrier.
	out.CloseSend()
	for {
		ack, err := out.Recv()
		if err != nil {
			return fmt.Errorf("waiting for %s to apply: %w", dst.id, err)
		}
		if ack.Error != "" {
			return fmt.Errorf("%s refused the replay: %s", dst.id, ack.Error)
		}
		if ack.AppliedSeq >= last {
			dst.fence.AppliedSeq = ack.AppliedSeq
			return nil
		}
	}
}
