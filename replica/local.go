package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/brickvol/brick/proto/brickpb"
)

// Local serves a file system (package fuse's Backend) straight from one
// Replica, applying each op synchronously with the next seq at the
// replica's promised epoch: no head, no replication. For tests (go-fuse's
// posixtest) and single-brick experiments. Safe for concurrent use; Do
// calls are serialised.
type Local struct {
	r    *Replica
	mu   sync.Mutex // serialises Do: seqs are handed out in order
	next atomic.Uint64
}

// NewLocal serves r; r stays the caller's to Close.
func NewLocal(r *Replica) *Local {
	l := &Local{r: r}
	_, _, _, maxFID := r.State()
	l.next.Store(max(maxFID, rootFID))
	return l
}

// NewFID reserves a file ID above every one the replica has seen.
func (l *Local) NewFID() uint64 { return l.next.Add(1) }

// Do fills in op.Seq and op.Epoch, applies op and returns its result (a
// POSIX failure is the result's Errno). An error means the replica could
// not apply it (ErrLocalFailure, ErrClosed, ...).
func (l *Local) Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	if op == nil {
		return nil, fmt.Errorf("%w: nil op", ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	applied, _, promised, _ := l.r.State()
	op.Seq, op.Epoch = applied+1, promised
	res, err := l.r.Apply([]*brickpb.Op{op})
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		return nil, errors.New("replica applied no op")
	}
	if fid := op.Fid; fid > 0 {
		for cur := l.next.Load(); fid > cur && !l.next.CompareAndSwap(cur, fid); cur = l.next.Load() {
		}
	}
	return res[0], nil
}

func (l *Local) ref() *brickpb.VolumeRef {
	_, _, promised, _ := l.r.State()
	return &brickpb.VolumeRef{Epoch: promised}
}

// Meta answers req (its Ref and AfterSeq are filled in: every op Do
// returned from is already applied).
func (l *Local) Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: nil request", ErrInvalid)
	}
	req.Ref, req.AfterSeq = l.ref(), 0
	return l.r.Meta(ctx, req)
}

// Read reads file fid; a POSIX failure comes back as syscall.Errno.
func (l *Local) Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error) {
	if size < 0 || size > MaxReadSize {
		return nil, syscall.EINVAL
	}
	resp, err := l.r.Read(ctx, &brickpb.ReadRequest{Ref: l.ref(), Fid: fid, Offset: off, Size: uint32(size)})
	if err != nil {
		return nil, err
	}
	if resp.Errno != 0 {
		return nil, syscall.Errno(resp.Errno)
	}
	return resp.Data, nil
}

// Sync makes every op applied so far durable.
func (l *Local) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := l.r.Sync()
	return err
}
