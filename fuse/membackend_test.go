package fuse

import (
	"context"
	"sort"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

func clone(a *brickpb.Attr) *brickpb.Attr { return proto.Clone(a).(*brickpb.Attr) }

// memBackend is an in-memory Backend: a dumb, single-lock reference of the
// op semantics the file system relies on, for tests that must not depend on
// an on-disk replica.
type memBackend struct {
	mu      sync.Mutex
	nextFID uint64
	files   map[uint64]*memFile
	now     func() time.Time
	lookups int // META_LOOKUPs answered
	// getattrs counts META_GETATTRs by file ID, opsOn the ops naming a
	// file ID.
	getattrs map[uint64]int
	opsOn    map[uint64]int
	lists    int // entries listed
	readdirs int // listings asked for
}

type memFile struct {
	attr     *brickpb.Attr
	data     []byte
	children map[string]uint64 // directories
	target   string            // symlinks
	xattrs   map[string][]byte
}

func newMemBackend() *memBackend {
	m := &memBackend{nextFID: RootFID, files: map[uint64]*memFile{}, now: time.Now}
	m.files[RootFID] = m.newFile(RootFID, syscall.S_IFDIR|0o755, 0, 0)
	m.files[RootFID].attr.Nlink = 2
	return m
}

func (m *memBackend) newFile(fid uint64, mode, uid, gid uint32) *memFile {
	t := m.now().UnixNano()
	f := &memFile{attr: &brickpb.Attr{Fid: fid, Mode: mode, Nlink: 1, Uid: uid, Gid: gid,
		AtimeNs: t, MtimeNs: t, CtimeNs: t}, xattrs: map[string][]byte{}}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		f.children = map[string]uint64{}
		f.attr.Nlink = 2
	}
	return f
}

func (m *memBackend) NewFID() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextFID++
	return m.nextFID
}

func (m *memBackend) Sync(ctx context.Context) error { return nil }

func (m *memBackend) UsedBytes(ctx context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var used int64
	for _, f := range m.files {
		if f.attr.Mode&syscall.S_IFMT == syscall.S_IFREG {
			used += f.attr.Size
		}
	}
	return used, nil
}

func (m *memBackend) Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[fid]
	if f == nil {
		return nil, syscall.ENOENT
	}
	if off >= int64(len(f.data)) {
		return nil, nil
	}
	end := min(off+int64(size), int64(len(f.data)))
	return append([]byte(nil), f.data[off:end]...), nil
}

func (m *memBackend) Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := &brickpb.MetaResponse{}
	fail := func(e syscall.Errno) (*brickpb.MetaResponse, error) {
		return &brickpb.MetaResponse{Errno: uint32(e)}, nil
	}
	if req.Kind == brickpb.MetaKind_META_STATFS {
		resp.Statfs = &brickpb.Statfs{Blocks: 1 << 30, Bfree: 1 << 29, Bavail: 1 << 29,
			Files: 1 << 20, Ffree: 1 << 19, Bsize: 4096, Namelen: 255}
		return resp, nil
	}
	if req.Kind == brickpb.MetaKind_META_GETATTR {
		if m.getattrs == nil {
			m.getattrs = map[uint64]int{}
		}
		m.getattrs[req.Fid]++
	}
	if req.Kind == brickpb.MetaKind_META_LOOKUP {
		m.lookups++
		d := m.files[req.Parent]
		if d == nil || d.children == nil {
			return fail(syscall.ENOTDIR)
		}
		fid, ok := d.children[req.Name]
		if !ok {
			return fail(syscall.ENOENT)
		}
		resp.Attr = clone(m.files[fid].attr)
		return resp, nil
	}
	f := m.files[req.Fid]
	if f == nil {
		return fail(syscall.ENOENT)
	}
	switch req.Kind {
	case brickpb.MetaKind_META_GETATTR:
		resp.Attr = clone(f.attr)
	case brickpb.MetaKind_META_READDIR:
		if f.children == nil {
			return fail(syscall.ENOTDIR)
		}
		m.readdirs++
		resp.Attr = clone(f.attr) // as a brick: the directory's own, after the listing
		names := make([]string, 0, len(f.children))
		for n := range f.children {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			c := f.children[n]
			e := &brickpb.DirEntry{Name: n, Fid: c, Mode: m.files[c].attr.Mode & syscall.S_IFMT}
			if req.WithAttrs {
				e.Attr = clone(m.files[c].attr)
			}
			m.lists++
			resp.Entries = append(resp.Entries, e)
		}
	case brickpb.MetaKind_META_READLINK:
		if f.attr.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			return fail(syscall.EINVAL)
		}
		resp.Target = f.target
	case brickpb.MetaKind_META_GETXATTR:
		v, ok := f.xattrs[req.Xattr]
		if !ok {
			return fail(syscall.ENODATA)
		}
		resp.Data = append([]byte(nil), v...)
	case brickpb.MetaKind_META_LISTXATTR:
		for n := range f.xattrs {
			resp.Names = append(resp.Names, n)
		}
		sort.Strings(resp.Names)
	default:
		return fail(syscall.EINVAL)
	}
	return resp, nil
}

