package fuse

import (
	"bytes"
	"context"
	"math"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// node is one file, directory, symlink or special file of the volume; its
// inode number is the volume file ID. Everything about it is asked of the
// backend except the few fields cached below.
type node struct {
	fs.Inode
	fsys *fileSystem

	// early orders the ops on this file answered before they are applied
	// (setattrEarly, Unlink): held from the check that the file is still
	// there to the submission, so none is sequenced after the unlink
	// that forgets the file.
	early sync.Mutex

	mu   sync.Mutex
	last *brickpb.Attr // last known attributes (never modified): setgid inheritance, removed directories
	size int64         // last known size: quota growth of writes
	// exact: last is what a brick would answer for this regular file now
	// (it came with its create, and nothing since changed what
	// setattrEarly does not predict), so an early setattr's reply may be
	// cached like a brick's. Cleared before a write, fallocate or xattr
	// change is submitted (notExact) and by remember.
	exact bool

	grow growth // quota held for this file's growing ops in flight (quota.mu)

	// Open-unlinked files (orphan.go).
	opens     int  // handles open on this node
	unlinked  bool // seen losing a name: may need OP_FORGET
	gone      bool // no name and no handle left: refuse new opens
	forgotten bool // OP_FORGET sent and acknowledged

	// noCaps caches that the file has no security.capability xattr, which
	// the kernel asks for before every write(2); capsGen counts this
	// mount's changes to it, so an answer older than a change is not
	// cached. Only with the writeback cache (one writing host).
	noCaps  bool
	capsGen uint64

	// dirAttr answers a directory's GETATTR without a brick; dirGen
	// counts its changes (dirattr.go).
	dirAttr *brickpb.Attr
	dirGen  uint64
}

var (
	_ fs.NodeLookuper      = (*node)(nil)
	_ fs.NodeGetattrer     = (*node)(nil)
	_ fs.NodeSetattrer     = (*node)(nil)
	_ fs.NodeCreater       = (*node)(nil)
	_ fs.NodeMkdirer       = (*node)(nil)
	_ fs.NodeMknoder       = (*node)(nil)
	_ fs.NodeSymlinker     = (*node)(nil)
	_ fs.NodeLinker        = (*node)(nil)
	_ fs.NodeUnlinker      = (*node)(nil)
	_ fs.NodeRmdirer       = (*node)(nil)
	_ fs.NodeRenamer       = (*node)(nil)
	_ fs.NodeReadlinker    = (*node)(nil)
	_ fs.NodeReaddirer     = (*node)(nil)
	_ fs.NodeStatfser      = (*node)(nil)
	_ fs.NodeGetxattrer    = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeListxattrer   = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
	_ fs.NodeFsyncer       = (*node)(nil)
)

func (n *node) fid() uint64 { return n.StableAttr().Ino }

// remember caches the fields of a that the node keeps.
func (n *node) remember(a *brickpb.Attr) {
	n.mu.Lock()
	n.last, n.size, n.exact = a, a.Size, false
	n.mu.Unlock()
}

// notExact records, before a write, fallocate or xattr change is submitted,
// that a brick may no longer answer what last says (blocks, size, an
// ACL's mode).
func (n *node) notExact() {
	n.mu.Lock()
	n.exact = false
	n.mu.Unlock()
}

// lastAttr returns the attributes remember kept.
func (n *node) lastAttr() *brickpb.Attr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.last
}

// grewTo records that the file now reaches at least end.
func (n *node) grewTo(end int64) {
	n.mu.Lock()
	n.size = max(n.size, end)
	n.mu.Unlock()
}

// child returns the inode for a (an entry of n called name), reusing the
// one the tree already has.
func (n *node) child(ctx context.Context, name string, a *brickpb.Attr) *fs.Inode {
	if ch := n.GetChild(name); ch != nil && ch.StableAttr().Ino == a.Fid {
		if cn, ok := ch.Operations().(*node); ok {
			cn.remember(a)
			return ch
		}
	}
	cn := &node{fsys: n.fsys}
	cn.remember(a)
	return n.NewInode(ctx, cn, fs.StableAttr{Mode: a.Mode & syscall.S_IFMT, Ino: a.Fid})
}

