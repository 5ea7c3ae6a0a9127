package fuse

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// Directory attributes without a round trip. The kernel forgets a
// directory's attributes whenever an entry is added to or removed from it,
// and asks for them again (GETATTR) at the next permission check on it:
// before every create and unlink in it. On a volume this host alone writes
// (the writeback cache is on) every change to a directory is this mount's
// own doing, so a node keeps the attributes a brick last reported for it
// and applies to them what its own creates and removals change: mtime and
// ctime (to the new entry's ctime, or now) and the link count for
// subdirectories. Changes not followed here (a rename, a setattr or xattr
// of the directory, a listing, which may move its atime) drop them, and the
// next GETATTR asks a brick again. The size of a directory is the brick's
// last answer: a file system's own measure (ext4 grows it by blocks),
// refreshed at the next change not followed here.

// dirAnswers reports whether n's GETATTR may be answered from dirAttr.
func (n *node) dirAnswers() bool { return n.IsDir() && !n.fsys.opts.NoWritebackCache }

// dirCached returns n's kept attributes (nil: ask a brick) and the
// generation to hand to dirKeep with the brick's answer.
func (n *node) dirCached() (*brickpb.Attr, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dirAttr, n.dirGen
}

// dirKeep keeps a, a brick's answer asked for at generation gen, unless n
// changed since or is gone.
func (n *node) dirKeep(a *brickpb.Attr, gen uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dirGen == gen && !n.unlinked && a.Fid == n.fid() {
		n.dirAttr = a
	}
}

// dirTouched applies an entry added or removed at ctimeNs (0: now) to the
// kept attributes; nlink is the change of the link count.
func (n *node) dirTouched(ctimeNs int64, nlink int) {
	if !n.dirAnswers() {
		return
	}
	if ctimeNs == 0 {
		ctimeNs = time.Now().UnixNano()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dirGen++
	if n.dirAttr == nil {
		return
	}
	a := proto.Clone(n.dirAttr).(*brickpb.Attr)
	a.MtimeNs, a.CtimeNs = max(a.MtimeNs, ctimeNs), max(a.CtimeNs, ctimeNs)
	a.Nlink = uint32(max(int(a.Nlink)+nlink, 0))
	n.dirAttr = a
}

// dirForget drops the kept attributes: the next GETATTR asks a brick.
func (n *node) dirForget() {
	if !n.IsDir() {
		return
	}
	n.mu.Lock()
	n.dirGen++
	n.dirAttr = nil
	n.mu.Unlock()
}
