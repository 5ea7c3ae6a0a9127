package fuse

import (
	"context"
	"errors"
	"math"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// Forwarded locks (a Backend that implements Locker). The kernel sends
// GETLK, SETLK and SETLKW for fcntl (POSIX and OFD) locks and, with
// FUSE_LK_FLOCK, for flock(2); the node methods below turn them into
// Locker calls. The kernel does not unlock anything itself at close: it
// expects the file system to drop
//
//   - a process's POSIX locks on a file when the process closes any
//     descriptor of it: FLUSH carries the process's lock owner;
//   - an open file's flock and OFD locks when the open file is released:
//     RELEASE carries FUSE_RELEASE_FLOCK_UNLOCK and the open file's lock
//     owner, but only if flock(2) was used on it, never for OFD locks.
//
// go-fuse's fs bridge drops FlushIn.LockOwner and ReleaseIn.LockOwner on
// the way to the node, so lockFS wraps the bridge's RawFileSystem and
// does the releases itself, before delegating. The raw level knows only
// go-fuse's NodeId and the kernel's file handle (Fh), not the file ID, so
// lockFS learns them while a lock request passes through: it records the
// request's cancel channel, which the bridge hands to the node as
// ctx.(*fuse.Context).Cancel, with the NodeId and Fh; the node looks its
// request up by that channel and records the file ID and the lock owner
// (lockFS.hold). Only nodes with owners that may hold locks have an entry.
//
// At FLUSH the flushing owner's POSIX locks go if it holds any. At RELEASE
// of Fh every owner that took a lock through Fh and was not flushed since
// loses all its locks: that is the open file's own owner (flock, OFD),
// which no FLUSH names; a process's owner was flushed when the process
// closed its last descriptor of that open file, so it is only still there
// when a lock was granted after that close, which this release now drops.

var (
	_ fs.NodeGetlker  = (*node)(nil)
	_ fs.NodeSetlker  = (*node)(nil)
	_ fs.NodeSetlkwer = (*node)(nil)
)

// offsetMax is the kernel's OFFSET_MAX, the end of a lock "to end of file"
// in the FUSE protocol (LockSpec uses math.MaxUint64).
const offsetMax = math.MaxInt64

func lockSpec(lk *gofuse.FileLock, flags uint32) LockSpec {
	end := lk.End
	if end >= offsetMax {
		end = math.MaxUint64
	}
	return LockSpec{Flock: flags&gofuse.FUSE_LK_FLOCK != 0, Type: lk.Typ, Start: lk.Start, End: end, Pid: lk.Pid}
}

func fileLock(s LockSpec) gofuse.FileLock {
	return gofuse.FileLock{Start: min(s.Start, offsetMax), End: min(s.End, offsetMax), Typ: s.Type, Pid: s.Pid}
}

// lockErrno maps a Locker error: an errno it wraps is the answer (EAGAIN,
// EINTR, EDEADLK, ...), anything else is logged and EIO.
func (n *node) lockErrno(op string, err error, owner uint64, s LockSpec) syscall.Errno {
	return n.fsys.fail(op, err, query, "fid", n.fid(), "owner", owner, "flock", s.Flock,
		"type", s.Type, "start", s.Start, "end", s.End)
}

func (n *node) Getlk(ctx context.Context, f fs.FileHandle, owner uint64, lk *gofuse.FileLock, flags uint32, out *gofuse.FileLock) syscall.Errno {
	l := n.fsys.locker
	if l == nil {
		return syscall.ENOTSUP
	}
	s := lockSpec(lk, flags)
	conflict, found, err := l.GetLock(context.WithoutCancel(ctx), n.fid(), owner, s)
	if err != nil {
		return n.lockErrno("getlk", err, owner, s)
	}
	if !found {
		*out = gofuse.FileLock{Start: lk.Start, End: lk.End, Typ: syscall.F_UNLCK}
		return 0
	}
	if (conflict.Type != syscall.F_RDLCK && conflict.Type != syscall.F_WRLCK) || conflict.End < conflict.Start {
		return n.lockErrno("getlk", errors.New("backend reported an invalid conflicting lock"), owner, conflict)
	}
	*out = fileLock(conflict)
	return 0
}

func (n *node) Setlk(ctx context.Context, f fs.FileHandle, owner uint64, lk *gofuse.FileLock, flags uint32) syscall.Errno {
	return n.setlk(ctx, "setlk", owner, lk, flags, false)
}

// Setlkw waits for the lock until it is granted or the kernel interrupts
// the request (a signal): ctx is the request's, not detached as for other
// backend calls, so the wait ends with EINTR.
func (n *node) Setlkw(ctx context.Context, f fs.FileHandle, owner uint64, lk *gofuse.FileLock, flags uint32) syscall.Errno {
	return n.setlk(ctx, "setlkw", owner, lk, flags, true)
}

func (n *node) setlk(ctx context.Context, op string, owner uint64, lk *gofuse.FileLock, flags uint32, wait bool) syscall.Errno {
	l := n.fsys.locker
	if l == nil {
		return syscall.ENOTSUP
	}
	s := lockSpec(lk, flags)
	lfs := n.fsys.lockFS
	var call *lockCall
	if lfs != nil && s.Type != syscall.F_UNLCK {
		// Held before the call, so a FLUSH racing a wait releases what
		// may be granted; again after, in case that FLUSH came first.
		// call is nil only if go-fuse stopped passing the request's
		// cancel channel as ctx: the lock would then not be released at
		// close, which the tests of close(2) would catch.
		if call = lfs.call(ctx); call != nil {
			lfs.hold(call, n.fid(), owner)
		}
	}
	if err := l.SetLock(ctx, n.fid(), owner, s, wait); err != nil {
		return n.lockErrno(op, err, owner, s)
	}
	if call != nil {
		lfs.hold(call, n.fid(), owner)
	}
	return 0
}

// lockFS is the bridge's RawFileSystem with the lock releases of FLUSH and
// RELEASE that go-fuse drops (see the comment at the top of this file).
type lockFS struct {
	gofuse.RawFileSystem
	fsys   *fileSystem
	locker Locker

	calls sync.Map // cancel channel (<-chan struct{}) → *lockCall, during a SETLK/SETLKW

	mu    sync.Mutex
	nodes map[uint64]*lockedNode // by NodeId: nodes whose owners may hold locks

	releases sync.WaitGroup // release goroutines started by Forget
}

// lockCall is one SETLK or SETLKW passing through lockFS.
type lockCall struct {
	nodeID, fh uint64
}

// lockedNode is a node some of whose owners may hold locks: for each
// owner, the file handles it took locks through.
type lockedNode struct {
	fid    uint64
	owners map[uint64]map[uint64]bool
}

func newLockFS(raw gofuse.RawFileSystem, fsys *fileSystem, l Locker) *lockFS {
	return &lockFS{RawFileSystem: raw, fsys: fsys, locker: l, nodes: map[uint64]*lockedNode{}}
}

func (l *lockFS) SetLk(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	l.calls.Store(cancel, &lockCall{nodeID: in.NodeId, fh: in.Fh})
	defer l.calls.Delete(cancel)
	return l.RawFileSystem.SetLk(cancel, in)
}

func (l *lockFS) SetLkw(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	l.calls.Store(cancel, &lockCall{nodeID: in.NodeId, fh: in.Fh})
	defer l.calls.Delete(cancel)
	return l.RawFileSystem.SetLkw(cancel, in)
}

// call returns the SETLK or SETLKW that ctx belongs to.
func (l *lockFS) call(ctx context.Context) *lockCall {
	c, ok := ctx.(*gofuse.Context)
	if !ok || c.Cancel == nil {
		return nil
	}
	v, ok := l.calls.Load(c.Cancel)
	if !ok {
		return nil
	}
	return v.(*lockCall)
}

// hold records that owner may hold locks on fid, taken through the call's
// file handle.
func (l *lockFS) hold(c *lockCall, fid, owner uint64) {
	l.mu.Lock()
	ln := l.nodes[c.nodeID]
	var stale *lockedNode
	if ln == nil || ln.fid != fid {
		if ln != nil { // the NodeId was reused without our seeing its FORGET
			stale = ln
		}
		ln = &lockedNode{fid: fid, owners: map[uint64]map[uint64]bool{}}
		l.nodes[c.nodeID] = ln
	}
	fhs := ln.owners[owner]
	if fhs == nil {
		fhs = map[uint64]bool{}
		ln.owners[owner] = fhs
	}
	fhs[c.fh] = true
	l.mu.Unlock()
	if stale != nil {
		l.releaseAll("setlk", stale)
	}
}

// Flush drops the flushing owner's POSIX locks: a process closed a
// descriptor of the file.
func (l *lockFS) Flush(cancel <-chan struct{}, in *gofuse.FlushIn) gofuse.Status {
	l.mu.Lock()
	ln := l.nodes[in.NodeId]
	var fid uint64
	held := false
	if ln != nil {
		if _, held = ln.owners[in.LockOwner]; held {
			fid = ln.fid
			l.forgetOwner(in.NodeId, ln, in.LockOwner)
		}
	}
	l.mu.Unlock()
	if held {
		l.release("flush", fid, in.LockOwner, false)
	}
	return l.RawFileSystem.Flush(cancel, in)
}

// Release drops the locks of the owners that took locks through the
// released file handle and were not flushed since: the open file's flock
// and OFD locks.
func (l *lockFS) Release(cancel <-chan struct{}, in *gofuse.ReleaseIn) {
	l.mu.Lock()
	var fid uint64
	var owners []uint64
	if ln := l.nodes[in.NodeId]; ln != nil {
		fid = ln.fid
		for owner, fhs := range ln.owners {
			if fhs[in.Fh] || in.ReleaseFlags&gofuse.FUSE_RELEASE_FLOCK_UNLOCK != 0 && owner == in.LockOwner {
				owners = append(owners, owner)
			}
		}
		for _, owner := range owners {
			l.forgetOwner(in.NodeId, ln, owner)
		}
	}
	l.mu.Unlock()
	for _, owner := range owners {
		l.release("release", fid, owner, true)
	}
	l.RawFileSystem.Release(cancel, in)
}

// Forget drops the node's entry: the kernel has no file open on it, so
// whatever is still recorded (a lock granted as its file was closed) is
// released, off the request loop.
func (l *lockFS) Forget(nodeID, nlookup uint64) {
	l.mu.Lock()
	ln := l.nodes[nodeID]
	delete(l.nodes, nodeID)
	l.mu.Unlock()
	if ln != nil {
		l.releaseAll("forget", ln)
	}
	l.RawFileSystem.Forget(nodeID, nlookup)
}

// forgetOwner drops owner from ln, and ln when no owner is left. l.mu is
// held.
func (l *lockFS) forgetOwner(nodeID uint64, ln *lockedNode, owner uint64) {
	delete(ln.owners, owner)
	if len(ln.owners) == 0 {
		delete(l.nodes, nodeID)
	}
}

// releaseAll releases every owner recorded on ln from a goroutine of its
// own, which wait waits for.
func (l *lockFS) releaseAll(op string, ln *lockedNode) {
	l.releases.Add(1)
	go func() {
		defer l.releases.Done()
		defer func() {
			if v := recover(); v != nil {
				l.fsys.panicHandler(v)
			}
		}()
		for owner := range ln.owners {
			l.release(op, ln.fid, owner, true)
		}
	}()
}

// release calls ReleaseLocks to completion (an interrupted close must still
// release) and logs a failure; the close itself does not fail.
func (l *lockFS) release(op string, fid, owner uint64, flock bool) {
	if err := l.locker.ReleaseLocks(context.Background(), fid, owner, flock); err != nil {
		l.fsys.fail(op, err, query, "fid", fid, "owner", owner, "flock", flock, "release_locks", true)
	}
}

// stop releases, once the server has stopped, what no RELEASE or FORGET
// released (an aborted connection), and waits for the releases Forget
// started.
func (l *lockFS) stop() {
	l.mu.Lock()
	nodes := l.nodes
	l.nodes = map[uint64]*lockedNode{}
	l.mu.Unlock()
	for _, ln := range nodes {
		l.releaseAll("unmount", ln)
	}
	l.releases.Wait()
}
