package mounter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/fuse"
	"github.com/brickvol/brick/namecache"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica"
	"github.com/brickvol/brick/replica/head"
)

// backend serves the file system: mutations through the head, reads from
// the primary brick (falling back to the other in-sync bricks), each read
// tagged with the last submitted sequence number so it sees every write
// before it. Lookups of names that cannot exist are answered by the head's
// name cache while the head holds its epoch (names, lease).
type backend struct {
	h     *head.Head
	c     *conns
	volID string
	addrs map[string]string
	log   *slog.Logger
	names *namecache.Cache
	lease time.Duration
	early bool             // answer creates and mkdirs early (answersEarly)
	now   func() time.Time // stamps early-answered entries
	// tree reads this host's replica directly (readLocal); nil when this
	// host has none or local reads are off. brickID is that replica's
	// brick.
	tree    *replica.TreeReader
	brickID string

	renewing      atomic.Bool   // a lease renewal is under way (holdsLease)
	answeredEarly atomic.Uint64 // ops answered before they were applied (not writes)
	readsLocal    atomic.Uint64 // reads answered from this host's replica's tree
	readsPassedOn atomic.Uint64 // reads sent to a brick while tree was set
}

func (b *backend) NewFID() uint64 { return b.h.NewFID() }

// trustGrowth drops a write's growth (fuse's quota share) unless this host
// alone writes the volume: elsewhere the file system's idea of a file's
// size may be another host's past, so the head counts the write's bytes.
func (b *backend) trustGrowth(op *brickpb.Op) {
	if !b.early {
		op.Growth = nil
	}
}

func (b *backend) Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	b.trustGrowth(op)
	early := b.answersEarly(op)
	done := b.names.Begin(op)
	var res *brickpb.OpResult
	var err error
	if early {
		b.answeredEarly.Add(1)
		res, err = b.doEarly(ctx, op)
	} else {
		res, err = b.h.Do(ctx, op)
	}
	done(res, err)
	b.forgetLocal(op)
	return res, err
}

func (b *backend) counters() Counters {
	hits, misses, _ := b.names.Stats()
	return Counters{LookupsAnswered: hits, LookupsPassedOn: misses, OpsAnsweredEarly: b.answeredEarly.Load(),
		ReadsLocal: b.readsLocal.Load(), ReadsPassedOn: b.readsPassedOn.Load()}
}

// forgetLocal closes the local reader's descriptor of a file op forgets: an
// open descriptor would keep the brick's inode, and its blocks, alive.
func (b *backend) forgetLocal(op *brickpb.Op) {
	if b.tree == nil {
		return
	}
	switch {
	case op.Type == brickpb.OpType_OP_FORGET,
		op.Type == brickpb.OpType_OP_UNLINK && op.Flags&brickpb.UnlinkForget != 0:
		b.tree.Forget(op.Fid)
	}
}

// answersEarly reports whether op is a create or mkdir the head may answer
// itself, before any brick applied it, because it cannot fail as a POSIX
// operation: the name is certainly absent (name cache, under its lease),
// the parent is a directory (only directories are complete in the cache),
// and it is alive, which on a volume only this host mounts its kernel
// guarantees (it never creates in a directory it removed, and it holds
// the directory's lock across both). A create then costs no round trip,
// like a create in a local page cache (design.md, promise 1); should the
// primary fail it after all, the next fsync reports EIO (head.Submit).
//
// An RMDIR likewise, when the file system names the directory it removes
// (op.Fid: what the kernel looked up at the name, which on such a volume
// is what stands there) and the name cache knows it empty: the kernel
// checked the permissions, and a brick's rmdir of an empty directory has
// nothing else to fail on.
func (b *backend) answersEarly(op *brickpb.Op) bool {
	if !b.early || op.Fid <= 1 {
		return false
	}
	switch op.Type {
	case brickpb.OpType_OP_CREATE, brickpb.OpType_OP_MKDIR:
		return b.holdsLease() && b.names.Absent(op.Parent, op.Name)
	case brickpb.OpType_OP_RMDIR:
		return b.holdsLease() && b.names.Empty(op.Fid)
	}
	return false
}

