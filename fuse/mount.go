package fuse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/brickvol/brick/proto/brickpb"
)

// Options configure one mount. The zero value of every field except Volume
// is usable; DefaultOptions spells the defaults out.
type Options struct {
	// Volume is the volume's name; the mount shows as "brick:<Volume>"
	// of type "fuse.brick" in /proc/mounts and df.
	Volume string
	// QuotaBytes is the volume's size quota in bytes; 0 means none. It is
	// reported by statfs and, with a UsageReporter backend, enforced.
	QuotaBytes int64
	// AllowOther lets users other than the mounting one (root) use the
	// mount, as containers running under other uids need.
	AllowOther bool
	// AttrTimeout and EntryTimeout are how long the kernel may cache
	// attributes and directory entries (and failed lookups). Zero means
	// the default, 1 s; a negative value turns the cache off.
	AttrTimeout  time.Duration
	EntryTimeout time.Duration
	// NoWritebackCache turns the kernel's writeback cache off and stops
	// keeping data pages across opens and caching failed lookups. Volumes
	// mounted on several hosts at once (access=shared) need it: with the
	// writeback cache the kernel trusts its own file sizes and times and
	// would not see other hosts' writes.
	NoWritebackCache bool
	// AppendAtBackendEOF makes writes on O_APPEND handles land at the end
	// of the file as the backend sees it (asked before each write), not
	// where this kernel believes the end is, and opens such handles
	// without the page cache. A volume mounted on several hosts needs it:
	// another host may have appended meanwhile. Appends from two hosts are
	// then whole and in order when the writers hold a lock (flock or
	// fcntl), as on NFS.
	AppendAtBackendEOF bool
	// Logger receives backend failures, panics and (with Debug) go-fuse's
	// request trace. Nil means slog.Default().
	Logger *slog.Logger
	// Debug logs every FUSE request and reply at debug level (the
	// Logger's handler must let debug records through).
	Debug bool
}

// DefaultAttrTimeout is the attribute and entry cache time used when the
// Options leave it zero.
const DefaultAttrTimeout = time.Second

// DefaultOptions returns the options for volume with every default
// spelled out.
func DefaultOptions(volume string) Options {
	return Options{
		Volume:       volume,
		AllowOther:   true,
		AttrTimeout:  DefaultAttrTimeout,
		EntryTimeout: DefaultAttrTimeout,
	}
}

// Validate reports the first field that cannot be used, by name.
func (o Options) Validate() error {
	switch {
	case o.Volume == "":
		return errors.New("fuse options: Volume is empty")
	case o.QuotaBytes < 0:
		return fmt.Errorf("fuse options: QuotaBytes is negative (%d)", o.QuotaBytes)
	}
	return nil
}

// Tuning that is not an option: the largest request the kernel sends (its
// limit is 1 MiB), the most background requests (readahead, writeback) in
// flight, and the block size reported by stat and statfs.
const (
	maxWrite      = 1 << 20
	maxReadAhead  = 1 << 20
	maxBackground = 64
	blockSize     = 4096
	nameMax       = 255
)

// cacheTime turns an option into the duration go-fuse wants.
func cacheTime(d time.Duration) *time.Duration {
	switch {
	case d == 0:
		d = DefaultAttrTimeout
	case d < 0:
		d = 0
	}
	return &d
}

