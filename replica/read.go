package replica

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

// MaxReadSize bounds one Read (larger requests are EINVAL, never cut
// short: a short read means end of file).
const MaxReadSize = 16 << 20

// admitRead registers a reader tagged with ref's epoch, waits until the
// replica has applied after (or ctx ends), and checks the epoch against
// the promise before and after waiting. Call r.exit when done.
func (r *Replica) admitRead(ctx context.Context, ref *brickpb.VolumeRef, after uint64) error {
	if ref == nil {
		return fmt.Errorf("%w: no volume reference", ErrInvalid)
	}
	if err := r.enter(); err != nil {
		return err
	}
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			r.exit()
			return ErrClosed
		}
		if ref.Epoch < r.promised {
			err := &StaleEpochError{Epoch: ref.Epoch, Promise: r.promised}
			r.mu.Unlock()
			r.exit()
			return err
		}
		if r.applied >= after {
			r.mu.Unlock()
			return nil
		}
		if r.progress == nil {
			r.progress = make(chan struct{})
		}
		ch := r.progress
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			r.exit()
			return fmt.Errorf("waiting for op %d to be applied: %w", after, ctx.Err())
		}
	}
}

// Meta answers req once the replica has applied req.AfterSeq, refusing a
// reference whose epoch is below the promise (*StaleEpochError). A POSIX
// failure is the response's errno (ENOENT, ENOTDIR, ENODATA, ...); an
// error means the brick could not answer.
func (r *Replica) Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: nil request", ErrInvalid)
	}
	if err := r.admitRead(ctx, req.Ref, req.AfterSeq); err != nil {
		return nil, err
	}
	defer r.exit()
	resp := &brickpb.MetaResponse{}
	var err error
	for attempt := 0; ; attempt++ {
		err = r.meta(req, resp)
		if !errors.Is(err, errTreeMismatch) || attempt == 2 {
			break // a mismatch may be a walk racing Apply: try again
		}
		*resp = brickpb.MetaResponse{}
	}
	if err != nil {
		e, ok := errnoOf(err)
		if !ok || errors.Is(err, errLocalStep) || errors.Is(err, errTreeMismatch) || localErrno(e) {
			return nil, fmt.Errorf("%s: %w", req.Kind, err)
		}
		*resp = brickpb.MetaResponse{Errno: uint32(e)}
	}
	return resp, nil
}

func (r *Replica) meta(req *brickpb.MetaRequest, resp *brickpb.MetaResponse) error {
	switch req.Kind {
	case brickpb.MetaKind_META_LOOKUP:
		if err := checkName(req.Name); err != nil {
			return err
		}
		p, err := r.dirFD(req.Parent)
		if err != nil {
			return err
		}
		defer p.release()
		resp.Attr, err = entryAttr(p.fd, req.Name)
		return err
	case brickpb.MetaKind_META_GETATTR:
		t, err := r.target(req.Fid)
		if err != nil {
			return err
		}
		defer t.release()
		resp.Attr = attrOf(req.Fid, &t.st)
		return nil
	case brickpb.MetaKind_META_READDIR:
		var err error
		resp.Entries, resp.Attr, err = r.readdir(req.Fid, req.WithAttrs)
		return err
	case brickpb.MetaKind_META_READLINK:
		t, err := r.target(req.Fid)
		if err != nil {
			return err
		}
		defer t.release()
		if t.dir != nil || !isLink(&t.st) {
			return unix.EINVAL
		}
		resp.Target, err = readlinkAt(r.fidsFD, t.name)
		return err
	case brickpb.MetaKind_META_GETXATTR:
		if err := checkXattrName(req.Xattr); err == unix.EPERM {
			return unix.ENODATA // the brick's own attributes do not exist for users
		} else if err != nil {
			return err
		}
		t, err := r.target(req.Fid)
		if err != nil {
			return err
		}
		defer t.release()
		resp.Data, err = r.getxattr(t, req.Xattr)
		return err
	case brickpb.MetaKind_META_LISTXATTR:
		t, err := r.target(req.Fid)
		if err != nil {
			return err
		}
		defer t.release()
		resp.Names, err = r.listxattr(t)
		return err
	case brickpb.MetaKind_META_STATFS:
		var s unix.Statfs_t
		if err := retry(func() error { return unix.Fstatfs(r.dataFD, &s) }); err != nil {
			return localStep("statfs", err)
		}
		resp.Statfs = &brickpb.Statfs{
			Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail, Files: s.Files, Ffree: s.Ffree,
			Bsize: uint32(s.Bsize), Namelen: uint32(s.Namelen),
		}
		return nil
	}
	return unix.EINVAL
}