// holdsLease reports whether the head held its epoch within the lease
// (head.HeldWithin), which is what lets the name cache and local reads
// answer without asking a brick. Half-way through the lease it renews it
// in the background by reading the root's attributes from every ISR brick
// at this head's epoch, which a fenced brick refuses (head.RenewLease):
// without that a head that only reads would lose its lease a second after
// its last write, and every read and lookup after it would go to a brick.
// Not with an op: a read-only workload must add nothing to the volume's
// history, or a brick that left meanwhile would come back behind.
func (b *backend) holdsLease() bool {
	if b.h.HeldWithin(b.lease / 2) {
		return true
	}
	if b.renewing.CompareAndSwap(false, true) {
		go func() {
			defer b.renewing.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), b.lease)
			defer cancel()
			if err := b.h.RenewLease(ctx, b.epochCheck); err != nil {
				b.log.Debug("renewing the head's lease", "err", err)
			}
		}()
	}
	return b.h.HeldWithin(b.lease)
}

// epochCheck asks brick id for the root's attributes at this head's
// epoch, waiting for nothing: it fails once the brick is fenced past it.
func (b *backend) epochCheck(ctx context.Context, id string) error {
	cc, err := b.c.get(b.addrs[id])
	if err != nil {
		return err
	}
	resp, err := brickpb.NewReplicaClient(cc).Meta(ctx, &brickpb.MetaRequest{Ref: b.ref(),
		Kind: brickpb.MetaKind_META_GETATTR, Fid: fuse.RootFID})
	if err == nil && resp.Errno != 0 {
		err = syscall.Errno(resp.Errno)
	}
	return err
}

// doEarly submits op and answers it with the attributes the brick will
// give the new entry: it stamps the entry's times into the op, so every
// replica keeps the ones answered here.
func (b *backend) doEarly(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	if op.Type == brickpb.OpType_OP_RMDIR {
		seq, err := b.h.Submit(ctx, op)
		if err != nil {
			return nil, err
		}
		return &brickpb.OpResult{Seq: seq}, nil
	}
	now := b.now().UnixNano()
	op.AtimeNs, op.MtimeNs = now, now
	a := &brickpb.Attr{Fid: op.Fid, Mode: syscall.S_IFREG | op.Mode&0o7777, Nlink: 1,
		Uid: op.Uid, Gid: op.Gid, AtimeNs: now, MtimeNs: now, CtimeNs: now}
	if op.Type == brickpb.OpType_OP_MKDIR {
		a.Mode, a.Nlink = syscall.S_IFDIR|op.Mode&0o7777, 2
	}
	seq, err := b.h.Submit(ctx, op)
	if err != nil {
		return nil, err
	}
	return &brickpb.OpResult{Seq: seq, Attr: a}, nil
}

func (b *backend) Sync(ctx context.Context) error { return b.h.Sync(ctx) }

// Submit implements fuse.Submitter: op is sequenced and not waited for.
// Only a volume this host alone mounts answers ops before they are
// applied (answersEarly says why); elsewhere it waits as Do does.
func (b *backend) Submit(ctx context.Context, op *brickpb.Op) (uint64, error) {
	if !b.early { // Do drops op.Growth
		res, err := b.Do(ctx, op)
		if err == nil && res.GetErrno() != 0 {
			err = syscall.Errno(res.GetErrno())
		}
		return res.GetSeq(), err
	}
	b.answeredEarly.Add(1)
	done := b.names.Begin(op)
	seq, err := b.h.Submit(ctx, op)
	var res *brickpb.OpResult
	if err == nil {
		res = &brickpb.OpResult{Seq: seq}
	}
	done(res, err)
	b.forgetLocal(op)
	return seq, err
}

// UsedBytes implements fuse.UsageReporter from the head's estimate (the
// primary brick's count plus what it has not acknowledged yet), so the
// volume's size quota is enforced without a round trip per write.
func (b *backend) UsedBytes(ctx context.Context) (int64, error) {
	// Right after the mount the primary's stream may not be up yet: wait
	// for its first report rather than fail the write.
	select {
	case <-b.h.UsageKnown():
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
	if u, ok := b.h.UsedBytes(); ok {
		return u, nil
	}
	return 0, fmt.Errorf("the volume's usage is not known (no report from the primary brick %s)", b.h.Primary())
}

func (b *backend) ref() *brickpb.VolumeRef {
	return &brickpb.VolumeRef{Header: b.c.header(), VolumeId: b.volID, Epoch: b.h.Epoch()}
}

// readers are the bricks to read from, primary first.
func (b *backend) readers() []string {
	st := b.h.Status()
	out := []string{b.h.Primary()}
	for _, id := range st.ISR {
		if id != out[0] {
			out = append(out, id)
		}
	}
	return out
}

func (b *backend) Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	var listing namecache.Listing
	switch req.Kind {
	case brickpb.MetaKind_META_LOOKUP:
		if b.holdsLease() && b.names.Absent(req.Parent, req.Name) {
			return &brickpb.MetaResponse{Errno: uint32(syscall.ENOENT)}, nil
		}
	case brickpb.MetaKind_META_READDIR:
		listing = b.names.StartListing() // before AfterSeq is read
	}
	resp, err := b.meta(ctx, req)
	if err == nil && req.Kind == brickpb.MetaKind_META_READDIR && resp.Errno == 0 {
		b.names.Listed(listing, req.Fid, resp.Entries)
	}
	return resp, err
}