func (m *memBackend) Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if op.Fid != 0 {
		if m.opsOn == nil {
			m.opsOn = map[uint64]int{}
		}
		m.opsOn[op.Fid]++
	}
	f, errno := m.apply(op)
	res := &brickpb.OpResult{Errno: uint32(errno)}
	if errno == 0 && f != nil {
		res.Attr = clone(f.attr)
	}
	return res, nil
}

func (m *memBackend) touch(fs ...*memFile) {
	t := m.now().UnixNano()
	for _, f := range fs {
		if f != nil {
			f.attr.MtimeNs, f.attr.CtimeNs = t, t
		}
	}
}

func (m *memBackend) apply(op *brickpb.Op) (*memFile, syscall.Errno) {
	t := m.now().UnixNano()
	switch op.Type {
	case brickpb.OpType_OP_CREATE, brickpb.OpType_OP_MKDIR, brickpb.OpType_OP_MKNOD, brickpb.OpType_OP_SYMLINK:
		d := m.files[op.Parent]
		if d == nil || d.children == nil {
			return nil, syscall.ENOTDIR
		}
		if _, ok := d.children[op.Name]; ok {
			return nil, syscall.EEXIST
		}
		mode := op.Mode
		switch op.Type {
		case brickpb.OpType_OP_CREATE:
			mode = syscall.S_IFREG | op.Mode&07777
		case brickpb.OpType_OP_MKDIR:
			mode = syscall.S_IFDIR | op.Mode&07777
			d.attr.Nlink++
		case brickpb.OpType_OP_SYMLINK:
			mode = syscall.S_IFLNK | 0o777
		}
		f := m.newFile(op.Fid, mode, op.Uid, op.Gid)
		f.target, f.attr.Rdev = op.Target, op.Rdev
		if op.Type == brickpb.OpType_OP_SYMLINK {
			f.attr.Size = int64(len(op.Target))
		}
		m.files[op.Fid] = f
		d.children[op.Name] = op.Fid
		m.touch(d)
		return f, 0
	case brickpb.OpType_OP_LINK:
		d, f := m.files[op.Parent], m.files[op.Fid]
		if d == nil || f == nil {
			return nil, syscall.ENOENT
		}
		if _, ok := d.children[op.Name]; ok {
			return nil, syscall.EEXIST
		}
		d.children[op.Name] = op.Fid
		f.attr.Nlink++
		f.attr.CtimeNs = t
		m.touch(d)
		return f, 0
	case brickpb.OpType_OP_UNLINK, brickpb.OpType_OP_RMDIR:
		d := m.files[op.Parent]
		if d == nil || d.children == nil {
			return nil, syscall.ENOTDIR
		}
		fid, ok := d.children[op.Name]
		if !ok {
			return nil, syscall.ENOENT
		}
		f := m.files[fid]
		isDir := f.children != nil
		if op.Type == brickpb.OpType_OP_UNLINK && isDir {
			return nil, syscall.EISDIR
		}
		if op.Type == brickpb.OpType_OP_RMDIR {
			if !isDir {
				return nil, syscall.ENOTDIR
			}
			if len(f.children) > 0 {
				return nil, syscall.ENOTEMPTY
			}
		}
		m.drop(d, op.Name, f)
		m.touch(d)
		if op.Type == brickpb.OpType_OP_UNLINK && op.Flags&brickpb.UnlinkForget != 0 && fid == op.Fid && f.attr.Nlink == 0 {
			delete(m.files, fid) // forgotten with its last name, as a brick does
			return f, 0
		}
		return nil, 0
	case brickpb.OpType_OP_RENAME:
		return nil, m.rename(op)
	}
	f := m.files[op.Fid]
	if f == nil {
		return nil, syscall.ENOENT
	}
	switch op.Type {
	case brickpb.OpType_OP_WRITE:
		end := op.Offset + int64(len(op.Data))
		if end > int64(len(f.data)) {
			f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
		}
		copy(f.data[op.Offset:], op.Data)
		f.attr.Size = int64(len(f.data))
		m.touch(f)
		return nil, 0
	case brickpb.OpType_OP_TRUNCATE:
		m.resize(f, op.Size)
	case brickpb.OpType_OP_FALLOCATE:
		if op.Flags&fallocKeepSize == 0 && op.Offset+op.Size > f.attr.Size {
			m.resize(f, op.Offset+op.Size)
		}
	case brickpb.OpType_OP_SETATTR:
		v := op.Valid
		if v&uint32(brickpb.SetattrBit_SETATTR_UID) != 0 {
			f.attr.Uid = op.Uid
		}
		if v&uint32(brickpb.SetattrBit_SETATTR_GID) != 0 {
			f.attr.Gid = op.Gid
		}
		if v&uint32(brickpb.SetattrBit_SETATTR_SIZE) != 0 {
			m.resize(f, op.Size)
		}
		// As a brick's kernel: a chown clears the set-ID bits, and so
		// does the kill flag (killpriv.go); an explicit mode wins.
		chown := v&uint32(brickpb.SetattrBit_SETATTR_UID|brickpb.SetattrBit_SETATTR_GID) != 0
		if f.attr.Mode&syscall.S_IFMT == syscall.S_IFREG && (chown || op.Flags&brickpb.SetattrKillSUIDGID != 0) {
			f.attr.Mode &^= syscall.S_ISUID
			if f.attr.Mode&(syscall.S_ISGID|syscall.S_IXGRP) == syscall.S_ISGID|syscall.S_IXGRP {
				f.attr.Mode &^= syscall.S_ISGID
			}
		}
		if v&uint32(brickpb.SetattrBit_SETATTR_MODE) != 0 {
			f.attr.Mode = f.attr.Mode&syscall.S_IFMT | op.Mode&07777
		}
		if v&uint32(brickpb.SetattrBit_SETATTR_ATIME) != 0 {
			f.attr.AtimeNs = op.AtimeNs
		}
		if v&uint32(brickpb.SetattrBit_SETATTR_MTIME) != 0 {
			f.attr.MtimeNs = op.MtimeNs
		}
		f.attr.CtimeNs = t
	case brickpb.OpType_OP_SETXATTR:
		_, exists := f.xattrs[op.Xattr]
		if op.Flags&1 != 0 && exists { // XATTR_CREATE
			return nil, syscall.EEXIST
		}
		if op.Flags&2 != 0 && !exists { // XATTR_REPLACE
			return nil, syscall.ENODATA
		}
		f.xattrs[op.Xattr] = append([]byte(nil), op.Data...)
		f.attr.CtimeNs = t
	case brickpb.OpType_OP_REMOVEXATTR:
		if _, ok := f.xattrs[op.Xattr]; !ok {
			return nil, syscall.ENODATA
		}
		delete(f.xattrs, op.Xattr)
		f.attr.CtimeNs = t
	case brickpb.OpType_OP_FORGET:
		if f.attr.Nlink == 0 {
			delete(m.files, op.Fid)
		}
		return nil, 0
	default:
		return nil, syscall.EINVAL
	}
	return f, 0
}

