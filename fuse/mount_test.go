package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// requireFUSE skips, loudly, when this host cannot mount FUSE file systems.
func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: mounting FUSE needs root; run the fuse tests as root to exercise the file system")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("SKIPPED: /dev/fuse is missing (%v); the fuse tests need it", err)
	}
}

// testLogger routes slog records to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// mountAt mounts b on dir and unmounts it when the test ends, lazily and by
// aborting the connection if a plain unmount fails, so no stuck mount
// survives a failing test.
func mountAt(t *testing.T, dir string, b Backend, opts Options) *Server {
	t.Helper()
	requireFUSE(t)
	if opts.Volume == "" {
		opts.Volume = "test"
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := Mount(dir, b, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatalf("stat mount point: %v", err)
	}
	t.Cleanup(func() { forceUnmount(t, srv, st.Dev) })
	return srv
}

// mount mounts b on a fresh temporary directory.
func mount(t *testing.T, b Backend, opts Options) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	return mountAt(t, dir, b, opts), dir
}

func forceUnmount(t *testing.T, srv *Server, dev uint64) {
	err := srv.Unmount()
	if err == nil {
		return
	}
	t.Errorf("Unmount: %v; detaching and aborting the connection", err)
	if err := syscall.Unmount(srv.Dir(), syscall.MNT_DETACH); err != nil {
		t.Logf("lazy unmount: %v", err)
	}
	const conns = "/sys/fs/fuse/connections"
	if ents, err := os.ReadDir(conns); err == nil && len(ents) == 0 { // fusectl not mounted
		if err := syscall.Mount("fusectl", conns, "fusectl", 0, ""); err != nil {
			t.Logf("mounting fusectl: %v", err)
		}
	}
	abort := fmt.Sprintf("%s/%d/abort", conns, dev&0xff|(dev>>12)&0xfff00)
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil {
		t.Logf("abort %s: %v", abort, err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Logf("the server of %s did not stop; it ends when the last descriptor on it closes", srv.Dir())
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions("v").Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "Volume"},
		{Options{Volume: "v", QuotaBytes: -1}, "QuotaBytes"},
	} {
		err := tc.opts.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.opts, err, tc.want)
		}
	}
}

func TestToErrno(t *testing.T) {
	other := errors.New("volume fenced")
	for _, tc := range []struct {
		err        error
		kind       opKind
		want       syscall.Errno
		unexpected bool
	}{
		{syscall.ENOENT, query, syscall.ENOENT, false},
		{fmt.Errorf("lookup: %w", syscall.ENOTEMPTY), mutation, syscall.ENOTEMPTY, false},
		{other, query, syscall.EIO, true},
		{other, mutation, syscall.EIO, true},
		{fmt.Errorf("below min-isr: %w", syscall.EROFS), mutation, syscall.EROFS, true},
		{fmt.Errorf("below min-isr: %w", syscall.EROFS), query, syscall.EIO, true},
		{syscall.Errno(0), query, syscall.EIO, true},
		{&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}, mutation, syscall.EIO, true},
		{context.DeadlineExceeded, query, syscall.EIO, true},
	} {
		got, unexpected := toErrno(tc.err, tc.kind)
		if got != tc.want || unexpected != tc.unexpected {
			t.Errorf("toErrno(%v, %v) = %v, %v; want %v, %v", tc.err, tc.kind, got, unexpected, tc.want, tc.unexpected)
		}
	}
}

// faultyBackend fails the calls chosen by fail with err, and counts Syncs.
type faultyBackend struct {
	Backend
	syncs atomic.Int64

	mu   sync.Mutex
	err  error
	fail func(op *brickpb.Op) bool
}

func (b *faultyBackend) inject(err error, fail func(op *brickpb.Op) bool) {
	b.mu.Lock()
	b.err, b.fail = err, fail
	b.mu.Unlock()
}

func (b *faultyBackend) Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	b.mu.Lock()
	err, fail := b.err, b.fail
	b.mu.Unlock()
	if fail != nil && fail(op) {
		return nil, err
	}
	return b.Backend.Do(ctx, op)
}

func (b *faultyBackend) Read(ctx context.Context, fid uint64, off int64, size int) ([]byte, error) {
	b.mu.Lock()
	err, fail := b.err, b.fail
	b.mu.Unlock()
	if fail != nil && fail(nil) {
		return nil, err
	}
	return b.Backend.Read(ctx, fid, off, size)
}

func (b *faultyBackend) Sync(ctx context.Context) error {
	b.syncs.Add(1)
	return b.Backend.Sync(ctx)
}

// UsedBytes forwards to the wrapped backend when it can report usage.
func (b *faultyBackend) UsedBytes(ctx context.Context) (int64, error) {
	if u, ok := b.Backend.(UsageReporter); ok {
		return u.UsedBytes(ctx)
	}
	return 0, errors.New("wrapped backend cannot report usage")
}

