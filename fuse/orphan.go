package fuse

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// Open-unlinked files. The backend keeps a file's data under its ID after
// its last name is gone, until it receives OP_FORGET. The file system sends
// OP_FORGET for a non-directory it saw lose a name (unlink, or a rename
// over it) once the backend reports nlink 0 and nothing can reach the file
// any more:
//
//   - with the unlink itself (brickpb.UnlinkForget) when it removes the
//     last name and no handle is open, on a volume only this host writes:
//     one replicated op instead of two;
//   - at once, from the unlink or rename, when no handle is open on it: the
//     space is free when unlink(2) returns, as on a local disk, provided
//     the kernel's RELEASE of the last descriptor (sent asynchronously
//     after close(2)) arrived first; else by the next case, moments later.
//     An open
//     racing with that unlink gets ENOENT (node.gone), as if it came after;
//   - otherwise when the kernel forgets the inode (OnForget), after the last
//     descriptor and mapping are gone, from a goroutine of its own;
//   - for what the kernel never reported forgotten, after the server
//     stopped (reapOrphans).
//
// fileSystem.orphans counts the nodes of each file ID that lost a name and
// were not forgotten yet; a node's mark is dropped once its file is
// forgotten or found to still have a name.

var _ fs.NodeOnForgetter = (*node)(nil)

