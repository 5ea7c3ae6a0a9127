package fuse

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// opKind says how a failed backend call maps to an errno.
type opKind int

const (
	query    opKind = iota // reads, lookups, attributes: non-errno → EIO
	mutation               // ops sent with Do: wraps EROFS → EROFS, else EIO
)

// transportErrnos are errnos that say the backend could not be reached, not
// that the operation failed: a wrapped one must not reach the application
// as if the file system had answered it.
var transportErrnos = map[syscall.Errno]bool{
	syscall.ECONNREFUSED: true,
	syscall.ECONNRESET:   true,
	syscall.ECONNABORTED: true,
	syscall.ETIMEDOUT:    true,
	syscall.EHOSTUNREACH: true,
	syscall.ENETUNREACH:  true,
	syscall.ENETDOWN:     true,
	syscall.ENOTCONN:     true,
	syscall.EPIPE:        true,
}

// toErrno maps a backend error to the errno returned to the kernel. The
// boolean reports whether err is a failure of the backend (one to log)
// rather than a POSIX answer about the operation.
//
// An error wrapping an errno is a POSIX answer and passes through, except
// transport errnos, which become EIO, and EROFS, which says the volume is
// read-only: EROFS for a mutation, EIO for a query (a read never fails
// because writes cannot be made). Both are logged. Anything else is EIO.
func toErrno(err error, kind opKind) (syscall.Errno, bool) {
	if err == nil {
		return 0, false
	}
	var e syscall.Errno
	if !errors.As(err, &e) || e == 0 || transportErrnos[e] {
		return syscall.EIO, true
	}
	if e == syscall.EROFS {
		if kind == mutation {
			return syscall.EROFS, true
		}
		return syscall.EIO, true
	}
	return e, false
}

// errLog logs unexpected backend errors once each, with context, and
// summarises a burst of the same message (a fenced volume fails every op
// the same way) instead of logging every occurrence.
type errLog struct {
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	last       string
	lastAt     time.Time
	suppressed int
}

// repeatWindow is how long an identical error message is summarised rather
// than logged again.
const repeatWindow = 10 * time.Second

func (l *errLog) report(op string, err error, errno syscall.Errno, attrs ...any) {
	msg := err.Error()
	l.mu.Lock()
	now := l.now()
	if msg == l.last && now.Sub(l.lastAt) < repeatWindow {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.last, l.lastAt, l.suppressed = msg, now, 0
	l.mu.Unlock()

	args := append([]any{"op", op, "err", err, "errno", errno.Error()}, attrs...)
	if suppressed > 0 {
		args = append(args, "previous_error_repeats", suppressed)
	}
	l.log.Warn("fuse: backend call failed", args...)
}

// fail maps err for op and logs it when it is not a POSIX answer.
func (f *fileSystem) fail(op string, err error, kind opKind, attrs ...any) syscall.Errno {
	errno, unexpected := toErrno(err, kind)
	if unexpected {
		f.errs.report(op, err, errno, attrs...)
	}
	return errno
}

// panicHandler answers a panicking request with EIO after logging it with
// its stack.
func (f *fileSystem) panicHandler(v any) gofuse.Status {
	f.log.Error("fuse: panic in request handler", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	return gofuse.EIO
}