// entry turns an op's result into the child inode and entry reply, for the
// ops that create a name.
func (n *node) entry(ctx context.Context, op string, name string, res *brickpb.OpResult, fid uint64, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	a, errno := n.fsys.attrOf(ctx, op, res, fid)
	if errno != 0 {
		return nil, errno
	}
	fillAttr(a, &out.Attr)
	return n.child(ctx, name, a), 0
}

func (n *node) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	l := n.fsys.lists
	if l != nil {
		if a := l.lookup(n.fid(), name); a != nil {
			fillAttr(a, &out.Attr)
			return n.child(ctx, name, a), 0
		}
	}
	resp, errno := n.fsys.meta(ctx, "lookup", &brickpb.MetaRequest{
		Kind: brickpb.MetaKind_META_LOOKUP, Parent: n.fid(), Name: name})
	if errno != 0 {
		return nil, errno
	}
	a := resp.Attr
	if a == nil || a.Fid == 0 {
		return nil, n.fsys.fail("lookup", errNoAttr, query, "parent", n.fid(), "name", name)
	}
	// A name that exists but was not kept: at the second in a while, the
	// directory is being walked; list it for the lookups to come. Names
	// that do not exist (the lookup before a create) never count.
	if l != nil && l.missed(n.fid()) {
		n.listAhead(ctx)
	}
	fillAttr(a, &out.Attr)
	return n.child(ctx, name, a), 0
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	var gen uint64
	if n.dirAnswers() {
		var a *brickpb.Attr
		if a, gen = n.dirCached(); a != nil {
			fillAttr(a, &out.Attr)
			return 0
		}
	}
	a, errno := n.fsys.getattr(ctx, "getattr", n.fid())
	if errno == syscall.ENOENT {
		a, errno = n.removedAttr()
	}
	if errno != 0 {
		return errno
	}
	n.remember(a)
	if n.dirAnswers() {
		n.dirKeep(a, gen)
	}
	fillAttr(a, &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	defer n.dirForget() // after the op: a GETATTR racing it must not keep the old attributes
	if a, gone := n.forgottenAttr(); gone {
		// The kernel pushes the times of a file it just unlinked; the
		// file is forgotten everywhere, nobody can see them.
		fillAttr(a, &out.Attr)
		return 0
	}
	op := &brickpb.Op{Type: brickpb.OpType_OP_SETATTR, Fid: n.fid()}
	if m, ok := in.GetMode(); ok {
		op.Valid |= uint32(brickpb.SetattrBit_SETATTR_MODE)
		op.Mode = m
	}
	if uid, ok := in.GetUID(); ok {
		op.Valid |= uint32(brickpb.SetattrBit_SETATTR_UID)
		op.Uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		op.Valid |= uint32(brickpb.SetattrBit_SETATTR_GID)
		op.Gid = gid
	}
	if t, ok := in.GetATime(); ok { // UTIME_NOW is resolved here
		op.Valid |= uint32(brickpb.SetattrBit_SETATTR_ATIME)
		op.AtimeNs = unixNano(t)
	}
	if t, ok := in.GetMTime(); ok {
		op.Valid |= uint32(brickpb.SetattrBit_SETATTR_MTIME)
		op.MtimeNs = unixNano(t)
	}
	if in.Valid&gofuse.FATTR_KILL_SUIDGID != 0 && n.mustKill() {
		op.Flags |= brickpb.SetattrKillSUIDGID // killpriv.go
	}
	release := func(bool) {}
	sz, setSize := in.GetSize()
	if setSize {
		if sz > math.MaxInt64 {
			return syscall.EFBIG
		}
		op.Valid |= uint32(brickpb.SetattrBit_SETATTR_SIZE)
		op.Size = int64(sz)
		var errno syscall.Errno
		if _, release, errno = n.admitGrowth(ctx, "setattr", op.Size); errno != 0 {
			return errno
		}
	}
	if op.Valid == 0 && op.Flags == 0 {
		if in.Valid == gofuse.FATTR_KILL_SUIDGID {
			// killPrivFS's, before a write, with nothing to clear: it
			// drops the reply.
			return 0
		}
		// Only ctime, a lock owner or a handle: nothing to store.
		return n.Getattr(ctx, f, out)
	}
	if a, ok, exact, errno := n.setattrEarly(ctx, op); ok || errno != 0 {
		release(errno == 0)
		if errno != 0 {
			return errno
		}
		fillAttr(a, &out.Attr)
		if exact {
			// As good as a brick's GETATTR: spare the kernel the one it
			// sends before the next write(2), which would wait at a
			// brick for every op before it (SQLite's journal: create,
			// fchown, write).
			out.SetTimeout(*cacheTime(n.fsys.opts.AttrTimeout))
		}
		// Otherwise valid for no time: the next stat asks the brick.
		return 0
	}
	res, errno := n.fsys.do(ctx, "setattr", op)
	release(errno == 0)
	if errno != 0 {
		return errno
	}
	a, errno := n.fsys.attrOf(ctx, "setattr", res, n.fid())
	if errno != 0 {
		return errno
	}
	n.remember(a)
	fillAttr(a, &out.Attr)
	return 0
}

