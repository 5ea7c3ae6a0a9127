package fuse

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// fileSystem is what every node of one mount shares: the backend, the
// options, the quota and the set of files to forget.
type fileSystem struct {
	b     Backend
	opts  Options
	log   *slog.Logger
	errs  errLog
	quota quota

	// orphans counts, per file ID, the nodes seen unlinked (or replaced
	// by a rename) that have not been forgotten yet: the candidates for
	// OP_FORGET. forgets tracks the goroutines sending them.
	orphanMu sync.Mutex
	orphans  map[uint64]int
	forgets  sync.WaitGroup

	// locker is the backend's Locker, if it is one; lockFS then wraps the
	// go-fuse bridge to release locks at close (locks.go).
	locker Locker
	lockFS *lockFS

	// lists keeps what listings said of each entry (listings.go); nil on a
	// volume other hosts write too.
	lists *listings
}

func newFileSystem(b Backend, opts Options) *fileSystem {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("volume", opts.Volume)
	f := &fileSystem{
		b:       b,
		opts:    opts,
		log:     log,
		errs:    errLog{log: log, now: time.Now},
		orphans: map[uint64]int{},
	}
	f.quota.limit.Store(opts.QuotaBytes)
	if u, ok := b.(UsageReporter); ok {
		f.quota.usage = u
	}
	if l, ok := b.(Locker); ok {
		f.locker = l
	}
	if !opts.NoWritebackCache {
		// Kept no longer than the kernel may keep an answer itself.
		if ttl := min(*cacheTime(opts.AttrTimeout), *cacheTime(opts.EntryTimeout)); ttl > 0 {
			f.lists = newListings(ttl, listingsMax)
		}
	}
	return f
}

// listingsMax bounds the entries kept from listings (about 200 bytes
// each).
const listingsMax = 1 << 16

// listingsMaxDirSize: a directory bigger than this (st_size, ext4's and
// xfs's grow with the entries) is listed without attributes, as its
// listing would be too long to keep.
const listingsMaxDirSize = 1 << 20

// Backend calls are never cancelled by the kernel's interrupts: an op that
// was submitted may be applied already and must report its real result,
// and the backend bounds every call with its own timeouts.

// do submits op and returns its result, or the errno it failed with.
func (f *fileSystem) do(ctx context.Context, name string, op *brickpb.Op) (*brickpb.OpResult, syscall.Errno) {
	f.touch(op)
	res, err := f.b.Do(context.WithoutCancel(ctx), op)
	f.touch(op)
	if err == nil && res == nil {
		err = errors.New("backend returned no result")
	}
	if err != nil {
		return nil, f.fail(name, err, mutation, opAttrs(op)...)
	}
	if res.Errno != 0 {
		return res, syscall.Errno(res.Errno)
	}
	return res, 0
}

// submit submits op through s without waiting for its result (Submitter).
func (f *fileSystem) submit(ctx context.Context, s Submitter, op *brickpb.Op) error {
	f.touch(op)
	_, err := s.Submit(context.WithoutCancel(ctx), op)
	f.touch(op)
	return err
}

// touch tells the listings kept that op changes what it names: before it
// is submitted and again after (listings.go says why).
func (f *fileSystem) touch(op *brickpb.Op) {
	if f.lists != nil {
		f.lists.touch(op)
	}
}

// meta asks the backend a question about the namespace.
func (f *fileSystem) meta(ctx context.Context, name string, req *brickpb.MetaRequest) (*brickpb.MetaResponse, syscall.Errno) {
	resp, err := f.b.Meta(context.WithoutCancel(ctx), req)
	if err == nil && resp == nil {
		err = errors.New("backend returned no response")
	}
	if err != nil {
		return nil, f.fail(name, err, query, "fid", req.Fid, "parent", req.Parent, "name", req.Name)
	}
	if resp.Errno != 0 {
		return resp, syscall.Errno(resp.Errno)
	}
	return resp, 0
}

// getattr returns the attributes of fid.
func (f *fileSystem) getattr(ctx context.Context, name string, fid uint64) (*brickpb.Attr, syscall.Errno) {
	resp, errno := f.meta(ctx, name, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETATTR, Fid: fid})
	if errno != 0 {
		return nil, errno
	}
	if resp.Attr == nil {
		return nil, f.fail(name, errors.New("backend returned no attributes"), query, "fid", fid)
	}
	return resp.Attr, 0
}

// attrOf returns the attributes an op's result carries, or asks the
// backend for those of fid when it carries none.
func (f *fileSystem) attrOf(ctx context.Context, name string, res *brickpb.OpResult, fid uint64) (*brickpb.Attr, syscall.Errno) {
	if a := res.GetAttr(); a != nil && a.Fid != 0 {
		return a, 0
	}
	return f.getattr(ctx, name, fid)
}

// sync waits until everything submitted so far is durable on every in-sync
// replica.
func (f *fileSystem) sync(ctx context.Context, name string, fid uint64) syscall.Errno {
	if err := f.b.Sync(context.WithoutCancel(ctx)); err != nil {
		return f.fail(name, err, mutation, "fid", fid)
	}
	return 0
}

func opAttrs(op *brickpb.Op) []any {
	attrs := []any{"type", op.Type.String()}
	if op.Fid != 0 {
		attrs = append(attrs, "fid", op.Fid)
	}
	if op.Parent != 0 {
		attrs = append(attrs, "parent", op.Parent, "name", op.Name)
	}
	if op.NewParent != 0 {
		attrs = append(attrs, "new_parent", op.NewParent, "new_name", op.NewName)
	}
	return attrs
}
