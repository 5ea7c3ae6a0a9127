package replica

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// directAlign is the alignment O_DIRECT asks of offsets, lengths and
// buffers: the page size, which covers every logical block size a brick's
// disk may have.
const directAlign = 4096

// writeDirect writes a prefix of data at off in the file behind o with
// O_DIRECT, when the write is big (ReplicaOptions.DirectWriteMin) and
// aligned, and returns its length: 0 when the write is small or unaligned,
// or the brick's file system refuses O_DIRECT (then never again on this
// replica); less than len(data) when a write stopped short. The caller
// writes the rest through the page cache.
//
// Why: a brick's copy of a big write is rarely read back (the mount's page
// cache and the op log serve recent data), and copying it into the page
// cache cost a brick more than anything else in a sequential write: on a VM
// whose host backs guest memory lazily, each fresh page of cache is a fault
// in the host (docs/benchmarks.md, session 17). O_DIRECT moves the data from
// the op's buffer to the disk. It is off unless configured: on the VMs
// measured, data written so read back (a heal, a read after the mount's
// cache let it go) at a third of the speed, as the host's cache of the disk
// did not keep it. Durability is unchanged: the data is on the device when
// pwrite returns but maybe in its volatile cache, and the barrier's fsync or
// syncfs flushes that cache, as for a write through the page cache. The
// kernel keeps the page cache coherent (it writes back and drops cached
// pages of the range around the write). Caller holds applyMu.
func (r *Replica) writeDirect(o *openFD, data []byte, off int64) (int, error) {
	least := r.opts.DirectWriteMin
	if least <= 0 || r.noDirect || int64(len(data)) < least || off%directAlign != 0 || len(data)%directAlign != 0 {
		return 0, nil
	}
	// Each write opens the inode afresh (through o's descriptor, so
	// nothing is resolved by name): an O_DIRECT descriptor kept open
	// would need evicting with every FORGET and recycled inode, and one
	// open costs little next to a write this big.
	fd, err := openat(unix.AT_FDCWD, procPath(o.fd, ""), unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == unix.EINVAL {
		r.refuseDirect()
		return 0, nil
	}
	if err != nil {
		return 0, localStep("opening for direct I/O", err)
	}
	defer closeFD(fd)
	buf := data
	if uintptr(unsafe.Pointer(&data[0]))%directAlign != 0 {
		buf = r.directBuf(len(data))
		copy(buf, data)
	}
	done := 0
	for done < len(buf) {
		var n int
		err := retry(func() (err error) { n, err = unix.Pwrite(fd, buf[done:], off+int64(done)); return })
		if err == unix.EINVAL && done == 0 {
			r.refuseDirect()
			return 0, nil
		}
		if err != nil {
			return done, err
		}
		done += n
		if n == 0 || n%directAlign != 0 {
			break // the rest, if any, through the page cache
		}
	}
	return done, nil
}

func (r *Replica) refuseDirect() {
	r.noDirect = true
	r.log.Info("the brick's file system refuses O_DIRECT: big writes go through the page cache", "dir", r.dir)
}

// directBuf is a buffer of n bytes aligned for O_DIRECT, kept between
// writes (applyMu).
func (r *Replica) directBuf(n int) []byte {
	if cap(r.alignedBuf) < n {
		raw := make([]byte, n+directAlign)
		skip := int((directAlign - uintptr(unsafe.Pointer(&raw[0]))%directAlign) % directAlign)
		r.alignedBuf = raw[skip : skip+n : skip+n]
	}
	return r.alignedBuf[:n]
}
