package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// GRPCSource is a ResyncSource reading another brick's replica over its
// Replica service, at the epoch of ref.
type GRPCSource struct {
	Client brickpb.ReplicaClient
	Ref    *brickpb.VolumeRef
}

// Snapshot implements ResyncSource.
func (g *GRPCSource) Snapshot(ctx context.Context) (*brickpb.SnapshotPart, func() (*brickpb.FileSums, error), error) {
	stream, err := g.Client.Snapshot(ctx, &brickpb.SnapshotRequest{Ref: g.Ref})
	if err != nil {
		return nil, nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, nil, fmt.Errorf("receiving the snapshot: %w", err)
	}
	var pending []*brickpb.FileSums
	done := false
	for len(first.Sums) == 0 {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			done = true
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("receiving the snapshot: %w", err)
		}
		first.Entries = append(first.Entries, p.Entries...)
		if len(p.Sums) > 0 {
			pending = p.Sums
			break
		}
	}
	pending = append(first.Sums, pending...)
	first.Sums = nil
	next := func() (*brickpb.FileSums, error) {
		for len(pending) == 0 {
			if done {
				return nil, errEndOfSums
			}
			p, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				done = true
				continue
			}
			if err != nil {
				return nil, err
			}
			pending = p.Sums
		}
		fs := pending[0]
		pending = pending[1:]
		return fs, nil
	}
	return first, next, nil
}

// Read implements ResyncSource.
func (g *GRPCSource) Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error) {
	resp, err := g.Client.Read(ctx, &brickpb.ReadRequest{Ref: g.Ref, Fid: fid, Offset: off, Size: uint32(size)})
	if err != nil {
		return nil, err
	}
	if resp.Errno != 0 {
		return nil, syscall.Errno(resp.Errno)
	}
	return resp.Data, nil
}

// Throttled limits the data src reads to bytesPerSec (0: unlimited), on
// average since the first read: what --heal-bandwidth means for a resync.
func Throttled(src ResyncSource, bytesPerSec int64) ResyncSource {
	if bytesPerSec <= 0 {
		return src
	}
	return &throttled{ResyncSource: src, rate: bytesPerSec, now: time.Now, sleep: sleepCtx}
}

type throttled struct {
	ResyncSource
	rate  int64
	start time.Time
	read  int64
	now   func() time.Time                           // the clock (a fake in tests)
	sleep func(context.Context, time.Duration) error // and its wait
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *throttled) Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error) {
	if t.start.IsZero() {
		t.start = t.now()
	}
	// Wait until what was read so far fits the rate, then read.
	due := t.start.Add(time.Duration(float64(t.read) / float64(t.rate) * float64(time.Second)))
	if d := due.Sub(t.now()); d > 0 {
		if err := t.sleep(ctx, d); err != nil {
			return nil, err
		}
	}
	b, err := t.ResyncSource.Read(ctx, fid, off, size)
	t.read += int64(len(b))
	return b, err
}
