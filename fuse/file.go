package fuse

import (
	"bytes"
	"context"
	"errors"
	"math"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/brickvol/brick/proto/brickpb"
)

var errNoAttr = errors.New("backend returned no attributes")

// handle is an open regular file. Reads and writes go to the node; the
// handle only remembers how the file was opened.
type handle struct {
	n      *node  // the node whose open count this handle holds
	flags  uint32 // open(2) flags
	direct bool   // FOPEN_DIRECT_IO: the kernel bypasses its page cache
	atEOF  bool   // O_APPEND with Options.AppendAtBackendEOF
}

var (
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeReleaser  = (*node)(nil)
	_ fs.NodeReader    = (*node)(nil)
	_ fs.NodeWriter    = (*node)(nil)
	_ fs.NodeAllocater = (*node)(nil)
)

// open returns the handle and FOPEN flags for opening n with flags, or
// ENOENT when n lost its last name and its data is being forgotten (an open
// racing with the unlink of its last name).
//
// O_DIRECT opens bypass the page cache (FOPEN_DIRECT_IO); every other open
// uses it, which shared writable mmap needs, and keeps cached pages across
// opens unless the writeback cache is off (other hosts may write).
func (n *node) open(flags uint32) (*handle, uint32, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gone {
		return nil, 0, syscall.ENOENT
	}
	n.opens++
	h := &handle{n: n, flags: flags, direct: flags&syscall.O_DIRECT != 0}
	h.atEOF = flags&syscall.O_APPEND != 0 && n.fsys.opts.AppendAtBackendEOF
	if h.atEOF {
		h.direct = true // the kernel's cached pages would sit at its idea of the end
	}
	var fuseFlags uint32
	switch {
	case h.direct:
		fuseFlags = gofuse.FOPEN_DIRECT_IO
	case !n.fsys.opts.NoWritebackCache:
		fuseFlags = gofuse.FOPEN_KEEP_CACHE
	}
	return h, fuseFlags, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	h, fuseFlags, errno := n.open(flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return h, fuseFlags, 0
}

// Release closes a handle. The kernel has written back the file's dirty
// pages before it sends RELEASE (writeback cache), so a file with no handle
// gets no more writes.
func (n *node) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if h, ok := f.(*handle); ok {
		h.n.mu.Lock()
		h.n.opens--
		h.n.mu.Unlock()
	}
	return 0
}

func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	if ri, ok := n.fsys.b.(ReaderInto); ok {
		k, err := ri.ReadInto(context.WithoutCancel(ctx), n.fid(), dest, off)
		if err != nil {
			return nil, n.fsys.fail("read", err, query, "fid", n.fid(), "offset", off, "size", len(dest))
		}
		return gofuse.ReadResultData(dest[:k]), 0
	}
	data, err := n.fsys.b.Read(context.WithoutCancel(ctx), n.fid(), off, len(dest))
	if err != nil {
		return nil, n.fsys.fail("read", err, query, "fid", n.fid(), "offset", off, "size", len(dest))
	}
	if len(data) > len(dest) {
		data = data[:len(dest)]
	}
	return gofuse.ReadResultData(data), 0
}

// Write submits one write. The backend may acknowledge it before any
// replica has applied it (page-cache semantics); a write on a direct-I/O
// handle opened O_SYNC or O_DSYNC is followed by Sync. Buffered O_SYNC
// writes need no help: the kernel follows them with FSYNC itself.
func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if off < 0 || int64(len(data)) > math.MaxInt64-off {
		return 0, syscall.EFBIG
	}
	if h, ok := f.(*handle); ok && h.atEOF {
		// Another host may have appended since this kernel last looked.
		a, errno := n.fsys.getattr(ctx, "write", n.fid())
		if errno != 0 {
			return 0, errno
		}
		off = a.Size
	}
	end := off + int64(len(data))
	share, release, errno := n.admitGrowth(ctx, "write", end)
	if errno != 0 {
		return 0, errno
	}
	n.notExact()
	// go-fuse reuses data once Write returns; the backend may keep op.
	op := &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Fid: n.fid(), Offset: off, Data: bytes.Clone(data)}
	if share >= 0 {
		op.Growth = &share
	}
	res, errno := n.fsys.do(ctx, "write", op)
	if errno != 0 {
		release(false)
		return 0, errno
	}
	if a := res.GetAttr(); a != nil && a.Fid != 0 {
		n.remember(a)
	} else {
		n.grewTo(end)
	}
	release(true)
	if h, ok := f.(*handle); ok && h.direct && h.flags&(syscall.O_SYNC|syscall.O_DSYNC) != 0 {
		if errno := n.fsys.sync(ctx, "write", n.fid()); errno != 0 {
			return 0, errno
		}
	}
	return uint32(len(data)), 0
}

// Linux fallocate(2) modes.
const (
	fallocKeepSize    = 0x01
	fallocInsertRange = 0x20
)

func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	if off > math.MaxInt64 || size > math.MaxInt64-off {
		return syscall.EFBIG
	}
	end := int64(off + size)
	switch {
	case mode&fallocInsertRange != 0: // shifts the tail up by size
		n.mu.Lock()
		end = n.size + int64(size)
		n.mu.Unlock()
	case mode&fallocKeepSize != 0:
		end = 0
	}
	_, release, errno := n.admitGrowth(ctx, "fallocate", end)
	if errno != 0 {
		return errno
	}
	n.notExact()
	res, errno := n.fsys.do(ctx, "fallocate", &brickpb.Op{Type: brickpb.OpType_OP_FALLOCATE,
		Fid: n.fid(), Offset: int64(off), Size: int64(size), Flags: mode})
	release(errno == 0)
	if errno != 0 {
		return errno
	}
	a, errno := n.fsys.attrOf(ctx, "fallocate", res, n.fid())
	if errno != 0 {
		return errno
	}
	n.remember(a)
	return 0
}