// mustKill says whether a FATTR_KILL_SUIDGID may have set-ID bits to
// clear: unless the node's attributes are this file system's own doing
// (the writeback cache: nobody else writes) and show none, the brick
// decides on the mode it has.
func (n *node) mustKill() bool {
	if n.StableAttr().Mode != syscall.S_IFREG {
		return false // the kernel kills only on regular files
	}
	n.mu.Lock()
	last := n.last
	n.mu.Unlock()
	return n.fsys.opts.NoWritebackCache || last == nil ||
		last.Mode&syscall.S_ISUID != 0 || last.Mode&(syscall.S_ISGID|syscall.S_IXGRP) == syscall.S_ISGID|syscall.S_IXGRP
}

// setattrEarly answers a SETATTR of a regular file without waiting for a
// brick, when the answer is known here and the op cannot fail: a change of
// mode, times or (to what they already are, with no set-ID bit the brick's
// chown would clear) owners, on a volume this host alone writes, so the
// node's attributes are this file system's own doing. The kernel keeps a
// regular file's size and times itself there (writeback cache), and the
// reply is valid for no time, so a stale size or block count in it is
// never seen, unless the node's attributes are exact (node.exact), and so
// is the answer. ok is false when the op must go the slow way.
func (n *node) setattrEarly(ctx context.Context, op *brickpb.Op) (a *brickpb.Attr, ok, exact bool, errno syscall.Errno) {
	s, can := n.fsys.b.(Submitter)
	if !can || n.fsys.opts.NoWritebackCache || n.StableAttr().Mode != syscall.S_IFREG {
		return nil, false, false, 0
	}
	const early = brickpb.SetattrBit_SETATTR_MODE | brickpb.SetattrBit_SETATTR_ATIME |
		brickpb.SetattrBit_SETATTR_MTIME | brickpb.SetattrBit_SETATTR_UID | brickpb.SetattrBit_SETATTR_GID
	if op.Valid&^uint32(early) != 0 || op.Flags != 0 {
		return nil, false, false, 0
	}
	has := func(b brickpb.SetattrBit) bool { return op.Valid&uint32(b) != 0 }
	n.early.Lock()
	defer n.early.Unlock()
	n.mu.Lock()
	last, named, exact := n.last, !n.unlinked && !n.gone && !n.forgotten, n.exact
	n.mu.Unlock()
	// A file that lost a name may be forgotten by now (the kernel pushes
	// an evicted inode's times after its unlink): let the backend answer.
	if !named || last == nil || last.Fid != op.Fid || last.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, false, false, 0
	}
	if has(brickpb.SetattrBit_SETATTR_UID) || has(brickpb.SetattrBit_SETATTR_GID) {
		if has(brickpb.SetattrBit_SETATTR_UID) && op.Uid != last.Uid ||
			has(brickpb.SetattrBit_SETATTR_GID) && op.Gid != last.Gid ||
			last.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
			return nil, false, false, 0
		}
	}
	a = proto.Clone(last).(*brickpb.Attr)
	if has(brickpb.SetattrBit_SETATTR_MODE) {
		a.Mode = syscall.S_IFREG | op.Mode&0o7777
	}
	if has(brickpb.SetattrBit_SETATTR_ATIME) {
		a.AtimeNs = op.AtimeNs
	}
	if has(brickpb.SetattrBit_SETATTR_MTIME) {
		a.MtimeNs = op.MtimeNs
	}
	a.CtimeNs = time.Now().UnixNano()
	if err := n.fsys.submit(ctx, s, op); err != nil {
		return nil, false, false, n.fsys.fail("setattr", err, mutation, opAttrs(op)...)
	}
	n.mu.Lock()
	// Not remember: the size here may be stale, n.size is not. A write
	// submitted since the check above cleared exact, which stays so.
	n.last = a
	exact = exact && n.exact
	n.mu.Unlock()
	return a, true, exact, 0
}