// traceLevel is the level of go-fuse's own log: its request trace (Debug)
// at debug level, otherwise only its complaints, as warnings.
func traceLevel(debug bool) slog.Level {
	if debug {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// Server is one mounted volume.
type Server struct {
	dir    string
	srv    *gofuse.Server
	fsys   *fileSystem
	finish sync.Once
}

// Mount mounts the volume served by b on dir, which must exist, and serves
// it until Unmount (or an external umount). It reads the root directory's
// attributes first, so an unreachable backend fails the mount rather than
// the first access. As root it mounts with mount(2) itself and falls back
// to fusermount3 otherwise.
//
// The calling process must not do I/O on the mount (see the package doc,
// Deadlocks).
func Mount(dir string, b Backend, opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	fsys := newFileSystem(b, opts)
	root := &node{fsys: fsys}
	resp, errno := fsys.meta(context.Background(), "mount",
		&brickpb.MetaRequest{Kind: brickpb.MetaKind_META_GETATTR, Fid: RootFID})
	if errno == 0 && resp.GetAttr() == nil {
		errno = syscall.EIO
	}
	if errno != 0 {
		return nil, fmt.Errorf("mounting volume %s on %s: reading the root directory: %w", opts.Volume, dir, errno)
	}
	root.remember(resp.GetAttr())
	if opts.QuotaBytes > 0 && fsys.quota.usage == nil {
		fsys.log.Warn("fuse: backend cannot report usage; the quota is reported but not enforced",
			"volume", opts.Volume, "quota_bytes", opts.QuotaBytes)
	}

	fsOpts := &fs.Options{
		MountOptions: gofuse.MountOptions{
			AllowOther:    opts.AllowOther,
			Options:       []string{"default_permissions"},
			FsName:        "brick:" + opts.Volume,
			Name:          "brick",
			MaxWrite:      maxWrite,
			MaxReadAhead:  maxReadAhead,
			MaxBackground: maxBackground,
			DirectMount:   os.Geteuid() == 0,
			DisableSplice: true, // replies come from memory: nothing to splice
			PanicHandler:  fsys.panicHandler,
			Logger:        slog.NewLogLogger(fsys.log.Handler(), traceLevel(opts.Debug)),
			Debug:         opts.Debug,
		},
		AttrTimeout:     cacheTime(opts.AttrTimeout),
		EntryTimeout:    cacheTime(opts.EntryTimeout),
		NullPermissions: true, // mode 0 is a mode, not "unset"
		RootStableAttr:  &fs.StableAttr{Ino: RootFID},
		Logger:          slog.NewLogLogger(fsys.log.Handler(), slog.LevelWarn),
	}
	if !opts.NoWritebackCache {
		fsOpts.MountOptions.ExtraCapabilities = gofuse.CAP_WRITEBACK_CACHE | gofuse.CAP_HANDLE_KILLPRIV_V2
		fsOpts.NegativeTimeout = cacheTime(opts.EntryTimeout)
	}
	// Forward locks to a Locker: the kernel negotiates FUSE_POSIX_LOCKS and
	// FUSE_FLOCK_LOCKS, and lockFS releases them at close (locks.go).
	fsOpts.MountOptions.EnableLocks = fsys.locker != nil
	var raw gofuse.RawFileSystem = fs.NewNodeFS(root, fsOpts)
	if !opts.NoWritebackCache {
		raw = killPrivFS{raw} // killpriv.go
	}
	if fsys.locker != nil {
		fsys.lockFS = newLockFS(raw, fsys, fsys.locker)
		raw = fsys.lockFS
	}
	// What fs.Mount does, with raw possibly wrapped.
	srv, err := gofuse.NewServer(raw, dir, &fsOpts.MountOptions)
	if err == nil {
		go srv.Serve()
		err = srv.WaitMount()
	}
	if err != nil {
		return nil, fmt.Errorf("mounting volume %s on %s: %w", opts.Volume, dir, err)
	}
	return &Server{dir: dir, srv: srv, fsys: fsys}, nil
}

// Dir is the mount point.
func (s *Server) Dir() string { return s.dir }

// SetQuotaBytes changes the volume's size quota of a mounted volume (a
// resize): statfs and ENOSPC follow at once. 0 removes the quota.
func (s *Server) SetQuotaBytes(n int64) { s.fsys.quota.limit.Store(max(n, 0)) }

// Unmount unmounts the volume and waits until the server has stopped and
// the files that were unlinked while open have been forgotten. It fails,
// after a few quick retries, while the mount is busy (open files, a working
// directory on it); the mount then stays served.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("unmounting volume %s from %s: %w", s.fsys.opts.Volume, s.dir, err)
	}
	s.done()
	return nil
}

// Wait blocks until the volume is unmounted (by Unmount or externally) and
// the server has finished, including forgetting the files that were
// unlinked while open.
func (s *Server) Wait() {
	s.srv.Wait()
	s.done()
}

func (s *Server) done() {
	s.finish.Do(func() {
		if s.fsys.lockFS != nil {
			s.fsys.lockFS.stop()
		}
		s.fsys.reapOrphans(context.Background())
	})
}