// readdir lists directory fid, sorted by name, every replica alike, and
// returns the directory's attributes after the listing (which may have
// moved its atime), so the caller need not ask for them again.
// Entries without a file ID tag are not the volume's and are left out.
func (r *Replica) readdir(fid uint64, withAttrs bool) ([]*brickpb.DirEntry, *brickpb.Attr, error) {
	d, err := r.dirFD(fid)
	if err != nil {
		return nil, nil, err
	}
	defer d.release()
	fd, err := openat(d.fd, ".", oDir, 0) // own offset: the cached descriptor is shared
	if err != nil {
		return nil, nil, localStep("opening the directory", err)
	}
	defer closeFD(fd)
	ents, err := readDirents(fd)
	if err != nil {
		return nil, nil, localStep("reading the directory", err)
	}
	var st unix.Stat_t
	if err := retry(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return nil, nil, localStep("stat of the directory", err)
	}
	out := make([]*brickpb.DirEntry, 0, len(ents))
	for _, e := range ents {
		if withAttrs {
			// What a LOOKUP of the name answers (entryAttr), so the
			// caller may answer that lookup with it.
			a, err := entryAttr(fd, e.name)
			if err != nil {
				continue // untagged, or removed meanwhile
			}
			out = append(out, &brickpb.DirEntry{Name: e.name, Fid: a.Fid, Mode: a.Mode & unix.S_IFMT, Attr: a})
			continue
		}
		efid, err := fidAt(fd, e.name)
		if err != nil {
			continue // untagged, or removed meanwhile
		}
		mode := dtToMode(e.typ)
		if mode == 0 {
			st, err := lstatAt(fd, e.name)
			if err != nil {
				continue
			}
			mode = st.Mode & unix.S_IFMT
		}
		out = append(out, &brickpb.DirEntry{Name: e.name, Fid: efid, Mode: mode})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, attrOf(fid, &st), nil
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	}
	return 0
}

// Read returns up to req.Size bytes of regular file req.Fid at req.Offset
// once the replica has applied req.AfterSeq (short at end of file),
// refusing a stale epoch like Meta. POSIX failures (ENOENT, EISDIR,
// EINVAL) are the response's errno.
func (r *Replica) Read(ctx context.Context, req *brickpb.ReadRequest) (*brickpb.ReadResponse, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: nil request", ErrInvalid)
	}
	if err := r.admitRead(ctx, req.Ref, req.AfterSeq); err != nil {
		return nil, err
	}
	defer r.exit()
	if req.Offset < 0 || req.Size > MaxReadSize {
		return &brickpb.ReadResponse{Errno: uint32(unix.EINVAL)}, nil
	}
	o, err := r.fileFD(req.Fid)
	if err != nil {
		if e, ok := errnoOf(err); ok && !errors.Is(err, errLocalStep) && !localErrno(e) {
			return &brickpb.ReadResponse{Errno: uint32(e)}, nil
		}
		return nil, fmt.Errorf("reading file %d: %w", req.Fid, err)
	}
	defer o.release()
	buf := make([]byte, req.Size)
	n, err := preadFull(o.fd, buf, req.Offset)
	if err != nil {
		return nil, fmt.Errorf("reading file %d: %w", req.Fid, err)
	}
	return &brickpb.ReadResponse{Data: buf[:n]}, nil
}