// admitGrowth reserves quota for the file growing to end; share is what
// admit says. Call release once the op returned, with whether it
// succeeded.
func (n *node) admitGrowth(ctx context.Context, op string, end int64) (share int64, release func(ok bool), errno syscall.Errno) {
	sizeOf := func() int64 {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.size
	}
	share, release, err := n.fsys.quota.admit(context.WithoutCancel(ctx), &n.grow, sizeOf, end)
	if err != nil {
		if err == syscall.ENOSPC {
			return 0, nil, syscall.ENOSPC
		}
		return 0, nil, n.fsys.fail(op, err, mutation, "fid", n.fid(), "grow", end-sizeOf())
	}
	return share, release, 0
}

// owner returns the uid, gid and mode a new entry of n gets: the caller's
// ids, except that a setgid directory passes on its group (and, to
// directories, its setgid bit).
func (n *node) owner(ctx context.Context, mode uint32, dir bool) (uid, gid, outMode uint32) {
	if c, ok := gofuse.FromContext(ctx); ok {
		uid, gid = c.Uid, c.Gid
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.last.GetMode()&syscall.S_ISGID != 0 {
		gid = n.last.GetGid()
		if dir {
			mode |= syscall.S_ISGID
		}
	}
	return uid, gid, mode
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if len(name) > nameMax {
		return nil, nil, 0, syscall.ENAMETOOLONG
	}
	uid, gid, mode := n.owner(ctx, mode&07777, false)
	fid := n.fsys.b.NewFID()
	res, errno := n.fsys.do(ctx, "create", &brickpb.Op{Type: brickpb.OpType_OP_CREATE,
		Parent: n.fid(), Name: name, Fid: fid, Mode: mode, Uid: uid, Gid: gid})
	if errno == syscall.EEXIST && flags&syscall.O_EXCL == 0 {
		// Someone else created it after the kernel's lookup: open theirs.
		return n.openExisting(ctx, name, flags, out)
	}
	if errno != 0 {
		return nil, nil, 0, errno
	}
	ch, errno := n.entry(ctx, "create", name, res, fid, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	n.dirTouched(res.GetAttr().GetCtimeNs(), 0)
	cn := ch.Operations().(*node)
	if !n.fsys.opts.NoWritebackCache {
		// A file this op just created has no xattrs: spare the first
		// write(2) its security.capability round trip. Its attributes
		// are the create's answer, which nothing could change yet.
		cn.mu.Lock()
		if cn.capsGen == 0 {
			cn.noCaps = true
		}
		cn.exact = cn.last.GetFid() == fid && cn.last.GetSize() == 0
		cn.mu.Unlock()
	}
	h, fuseFlags, errno := cn.open(flags)
	return ch, h, fuseFlags, errno
}

// openExisting opens the regular file another creator put at name between
// the kernel's lookup and our create. The kernel believes it created the
// file, so it checks no permission and does not truncate: both are done
// here (supplementary groups are not known here, so they grant nothing).
func (n *node) openExisting(ctx context.Context, name string, flags uint32, out *gofuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, errno := n.Lookup(ctx, name, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	switch ch.StableAttr().Mode {
	case syscall.S_IFREG:
	case syscall.S_IFDIR:
		return nil, nil, 0, syscall.EISDIR
	default:
		return nil, nil, 0, syscall.EEXIST
	}
	if !mayOpen(ctx, &out.Attr, flags) {
		return nil, nil, 0, syscall.EACCES
	}
	cn := ch.Operations().(*node)
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		res, errno := n.fsys.do(ctx, "create", &brickpb.Op{Type: brickpb.OpType_OP_SETATTR,
			Fid: cn.fid(), Valid: uint32(brickpb.SetattrBit_SETATTR_SIZE)})
		if errno != 0 {
			return nil, nil, 0, errno
		}
		a, errno := n.fsys.attrOf(ctx, "create", res, cn.fid())
		if errno != 0 {
			return nil, nil, 0, errno
		}
		cn.remember(a)
		fillAttr(a, &out.Attr)
	}
	h, fuseFlags, errno := cn.open(flags)
	return ch, h, fuseFlags, errno
}

// mayOpen applies the classic permission bits of a to the caller for the
// access mode of flags; root may open anything.
func mayOpen(ctx context.Context, a *gofuse.Attr, flags uint32) bool {
	c, ok := gofuse.FromContext(ctx)
	if !ok || c.Uid == 0 {
		return true
	}
	var want uint32
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		want = 4
	case syscall.O_WRONLY:
		want = 2
	default:
		want = 6
	}
	if flags&syscall.O_TRUNC != 0 {
		want |= 2
	}
	perm := a.Mode & 7
	switch {
	case c.Uid == a.Uid:
		perm = a.Mode >> 6 & 7
	case c.Gid == a.Gid:
		perm = a.Mode >> 3 & 7
	}
	return perm&want == want
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	uid, gid, mode := n.owner(ctx, mode&07777, true)
	fid := n.fsys.b.NewFID()
	res, errno := n.fsys.do(ctx, "mkdir", &brickpb.Op{Type: brickpb.OpType_OP_MKDIR,
		Parent: n.fid(), Name: name, Fid: fid, Mode: mode, Uid: uid, Gid: gid})
	if errno != 0 {
		return nil, errno
	}
	n.dirTouched(res.GetAttr().GetCtimeNs(), 1)
	ch, errno := n.entry(ctx, "mkdir", name, res, fid, out)
	if errno == 0 && n.dirAnswers() {
		// The new directory's GETATTRs (the kernel asks before each
		// create in it) start from what mkdir answered, as the kernel
		// does: no brick round trip for a directory nobody else changed.
		if cn, ok := ch.Operations().(*node); ok {
			cn.dirKeep(cn.lastAttr(), 0)
		}
	}
	return ch, errno
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	uid, gid, perm := n.owner(ctx, mode&07777, false)
	fid := n.fsys.b.NewFID()
	res, errno := n.fsys.do(ctx, "mknod", &brickpb.Op{Type: brickpb.OpType_OP_MKNOD,
		Parent: n.fid(), Name: name, Fid: fid, Mode: mode&syscall.S_IFMT | perm, Rdev: uint64(dev), Uid: uid, Gid: gid})
	if errno != 0 {
		return nil, errno
	}
	n.dirTouched(res.GetAttr().GetCtimeNs(), 0)
	return n.entry(ctx, "mknod", name, res, fid, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	uid, gid, _ := n.owner(ctx, 0777, false)
	fid := n.fsys.b.NewFID()
	res, errno := n.fsys.do(ctx, "symlink", &brickpb.Op{Type: brickpb.OpType_OP_SYMLINK,
		Parent: n.fid(), Name: name, Fid: fid, Target: target, Mode: 0777, Uid: uid, Gid: gid})
	if errno != 0 {
		return nil, errno
	}
	n.dirTouched(res.GetAttr().GetCtimeNs(), 0)
	return n.entry(ctx, "symlink", name, res, fid, out)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	res, errno := n.fsys.do(ctx, "link", &brickpb.Op{Type: brickpb.OpType_OP_LINK,
		Fid: t.fid(), Parent: n.fid(), Name: name})
	if errno != 0 {
		return nil, errno
	}
	a, errno := n.fsys.attrOf(ctx, "link", res, t.fid())
	if errno != 0 {
		return nil, errno
	}
	n.dirTouched(a.CtimeNs, 0)
	t.remember(a)
	fillAttr(a, &out.Attr)
	return t.EmbeddedInode(), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	op := &brickpb.Op{Type: brickpb.OpType_OP_UNLINK, Parent: n.fid(), Name: name}
	// The kernel looked the name up before unlinking it, so the tree
	// knows the child (go-fuse removes it after this returns).
	ch, known := n.childNode(name)
	if known {
		ch.early.Lock()
		defer ch.early.Unlock()
	}
	forget := known && ch.forgetWithUnlink()
	s, canSubmit := n.fsys.b.(Submitter)
	if forget {
		op.Flags, op.Fid = brickpb.UnlinkForget, ch.fid()
	}
	if canSubmit && (forget || known && ch.lastNameOpen()) {
		// It cannot fail: on a volume only this host writes (which both
		// checks include), the name the kernel looked up is there and
		// holds ch, and it is ch's only name. Nobody waits for it; a file
		// still open is forgotten once closed, as after a slow unlink.
		if err := n.fsys.submit(ctx, s, op); err != nil {
			if forget {
				ch.keepAfterAll()
			}
			return n.fsys.fail("unlink", err, mutation, opAttrs(op)...)
		}
		ch.lostName(ctx, &brickpb.OpResult{Attr: &brickpb.Attr{Fid: ch.fid()}}, forget)
		n.dirTouched(0, 0)
		return 0
	}
	res, errno := n.fsys.do(ctx, "unlink", op)
	if errno != 0 {
		if forget {
			ch.keepAfterAll()
		}
		return errno
	}
	if known {
		ch.lostName(ctx, res, forget)
	}
	n.dirTouched(0, 0)
	return 0
}

func (n *node) childNode(name string) (*node, bool) {
	ch := n.GetChild(name)
	if ch == nil {
		return nil, false
	}
	cn, ok := ch.Operations().(*node)
	return cn, ok
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	op := &brickpb.Op{Type: brickpb.OpType_OP_RMDIR, Parent: n.fid(), Name: name}
	if ch, ok := n.childNode(name); ok {
		op.Fid = ch.fid() // what the kernel looked up: listings drop its own (bricks ignore it)
	}
	res, errno := n.fsys.do(ctx, "rmdir", op)
	if errno != 0 {
		return errno
	}
	if ch, ok := n.childNode(name); ok {
		ch.dirForget()
		ch.lostName(ctx, res, false)
	}
	n.dirTouched(0, -1)
	return 0
}

// Linux renameat2 flags.
const (
	renameNoReplace = 1
	renameExchange  = fs.RENAME_EXCHANGE
)

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^(renameNoReplace|renameExchange) != 0 {
		return syscall.EINVAL
	}
	if len(newName) > nameMax {
		return syscall.ENAMETOOLONG
	}
	victim, replaces := np.childNode(newName)
	if src, ok := n.childNode(name); ok && replaces && src.fid() == victim.fid() {
		replaces = false // two names of one file: rename does nothing
	}
	_, errno := n.fsys.do(ctx, "rename", &brickpb.Op{Type: brickpb.OpType_OP_RENAME,
		Parent: n.fid(), Name: name, NewParent: np.fid(), NewName: newName, Flags: flags})
	// Link counts and times of both directories, and of a directory
	// moved or replaced: not followed here.
	n.dirForget()
	np.dirForget()
	if src, ok := n.childNode(name); ok {
		src.dirForget()
	}
	if replaces {
		victim.dirForget()
	}
	if errno != 0 {
		return errno
	}
	if replaces && flags&renameExchange == 0 {
		victim.lostName(ctx, nil, false)
	}
	return 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	resp, errno := n.fsys.meta(ctx, "readlink", &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READLINK, Fid: n.fid()})
	if errno != 0 {
		return nil, errno
	}
	return []byte(resp.Target), 0
}