// forgetWithUnlink decides, before an unlink of one of n's names, whether
// the unlink should forget the file too (brickpb.UnlinkForget): only on a
// volume this host alone writes (the writeback cache is on), where n's
// link count is exact, when that name is n's only one and no handle is
// open. n is then marked gone at once, so an open racing with the unlink
// gets ENOENT, as if it came after; keepAfterAll undoes that if the unlink
// fails.
func (n *node) forgetWithUnlink() bool {
	if n.IsDir() || n.fsys.opts.NoWritebackCache {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.opens > 0 || n.gone || n.last.GetNlink() != 1 {
		return false
	}
	n.gone = true
	return true
}

// lastNameOpen reports whether the name about to be unlinked is the last of
// n, a file still open on a volume this host alone writes (where n's link
// count is exact): the unlink's result is then known (no name left), only
// the forget waits for the close.
func (n *node) lastNameOpen() bool {
	if n.IsDir() || n.fsys.opts.NoWritebackCache {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opens > 0 && !n.gone && !n.unlinked && n.last.GetNlink() == 1
}

// keepAfterAll undoes forgetWithUnlink's mark.
func (n *node) keepAfterAll() {
	n.mu.Lock()
	n.gone = false
	n.mu.Unlock()
}

// lostName is called after an op removed one of n's names. res is the op's
// result, whose Attr may describe n after the op; withForget says the op
// was an unlink that forgets the file with its last name
// (forgetWithUnlink).
func (n *node) lostName(ctx context.Context, res *brickpb.OpResult, withForget bool) {
	if n.IsDir() {
		n.mu.Lock()
		n.unlinked = true // directories have one name: removed
		n.mu.Unlock()
		return
	}
	if withForget {
		if a := res.GetAttr(); a != nil && a.Fid == n.fid() && a.Nlink == 0 {
			n.mu.Lock()
			n.unlinked, n.forgotten = true, true
			n.mu.Unlock()
			return // the brick forgot it with the name: nothing to track
		}
		n.keepAfterAll() // another name is left after all: the usual way
	}
	n.mu.Lock()
	first := !n.unlinked
	n.unlinked = true
	n.mu.Unlock()
	if first {
		n.fsys.markOrphan(n.fid())
	}

	a := res.GetAttr()
	if a == nil || a.Fid != n.fid() {
		var errno syscall.Errno
		if a, errno = n.fsys.getattr(ctx, "unlink", n.fid()); errno != 0 {
			return // OnForget or reapOrphans will ask again
		}
	}
	if a.Nlink > 0 {
		return
	}
	n.mu.Lock()
	forgetNow := n.opens == 0 && !n.gone
	if forgetNow {
		n.gone = true
	}
	n.mu.Unlock()
	if forgetNow {
		n.forget(ctx)
	}
}

// forget sends OP_FORGET for n, which has no name and no handle left.
func (n *node) forget(ctx context.Context) {
	if errno := n.fsys.forget(ctx, n.fid()); errno != 0 {
		return // the mark stays: reapOrphans retries
	}
	n.mu.Lock()
	n.forgotten = true
	n.mu.Unlock()
	n.fsys.unmarkOrphan(n.fid())
}

// removedAttr answers for a directory removed (rmdir, or replaced by a
// rename) while a descriptor is still open on it, which the backend no
// longer knows: its last attributes with nlink 0, as a local file system
// answers fstat(2). Anything else stays ENOENT.
func (n *node) removedAttr() (*brickpb.Attr, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.IsDir() || !n.unlinked || n.last == nil {
		return nil, syscall.ENOENT
	}
	a := proto.Clone(n.last).(*brickpb.Attr)
	a.Nlink = 0
	return a, 0
}

// forgottenAttr answers for a non-directory the backend forgot (no name,
// no handle, OP_FORGET done): its last attributes with nlink 0. Any op on
// it would fail everywhere; what is set on it nobody can see.
func (n *node) forgottenAttr() (*brickpb.Attr, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.IsDir() || !n.forgotten || n.opens > 0 || n.last == nil {
		return nil, false
	}
	a := proto.Clone(n.last).(*brickpb.Attr)
	a.Nlink = 0
	return a, true
}

// OnForget is called when the kernel forgot the node. A non-directory that
// lost a name and was not forgotten yet is checked, and forgotten by the
// backend if it has no name left.
func (n *node) OnForget() {
	if n.IsDir() {
		return
	}
	n.mu.Lock()
	pending := n.unlinked && !n.forgotten
	n.mu.Unlock()
	if pending {
		n.fsys.forgetLater(n.fid())
	}
}

// markOrphan records that a node of fid was seen losing a name.
func (f *fileSystem) markOrphan(fid uint64) {
	f.orphanMu.Lock()
	f.orphans[fid]++
	f.orphanMu.Unlock()
}

// unmarkOrphan drops one node's mark of fid.
func (f *fileSystem) unmarkOrphan(fid uint64) {
	f.orphanMu.Lock()
	if f.orphans[fid]--; f.orphans[fid] <= 0 {
		delete(f.orphans, fid)
	}
	f.orphanMu.Unlock()
}

// forget sends OP_FORGET for fid; a file already forgotten is not an error.
func (f *fileSystem) forget(ctx context.Context, fid uint64) syscall.Errno {
	_, errno := f.do(ctx, "forget", &brickpb.Op{Type: brickpb.OpType_OP_FORGET, Fid: fid})
	if errno == syscall.ENOENT || errno == syscall.ESTALE {
		return 0
	}
	return errno
}

// forgetLater runs forgetIfOrphan for a node the kernel forgot, off the
// FUSE request path.
func (f *fileSystem) forgetLater(fid uint64) {
	f.forgets.Add(1)
	go func() {
		defer f.forgets.Done()
		defer func() {
			if v := recover(); v != nil {
				f.panicHandler(v)
			}
		}()
		f.forgetIfOrphan(context.Background(), fid, true)
	}()
}

// forgetIfOrphan sends OP_FORGET for fid if the backend says it has no name
// left. With unmark it drops one node's mark once settled; the mark stays
// when the backend could not answer, so reapOrphans tries again.
func (f *fileSystem) forgetIfOrphan(ctx context.Context, fid uint64, unmark bool) {
	a, errno := f.getattr(ctx, "forget", fid)
	switch {
	case errno == syscall.ENOENT || errno == syscall.ESTALE:
	case errno != 0:
		return
	case a.Nlink == 0 && a.Mode&syscall.S_IFMT != syscall.S_IFDIR:
		if f.forget(ctx, fid) != 0 {
			return
		}
	}
	if unmark {
		f.unmarkOrphan(fid)
	}
}

// reapOrphans forgets, after the server stopped, the unlinked files the
// kernel never reported forgotten (it need not, at unmount).
func (f *fileSystem) reapOrphans(ctx context.Context) {
	f.forgets.Wait()
	f.orphanMu.Lock()
	fids := make([]uint64, 0, len(f.orphans))
	for fid := range f.orphans {
		fids = append(fids, fid)
	}
	f.orphans = map[uint64]int{}
	f.orphanMu.Unlock()
	for _, fid := range fids {
		f.forgetIfOrphan(ctx, fid, false)
	}
}