func (m *memBackend) resize(f *memFile, size int64) {
	if size < int64(len(f.data)) {
		f.data = f.data[:size]
	} else {
		f.data = append(f.data, make([]byte, size-int64(len(f.data)))...)
	}
	f.attr.Size = size
	m.touch(f)
}

// drop removes name (naming f) from d.
func (m *memBackend) drop(d *memFile, name string, f *memFile) {
	delete(d.children, name)
	if f.children != nil {
		d.attr.Nlink--
		f.attr.Nlink = 0
	} else {
		f.attr.Nlink--
	}
	f.attr.CtimeNs = m.now().UnixNano()
}

func (m *memBackend) rename(op *brickpb.Op) syscall.Errno {
	sd, dd := m.files[op.Parent], m.files[op.NewParent]
	if sd == nil || dd == nil || sd.children == nil || dd.children == nil {
		return syscall.ENOTDIR
	}
	sfid, ok := sd.children[op.Name]
	if !ok {
		return syscall.ENOENT
	}
	src := m.files[sfid]
	dfid, exists := dd.children[op.NewName]
	switch {
	case op.Flags&renameExchange != 0:
		if !exists {
			return syscall.ENOENT
		}
		sd.children[op.Name], dd.children[op.NewName] = dfid, sfid
		if (src.children != nil) != (m.files[dfid].children != nil) {
			if src.children != nil {
				sd.attr.Nlink--
				dd.attr.Nlink++
			} else {
				sd.attr.Nlink++
				dd.attr.Nlink--
			}
		}
		m.touch(sd, dd)
		return 0
	case exists && op.Flags&renameNoReplace != 0:
		return syscall.EEXIST
	case exists && dfid == sfid:
		return 0
	case exists:
		dst := m.files[dfid]
		if src.children != nil && dst.children == nil {
			return syscall.ENOTDIR
		}
		if src.children == nil && dst.children != nil {
			return syscall.EISDIR
		}
		if dst.children != nil && len(dst.children) > 0 {
			return syscall.ENOTEMPTY
		}
		m.drop(dd, op.NewName, dst)
	}
	delete(sd.children, op.Name)
	dd.children[op.NewName] = sfid
	if src.children != nil {
		sd.attr.Nlink--
		dd.attr.Nlink++
	}
	src.attr.CtimeNs = m.now().UnixNano()
	m.touch(sd, dd)
	return 0
}