// listAhead lists n with attributes for the lookups that follow
// (listings.missed), unless n is too big to keep. Best effort: a failed
// listing leaves the lookups to ask one by one.
func (n *node) listAhead(ctx context.Context) {
	l := n.fsys.lists
	n.mu.Lock()
	big := n.last.GetSize() > listingsMaxDirSize
	n.mu.Unlock()
	if big {
		return
	}
	since := l.begin()
	resp, errno := n.fsys.meta(ctx, "lookup", &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: n.fid(), WithAttrs: true})
	if errno == 0 {
		l.keep(n.fid(), since, resp.Entries)
	}
}

// Readdir lists the directory as it is when it is opened; the listing is
// kept for the life of the handle so that seekdir/telldir offsets stay
// valid.
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	var since uint64
	l := n.fsys.lists
	n.mu.Lock()
	big := n.last.GetSize() > listingsMaxDirSize
	removed := n.unlinked
	n.mu.Unlock()
	if l != nil && !removed {
		if entries, ok := l.list(n.fid()); ok {
			return n.dirStream(entries), 0
		}
	}
	if big {
		l = nil // too big to keep: spare the brick a stat per entry
	}
	if l != nil {
		since = l.begin()
	}
	n.dirForget() // a listing may move the directory's atime
	_, gen := n.dirCached()
	resp, errno := n.fsys.meta(ctx, "readdir", &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_READDIR, Fid: n.fid(), WithAttrs: l != nil})
	if errno == 0 && l != nil {
		l.keep(n.fid(), since, resp.Entries)
	}
	if a := resp.GetAttr(); errno == 0 && a != nil && a.Fid == n.fid() && a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		// The brick's attributes after the listing (older bricks send
		// none): the GETATTR that follows an opendir needs no round
		// trip.
		n.remember(a)
		if n.dirAnswers() {
			n.dirKeep(a, gen)
		}
	}
	if errno == syscall.ENOENT {
		if _, errno = n.removedAttr(); errno == 0 {
			resp = &brickpb.MetaResponse{} // removed while open: empty
		}
	}
	if errno != 0 {
		return nil, errno
	}
	return n.dirStream(resp.Entries), 0
}

