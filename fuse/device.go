package fuse

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// device serves a FUSE connection that this process mounted itself (as
// root), reading /dev/fuse through the Go runtime's poller; go-fuse's own
// gofuse.Server, which serves mounts made through fusermount3, reads it
// with a blocking read(2).
//
// Why: a goroutine blocked in a system call keeps its P until the
// runtime's monitor thread takes it back, which takes 20 µs to a few
// hundred. A mount process runs with one P (--mount-procs), and one of
// go-fuse's readers is always blocked in read(2), so every request that
// woke another goroutine (the head, a stream's sender) waited for that
// hand-over: write+fsync measured 15–20 % faster, and the mount process
// switched threads half as often, once the reads parked in the poller
// instead (docs/benchmarks.md, session 12).
//
// The requests themselves are go-fuse's: each is handed to a
// gofuse.ProtocolServer, which decodes it, calls the file system and
// encodes the reply, exactly as gofuse.Server does.
type device struct {
	dir  string
	ps   *gofuse.ProtocolServer
	raw  gofuse.RawFileSystem
	file *os.File // /dev/fuse, nonblocking: its reads wait in the poller
	rc   syscall.RawConn
	log  func(format string, args ...any)

	inBufs, outBufs sync.Pool // *[]byte of inSize and outSize bytes
	inSize, outSize int

	handlers sync.WaitGroup
	done     chan struct{} // closed once the connection ended and every handler returned
}

// Sizes of a request and a reply beyond their payload: the kernel's
// headers and argument structs are all much smaller.
const (
	devHeaderRoom = 64 << 10
	devMinRead    = 8192 // FUSE_MIN_READ_BUFFER: the kernel refuses smaller reads
)

// mountDevice mounts raw on dir with mount(2), as go-fuse's DirectMount
// does, and serves it until it is unmounted. It returns once the kernel's
// INIT was answered.
func mountDevice(dir string, raw gofuse.RawFileSystem, mo *gofuse.MountOptions) (*device, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, err
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/fuse: %w", err)
	}
	opts := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&syscall.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", mo.MaxWrite),
	}
	opts = append(opts, mo.Options...)
	if mo.AllowOther {
		opts = append(opts, "allow_other")
	}
	source := mo.FsName
	if source == "" {
		source = mo.Name
	}
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	if err := syscall.Mount(source, dir, "fuse."+mo.Name, flags, strings.Join(opts, ",")); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("mount(2): %w", err)
	}
	d := &device{
		dir:     dir,
		ps:      gofuse.NewProtocolServer(raw, mo),
		raw:     raw,
		file:    os.NewFile(uintptr(fd), "/dev/fuse"),
		inSize:  max(mo.MaxWrite+devHeaderRoom, devMinRead),
		outSize: mo.MaxWrite + devHeaderRoom,
		done:    make(chan struct{}),
		log:     func(string, ...any) {},
	}
	if mo.Logger != nil {
		d.log = mo.Logger.Printf
	}
	d.inBufs.New = func() any { b := make([]byte, d.inSize); return &b }
	d.outBufs.New = func() any { b := make([]byte, d.outSize); return &b }
	if d.rc, err = d.file.SyscallConn(); err != nil {
		d.file.Close()
		syscall.Unmount(dir, syscall.MNT_DETACH)
		return nil, err
	}
	go d.serve()
	// As go-fuse's WaitMount: wait for INIT, and make the kernel ask for
	// poll once now, so that the answer (ENOSYS) turns it off before
	// anything could poll a file of this mount from this process.
	if err := pollHack(dir); err != nil {
		d.Unmount()
		return nil, fmt.Errorf("first access to the mount: %w", err)
	}
	return d, nil
}

// pollHackName is go-fuse's: its request handling answers this name
// itself (fuse/poll.go).
const pollHackName = ".go-fuse-epoll-hack"

func pollHack(dir string) error {
	fd, err := syscall.Open(filepath.Join(dir, pollHackName), syscall.O_RDONLY, 0)
	if err != nil {
		return err
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return syscall.Close(fd)
}

// serve reads requests until the connection ends and hands each to a
// goroutine of its own.
func (d *device) serve() {
	defer func() {
		d.handlers.Wait()
		d.raw.OnUnmount()
		d.file.Close()
		close(d.done)
	}()
	for {
		bp := d.inBufs.Get().(*[]byte)
		n, err := d.read(*bp)
		switch {
		case err == nil:
			d.handlers.Add(1)
			go d.handle(bp, n)
			continue
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EINTR):
			// ENOENT: the request was interrupted before it was read.
		case errors.Is(err, syscall.ENODEV), errors.Is(err, os.ErrClosed):
			d.inBufs.Put(bp)
			return // unmounted, or the connection was aborted
		default:
			d.log("fuse: reading /dev/fuse of %s: %v", d.dir, err)
			d.inBufs.Put(bp)
			return
		}
		d.inBufs.Put(bp)
	}
}

// read reads one request, waiting in the runtime's poller while there is
// none.
func (d *device) read(buf []byte) (n int, err error) {
	cerr := d.rc.Read(func(fd uintptr) bool {
		n, err = syscall.Read(int(fd), buf)
		return err != syscall.EAGAIN
	})
	if cerr != nil {
		return 0, cerr
	}
	return n, err
}

func (d *device) handle(in *[]byte, n int) {
	defer d.handlers.Done()
	out := d.outBufs.Get().(*[]byte)
	m, st := d.ps.HandleRequest([][]byte{(*in)[:n]}, [][]byte{*out})
	d.inBufs.Put(in)
	if !st.Ok() {
		d.log("fuse: a request to %s could not be handled: %v", d.dir, st)
	}
	if m > 0 {
		var err error
		if cerr := d.rc.Write(func(fd uintptr) bool {
			_, err = syscall.Write(int(fd), (*out)[:m])
			return err != syscall.EAGAIN
		}); cerr != nil {
			err = cerr
		}
		// ENOENT: the kernel gave up on the request (interrupted);
		// ENODEV: the connection is gone.
		if err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENODEV) && !errors.Is(err, os.ErrClosed) {
			d.log("fuse: replying to a request to %s: %v", d.dir, err)
		}
	}
	d.outBufs.Put(out)
}

// Unmount unmounts dir, retrying a few times while the kernel still sees
// it busy (as go-fuse does), and waits until the connection is served no
// more. A connection that ended already is not unmounted again.
func (d *device) Unmount() error {
	var err error
	delay := time.Duration(0)
	for try := 0; try < 5; try++ {
		select {
		case <-d.done:
			return nil
		default:
		}
		if err = syscall.Unmount(d.dir, 0); err == nil {
			break
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	if err != nil {
		return err
	}
	d.Wait()
	return nil
}

// Wait blocks until the connection ended (unmounted here or elsewhere)
// and every request was answered.
func (d *device) Wait() { <-d.done }