func TestErrorMapping(t *testing.T) {
	b := &faultyBackend{Backend: newMemBackend()}
	_, dir := mount(t, b, Options{})
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}

	b.inject(errors.New("replica stream broken"), func(op *brickpb.Op) bool { return op != nil })
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); !errors.Is(err, syscall.EIO) {
		t.Errorf("mkdir with a failing backend: %v, want EIO", err)
	}
	b.inject(fmt.Errorf("volume below min-isr: %w", syscall.EROFS), func(op *brickpb.Op) bool { return op != nil })
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("mkdir on a read-only volume: %v, want EROFS", err)
	}
	if err := os.Chmod(f, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Errorf("chmod on a read-only volume: %v, want EROFS", err)
	}
	b.inject(fmt.Errorf("brick says: %w", syscall.ENOSPC), func(op *brickpb.Op) bool { return op != nil })
	if err := os.Symlink("x", filepath.Join(dir, "l")); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("symlink with a wrapped errno: %v, want ENOSPC", err)
	}

	// Reads: open with O_DIRECT so the page cache cannot answer.
	fd, err := syscall.Open(f, syscall.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	b.inject(fmt.Errorf("volume below min-isr: %w", syscall.EROFS), func(op *brickpb.Op) bool { return op == nil })
	buf := make([]byte, 4096)
	if _, err := syscall.Pread(fd, buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read on a read-only volume failing: %v, want EIO", err)
	}
	b.inject(errors.New("brick unreachable"), func(op *brickpb.Op) bool { return op == nil })
	if _, err := syscall.Pread(fd, buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read with a failing backend: %v, want EIO", err)
	}
	b.inject(nil, nil)
	if n, err := syscall.Pread(fd, buf, 0); err != nil || !bytes.Equal(buf[:n], []byte("data")) {
		t.Errorf("read after recovery: %q, %v", buf[:n], err)
	}
}

// panicBackend panics on mkdir.
type panicBackend struct{ Backend }

func (b panicBackend) Do(ctx context.Context, op *brickpb.Op) (*brickpb.OpResult, error) {
	if op.Type == brickpb.OpType_OP_MKDIR {
		panic("backend bug")
	}
	return b.Backend.Do(ctx, op)
}

func TestPanicIsEIO(t *testing.T) {
	_, dir := mount(t, panicBackend{newMemBackend()}, Options{})
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); !errors.Is(err, syscall.EIO) {
		t.Errorf("mkdir with a panicking backend: %v, want EIO", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Errorf("the mount must keep working after a panic: %v", err)
	}
}

func TestMountOptions(t *testing.T) {
	_, dir := mount(t, newMemBackend(), Options{Volume: "gocd-db", AllowOther: true})
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(info), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("%s not in mountinfo", dir)
	}
	for _, want := range []string{" fuse.brick brick:gocd-db ", "default_permissions", "allow_other", "max_read=1048576"} {
		if !strings.Contains(line, want) {
			t.Errorf("mountinfo lacks %q: %s", want, line)
		}
	}
}

// metaCounter counts Meta calls by kind.
type metaCounter struct {
	Backend
	mu    sync.Mutex
	count map[brickpb.MetaKind]int
}

func (b *metaCounter) Meta(ctx context.Context, req *brickpb.MetaRequest) (*brickpb.MetaResponse, error) {
	b.mu.Lock()
	b.count[req.Kind]++
	b.mu.Unlock()
	return b.Backend.Meta(ctx, req)
}

func (b *metaCounter) n(kind brickpb.MetaKind) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count[kind]
}

// TestCapabilityCache checks that the kernel's security.capability query
// before every write(2) does not reach the backend each time, and that a
// capability set later is still seen.
func TestCapabilityCache(t *testing.T) {
	b := &metaCounter{Backend: newMemBackend(), count: map[brickpb.MetaKind]int{}}
	_, dir := mount(t, b, Options{})
	p := filepath.Join(dir, "bin")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.n(brickpb.MetaKind_META_GETXATTR); n > 2 {
		t.Errorf("100 writes asked the backend for xattrs %d times", n)
	}
	caps := []byte{1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if err := syscall.Setxattr(p, capsXattr, caps, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := syscall.Getxattr(p, capsXattr, buf); err != nil || !bytes.Equal(buf[:n], caps) {
		t.Errorf("getxattr after setting capabilities: %v %x", err, buf[:n])
	}
	if err := syscall.Removexattr(p, capsXattr); err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Getxattr(p, capsXattr, buf); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr after removing capabilities: %v, want ENODATA", err)
	}
	f.Close()
}