// dirStream is the listing of n with entries (sorted by name) and its
// dot entries.
func (n *node) dirStream(entries []*brickpb.DirEntry) fs.DirStream {
	parent := n.fid()
	if _, p := n.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	list := make([]gofuse.DirEntry, 0, len(entries)+2)
	list = append(list,
		gofuse.DirEntry{Name: ".", Ino: n.fid(), Mode: syscall.S_IFDIR},
		gofuse.DirEntry{Name: "..", Ino: parent, Mode: syscall.S_IFDIR})
	for _, e := range entries {
		if e.Name == "." || e.Name == ".." || e.Name == "" {
			continue
		}
		list = append(list, gofuse.DirEntry{Name: e.Name, Ino: e.Fid, Mode: e.Mode & syscall.S_IFMT})
	}
	return fs.NewListDirStream(list)
}

// Fsync serves fsync and fdatasync on files and fsync on directories: all
// make everything submitted so far durable, which is what Sync does.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	return n.fsys.sync(ctx, "fsync", n.fid())
}

func (n *node) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	resp, errno := n.fsys.meta(ctx, "statfs", &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_STATFS})
	if errno != 0 {
		return errno
	}
	st := resp.Statfs
	if st == nil {
		st = &brickpb.Statfs{}
	}
	out.Files, out.Ffree = st.Files, st.Ffree
	out.NameLen = nameMax
	q := &n.fsys.quota
	limit := q.limit.Load()
	if limit == 0 {
		out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
		out.Bsize, out.Frsize = st.Bsize, st.Bsize
		return 0
	}
	free := limit
	if used, ok, err := q.used(ctx); err != nil {
		n.fsys.fail("statfs", err, query)
	} else if ok {
		free = max(0, limit-used)
	}
	if st.Bsize > 0 {
		brickFree := st.Bavail * uint64(st.Bsize)
		if brickFree < uint64(free) {
			free = int64(brickFree)
		}
	}
	out.Bsize, out.Frsize = blockSize, blockSize
	out.Blocks = uint64(limit) / blockSize
	out.Bfree = uint64(free) / blockSize
	out.Bavail = out.Bfree
	return 0
}

