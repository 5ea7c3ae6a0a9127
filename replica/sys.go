package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

// Every OS call of the package goes through the helpers in this file: they
// never build paths longer than one component below a directory file
// descriptor, never follow a symbolic link inside a replica, and retry
// EINTR.

const (
	// fidXattr carries the volume-wide file ID on every inode of a
	// replica (directories and the rest); hard links share it. It is
	// hidden from users: GETXATTR answers ENODATA, SETXATTR and
	// REMOVEXATTR answer EPERM, LISTXATTR leaves it out.
	fidXattr = "trusted.brick.fid"
	// internalXattrPrefix is reserved for the brick's own attributes.
	internalXattrPrefix = "trusted.brick."

	nameMax      = 255   // NAME_MAX
	pathMax      = 4096  // PATH_MAX, for symlink targets
	xattrNameMax = 255   // XATTR_NAME_MAX
	xattrSizeMax = 65536 // XATTR_SIZE_MAX

	oDir  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	oPath = unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

// checkName refuses names that are not exactly one path component.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return unix.EINVAL
	case strings.ContainsAny(name, "/\x00"):
		return unix.EINVAL
	case len(name) > nameMax:
		return unix.ENAMETOOLONG
	}
	return nil
}

// checkXattrName refuses malformed attribute names and the brick's own.
func checkXattrName(name string) error {
	switch {
	case name == "" || strings.IndexByte(name, 0) >= 0:
		return unix.EINVAL
	case len(name) > xattrNameMax:
		return unix.ERANGE
	case strings.HasPrefix(name, internalXattrPrefix):
		return unix.EPERM
	}
	return nil
}

func fidName(fid uint64) string { return strconv.FormatUint(fid, 10) }

// procPath names the entry name in the directory open as dirfd, or the file
// open as dirfd itself when name is empty, through /proc/self/fd: the
// kernel resolves the descriptor, not a path, so nothing above it is
// followed. Used only with the l*xattr calls, which do not follow a final
// symlink.
func procPath(dirfd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if name != "" {
		p += "/" + name
	}
	return p
}

func retry(f func() error) error {
	for {
		err := f()
		if err != unix.EINTR {
			return err
		}
	}
}

func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func closeFD(fd int) { _ = unix.Close(fd) }

func lstatAt(dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := retry(func() error { return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) })
	return st, err
}

func fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := retry(func() error { return unix.Fstat(fd, &st) })
	return st, err
}

func encodeFID(fid uint64) []byte { return binary.BigEndian.AppendUint64(nil, fid) }

func decodeFID(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, errBadFIDXattr
	}
	fid := binary.BigEndian.Uint64(b)
	if fid == 0 {
		return 0, errBadFIDXattr
	}
	return fid, nil
}

var errBadFIDXattr = errors.New("malformed " + fidXattr + " attribute")

// fidOfFD reads the file ID of the file open as fd. ENODATA: none.
func fidOfFD(fd int) (uint64, error) {
	var b [16]byte
	var n int
	err := retry(func() (err error) { n, err = unix.Fgetxattr(fd, fidXattr, b[:]); return })
	if err != nil {
		return 0, err
	}
	return decodeFID(b[:n])
}

// fidAt reads the file ID of entry name in directory dirfd, without
// following it. ENODATA: none.
func fidAt(dirfd int, name string) (uint64, error) {
	var b [16]byte
	var n int
	p := procPath(dirfd, name)
	err := retry(func() (err error) { n, err = unix.Lgetxattr(p, fidXattr, b[:]); return })
	if err != nil {
		return 0, err
	}
	return decodeFID(b[:n])
}

func setFIDAt(dirfd int, name string, fid uint64) error {
	p := procPath(dirfd, name)
	return retry(func() error { return unix.Lsetxattr(p, fidXattr, encodeFID(fid), 0) })
}

func setFIDFD(fd int, fid uint64) error {
	return retry(func() error { return unix.Fsetxattr(fd, fidXattr, encodeFID(fid), 0) })
}

// xattrGet reads attribute name of the file named by path (see procPath),
// growing the buffer as needed.
func xattrGet(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ERANGE && len(buf) < xattrSizeMax:
			buf = make([]byte, xattrSizeMax)
			continue
		case err != nil:
			return nil, err
		}
		return buf[:n:n], nil
	}
}

// xattrList lists the attribute names of path, the brick's own left out.
func xattrList(path string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Llistxattr(path, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ERANGE && len(buf) < xattrSizeMax:
			buf = make([]byte, xattrSizeMax)
			continue
		case err != nil:
			return nil, err
		}
		var names []string
		for _, nm := range bytes.Split(buf[:n], []byte{0}) {
			if len(nm) > 0 && !strings.HasPrefix(string(nm), internalXattrPrefix) {
				names = append(names, string(nm))
			}
		}
		return names, nil
	}
}

// dirent is one entry of a directory listing.
type dirent struct {
	name string
	typ  uint8 // DT_*
}

// readDirents lists the directory open as fd (its offset must be at the
// start; the caller owns fd), without "." and "..".
func readDirents(fd int) ([]dirent, error) {
	var out []dirent
	buf := make([]byte, 32<<10)
	for {
		var n int
		err := retry(func() (err error) { n, err = unix.Getdents(fd, buf); return })
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		b := buf[:n]
		for len(b) >= 19 {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, unix.EIO
			}
			typ := b[18]
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, dirent{name: s, typ: typ})
			}
			b = b[reclen:]
		}
	}
}

func isDir(st *unix.Stat_t) bool  { return st.Mode&unix.S_IFMT == unix.S_IFDIR }
func isReg(st *unix.Stat_t) bool  { return st.Mode&unix.S_IFMT == unix.S_IFREG }
func isLink(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFLNK }

// attrOf converts a stat of the inode of fid. For non-directories the link
// in fids/ is not counted in nlink.
// futimens sets the access and modification times of fd, which may be a
// directory (utimensat with a NULL path, as glibc's futimens).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func attrOf(fid uint64, st *unix.Stat_t) *brickpb.Attr {
	nlink := uint32(st.Nlink)
	if !isDir(st) && nlink > 0 {
		nlink--
	}
	return &brickpb.Attr{
		Fid:     fid,
		Mode:    st.Mode,
		Nlink:   nlink,
		Uid:     st.Uid,
		Gid:     st.Gid,
		Rdev:    st.Rdev,
		Size:    st.Size,
		Blocks:  st.Blocks,
		AtimeNs: st.Atim.Nano(),
		MtimeNs: st.Mtim.Nano(),
		CtimeNs: st.Ctim.Nano(),
	}
}

// errnoOf extracts the errno of err, if it carries one.
func errnoOf(err error) (syscall.Errno, bool) {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e, true
	}
	return 0, false
}

// localErrno reports whether errno e says something about this brick
// (disk full, I/O error, out of descriptors) rather than about the op: such
// a failure must not be recorded as the op's result, since the other
// replicas would not fail the same way.
func localErrno(e syscall.Errno) bool {
	switch e {
	case unix.ENOSPC, unix.EDQUOT, unix.EIO, unix.EROFS, unix.ENOMEM,
		unix.EMFILE, unix.ENFILE, unix.EBADF, unix.EFAULT, unix.EAGAIN,
		unix.EINTR, unix.ENOLCK, unix.EUCLEAN, unix.ESTALE, unix.ENOSYS:
		return true
	}
	return false
}