func (b *backend) meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	req.Ref, req.AfterSeq = b.ref(), b.h.AfterSeq()
	b.h.Hurry() // the brick waits for AfterSeq
	var lastErr error
	for _, id := range b.readers() {
		cc, err := b.c.get(b.addrs[id])
		if err != nil {
			lastErr = err
			continue
		}
		resp, err := brickpb.NewReplicaClient(cc).Meta(ctx, req)
		if err == nil {
			return resp, nil
		}
		lastErr = fmt.Errorf("brick %s: %w", id, err)
		if !retryable(err) {
			break
		}
	}
	return nil, lastErr
}

func (b *backend) Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error) {
	after := b.h.AfterSeq()
	if b.tree != nil {
		buf := make([]byte, size)
		if n, ok := b.readLocal(fid, buf, off, after); ok {
			return buf[:n], nil
		}
	}
	return b.readBrick(ctx, fid, off, size, after)
}

// ReadInto implements fuse.ReaderInto: a local read (readLocal) goes
// straight into dest.
func (b *backend) ReadInto(ctx context.Context, fid uint64, dest []byte, off int64) (int, error) {
	after := b.h.AfterSeq()
	if n, ok := b.readLocal(fid, dest, off, after); ok {
		return n, nil
	}
	data, err := b.readBrick(ctx, fid, off, len(dest), after)
	return copy(dest, data), err
}

func (b *backend) readBrick(ctx context.Context, fid uint64, off int64, size int, after uint64) ([]byte, error) {
	req := &brickpb.ReadRequest{Ref: b.ref(), AfterSeq: after, Fid: fid, Offset: off, Size: uint32(size)}
	b.h.Hurry() // the brick waits for AfterSeq
	var lastErr error
	for _, id := range b.readers() {
		cc, err := b.c.get(b.addrs[id])
		if err != nil {
			lastErr = err
			continue
		}
		resp, err := brickpb.NewReplicaClient(cc).Read(ctx, req)
		if err == nil {
			if resp.Errno != 0 {
				return nil, errno(resp.Errno)
			}
			return resp.Data, nil
		}
		lastErr = fmt.Errorf("brick %s: %w", id, err)
		if !retryable(err) {
			break
		}
	}
	return nil, lastErr
}

// readLocal reads from this host's replica's tree itself, without a round
// trip to its brick, when that brick is the primary and in the ISR, has
// acknowledged applying every op up to after (what the brick's Read would
// wait for), and the head holds its lease: a deposed head, whose bricks a
// successor may be changing or have left behind, reads through a brick,
// which refuses it. The tree is read as of the brick's stream generation;
// one that changed during the read may mean a resync replaced the tree, so
// the read goes to a brick then too. ok false: ask a brick.
func (b *backend) readLocal(fid uint64, buf []byte, off int64, after uint64) (n int, ok bool) {
	if b.tree == nil {
		return 0, false
	}
	defer func() {
		if !ok {
			b.readsPassedOn.Add(1)
		}
	}()
	pos := b.h.PrimaryPos()
	if pos == nil || pos.ID != b.brickID || pos.Applied < after || !b.holdsLease() {
		return 0, false
	}
	n, err := b.tree.ReadAt(pos.Gen, fid, buf, off)
	if err != nil {
		if !errors.Is(err, replica.ErrNotInTree) {
			b.log.Debug("reading the local replica; asking the brick", "fid", fid, "err", err)
		}
		return 0, false
	}
	if now := b.h.PrimaryPos(); now == nil || now.ID != pos.ID || now.Gen != pos.Gen {
		return 0, false
	}
	b.readsLocal.Add(1)
	return n, true
}

// primeRoot lists the volume's root once, so that the name cache knows it
// completely from the start: creates in the root (a database's journal,
// a container's data directory) are answered early too, not only those in
// directories this head made or listed. Best effort: a name added
// meanwhile makes the listing not count (namecache.Listed), an error
// leaves the cache as it was.
func (b *backend) primeRoot(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := b.Meta(ctx, &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: fuse.RootFID}); err != nil {
		b.log.Debug("listing the root for the name cache", "err", err)
	}
}

// retryable: another brick may answer what this one could not.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal, codes.Unknown:
		return true
	}
	return false
}