// capsXattr is the xattr the kernel reads before every write(2), to clear
// file capabilities.
const capsXattr = "security.capability"

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	caps := attr == capsXattr && !n.fsys.opts.NoWritebackCache
	var gen uint64
	if caps {
		n.mu.Lock()
		noCaps := n.noCaps
		gen = n.capsGen
		n.mu.Unlock()
		if noCaps {
			return 0, syscall.ENODATA
		}
	}
	resp, errno := n.fsys.meta(ctx, "getxattr", &brickpb.MetaRequest{
		Kind: brickpb.MetaKind_META_GETXATTR, Fid: n.fid(), Xattr: attr})
	if caps && errno == syscall.ENODATA {
		n.mu.Lock()
		if n.capsGen == gen {
			n.noCaps = true
		}
		n.mu.Unlock()
	}
	if errno != 0 {
		return 0, errno
	}
	return copyOut(dest, resp.Data)
}

// capsChanging forgets the cached absence of capabilities around a change
// of attr.
func (n *node) capsChanging(attr string) {
	if attr != capsXattr {
		return
	}
	n.mu.Lock()
	n.noCaps = false
	n.capsGen++
	n.mu.Unlock()
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	resp, errno := n.fsys.meta(ctx, "listxattr", &brickpb.MetaRequest{Kind: brickpb.MetaKind_META_LISTXATTR, Fid: n.fid()})
	if errno != 0 {
		return 0, errno
	}
	var b bytes.Buffer
	for _, name := range resp.Names {
		b.WriteString(name)
		b.WriteByte(0)
	}
	return copyOut(dest, b.Bytes())
}

