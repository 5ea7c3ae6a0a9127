package csi

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Mounter is the node's mount table: the only OS calls the node service
// makes besides creating and removing directories. Linux implements it
// with mount(2) (NewMounter); tests fake it.
type Mounter interface {
	// Bind bind-mounts source at target, then remounts the bind with opts
	// (read-only, nosuid, ...) when any is set.
	Bind(source, target string, opts MountOptions) error
	// Unmount unmounts target; lazily (MNT_DETACH) when it is busy.
	Unmount(target string) error
	// Lookup returns the mount at exactly dir, or ok false when dir is no
	// mount point.
	Lookup(dir string) (m MountPoint, ok bool, err error)
	// Statfs reports the file system's usage at path.
	Statfs(path string) (Usage, error)
}

// MountOptions are the per-mount flags NodePublish applies to a bind.
type MountOptions struct {
	ReadOnly, NoSuid, NoDev, NoExec, NoAtime bool
}

func (o MountOptions) any() bool { return o != MountOptions{} }

// MountPoint is one line of /proc/self/mountinfo, as far as the node
// service needs it: the device (a bind shares its source's) and whether
// it is read-only.
type MountPoint struct {
	Dir      string
	Device   string // "major:minor"
	ReadOnly bool
	FSType   string
}

// Usage is a file system's space and inode counts.
type Usage struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}

// NewMounter is the Linux mount table of this process's mount namespace.
func NewMounter() Mounter { return linuxMounter{} }

type linuxMounter struct{}

func (linuxMounter) Bind(source, target string, o MountOptions) error {
	if err := syscall.Mount(source, target, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s at %s: %w", source, target, err)
	}
	if !o.any() {
		return nil
	}
	flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT)
	for _, f := range []struct {
		on   bool
		flag uintptr
	}{{o.ReadOnly, syscall.MS_RDONLY}, {o.NoSuid, syscall.MS_NOSUID}, {o.NoDev, syscall.MS_NODEV},
		{o.NoExec, syscall.MS_NOEXEC}, {o.NoAtime, syscall.MS_NOATIME}} {
		if f.on {
			flags |= f.flag
		}
	}
	if err := syscall.Mount("", target, "", flags, ""); err != nil {
		// Never leave a writable bind where a read-only one was asked for.
		if uerr := syscall.Unmount(target, syscall.MNT_DETACH); uerr != nil {
			return fmt.Errorf("remounting the bind at %s with %+v: %w (and undoing the bind: %v)", target, o, err, uerr)
		}
		return fmt.Errorf("remounting the bind at %s with %+v: %w", target, o, err)
	}
	return nil
}

func (linuxMounter) Unmount(target string) error {
	err := syscall.Unmount(target, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(target, syscall.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, syscall.EINVAL) { // EINVAL: not a mount point
		return fmt.Errorf("unmounting %s: %w", target, err)
	}
	return nil
}

func (linuxMounter) Lookup(dir string) (MountPoint, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return MountPoint{}, false, fmt.Errorf("reading the mount table: %w", err)
	}
	defer f.Close()
	var found MountPoint
	ok := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		m := MountPoint{Dir: dir, Device: fields[2]}
		for _, o := range strings.Split(fields[5], ",") {
			if o == "ro" {
				m.ReadOnly = true
			}
		}
		for i := 6; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				m.FSType = fields[i+1]
				break
			}
		}
		found, ok = m, true // the last one is on top
	}
	if err := sc.Err(); err != nil {
		return MountPoint{}, false, fmt.Errorf("reading the mount table: %w", err)
	}
	return found, ok, nil
}

func unescapeMountinfo(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func (linuxMounter) Statfs(path string) (Usage, error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(path, &s); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(s.Bsize)
	u := Usage{
		TotalBytes:     int64(s.Blocks) * bs,
		AvailableBytes: int64(s.Bavail) * bs,
		TotalInodes:    int64(s.Files),
		FreeInodes:     int64(s.Ffree),
	}
	u.UsedBytes = u.TotalBytes - int64(s.Bfree)*bs
	u.UsedInodes = u.TotalInodes - u.FreeInodes
	return u, nil
}