// copyOut answers a getxattr/listxattr: a size query when dest is empty,
// ERANGE with the size needed when dest is too small.
func copyOut(dest, data []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(data)), 0
	}
	if len(dest) < len(data) {
		return uint32(len(data)), syscall.ERANGE
	}
	return uint32(copy(dest, data)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	defer n.dirForget() // ctime
	n.notExact()        // an ACL's mode
	n.capsChanging(attr)
	defer n.capsChanging(attr)
	_, errno := n.fsys.do(ctx, "setxattr", &brickpb.Op{Type: brickpb.OpType_OP_SETXATTR,
		Fid: n.fid(), Name: attr, Xattr: attr, Data: bytes.Clone(data), Flags: flags})
	return errno
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	defer n.dirForget() // ctime
	n.notExact()        // an ACL's mode
	n.capsChanging(attr)
	defer n.capsChanging(attr)
	_, errno := n.fsys.do(ctx, "removexattr", &brickpb.Op{Type: brickpb.OpType_OP_REMOVEXATTR,
		Fid: n.fid(), Name: attr, Xattr: attr})
	return errno
}

// fillAttr converts the backend's attributes into the kernel's.
func fillAttr(a *brickpb.Attr, out *gofuse.Attr) {
	out.Ino = a.Fid
	out.Size = uint64(max(a.Size, 0))
	out.Blocks = uint64(max(a.Blocks, 0))
	if out.Blocks == 0 {
		out.Blocks = (out.Size + 511) / 512
	}
	out.Atime, out.Atimensec = splitNano(a.AtimeNs)
	out.Mtime, out.Mtimensec = splitNano(a.MtimeNs)
	out.Ctime, out.Ctimensec = splitNano(a.CtimeNs)
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.Uid, a.Gid
	out.Rdev = uint32(a.Rdev)
	out.Blksize = blockSize
}

// splitNano splits nanoseconds since the epoch into the kernel's seconds
// (two's complement for times before 1970) and nanoseconds.
func splitNano(ns int64) (uint64, uint32) {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return uint64(sec), uint32(nsec)
}

// unixNano is t in nanoseconds since the epoch, clamped to what int64
// holds (years 1678 to 2262).
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}
