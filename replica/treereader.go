package replica

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrNotInTree is what TreeReader returns for a file ID it does not read
// itself: no regular file stands at fids/ under that ID (a directory, a
// file forgotten meanwhile, a replica being replaced). The brick's Read
// answers such a file properly; ask it.
var ErrNotInTree = errors.New("not a regular file in the replica's tree")

// TreeReader reads regular files of a replica straight from its tree, by
// file ID, in the process that asks: the mount process on the brick's own
// host reads so without a round trip to the brick. It only reads, and it
// does not order anything: the brick's Read waits until it applied the
// reader's AfterSeq, a TreeReader's caller must know that the replica has
// applied every op the read must see (the head knows what the brick
// acknowledged). Descriptors stay open, at most max of them, for one
// generation: the caller names the generation of the tree it means with
// every read, and changes it whenever the replica may have been replaced
// meanwhile (a full resync swaps in a new tree); a read of a newer
// generation closes every descriptor opened for an older one, a read of an
// older one is refused. Safe for concurrent use.
type TreeReader struct {
	fids string // the replica's fids/ directory
	max  int

	mu  sync.Mutex
	gen uint64
	fds map[uint64]*treeFD // opened in generation gen
}

type treeFD struct {
	fd   int
	refs atomic.Int32 // the map's reference and one per read under way
}

func (t *treeFD) release() {
	if t.refs.Add(-1) == 0 {
		unix.Close(t.fd)
	}
}

// NewTreeReader reads the replica in dir, keeping at most maxOpen files
// open (at least 1). Nothing is opened yet: a replica that does not exist
// (yet) answers ErrNotInTree.
func NewTreeReader(dir string, maxOpen int) *TreeReader {
	return &TreeReader{fids: filepath.Join(dir, "fids"), max: max(maxOpen, 1), fds: make(map[uint64]*treeFD)}
}

// ReadAt reads up to len(p) bytes of file fid at off in the tree of
// generation gen, short only at the end of the file. ErrNotInTree
// (wrapped) means: ask the brick.
func (t *TreeReader) ReadAt(gen, fid uint64, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, unix.EINVAL
	}
	f, err := t.open(gen, fid)
	if err != nil {
		return 0, err
	}
	defer f.release()
	n, err := preadFull(f.fd, p, off)
	if err != nil {
		return n, fmt.Errorf("reading file %d in %s: %w", fid, t.fids, err)
	}
	return n, nil
}

// open returns fid's descriptor with a reference the caller releases.
func (t *TreeReader) open(gen, fid uint64) (*treeFD, error) {
	t.mu.Lock()
	if gen < t.gen {
		t.mu.Unlock()
		return nil, fmt.Errorf("file %d: generation %d after %d: %w", fid, gen, t.gen, ErrNotInTree)
	}
	if gen > t.gen {
		t.resetLocked(gen)
	}
	if f := t.fds[fid]; f != nil {
		f.refs.Add(1)
		t.mu.Unlock()
		return f, nil
	}
	t.mu.Unlock()
	// Through O_PATH first, as the brick does: a FIFO or a device node at
	// that name is never opened (an open could block or act on a device).
	pfd, err := openat(unix.AT_FDCWD, filepath.Join(t.fids, fidName(fid)), oPath, 0)
	if err != nil {
		if err == unix.ENOENT || err == unix.ELOOP {
			return nil, fmt.Errorf("file %d: %w", fid, ErrNotInTree)
		}
		return nil, fmt.Errorf("opening file %d in %s: %w", fid, t.fids, err)
	}
	defer closeFD(pfd)
	st, err := fstat(pfd)
	if err != nil {
		return nil, fmt.Errorf("stat of file %d in %s: %w", fid, t.fids, err)
	}
	if !isReg(&st) {
		return nil, fmt.Errorf("file %d: %w", fid, ErrNotInTree)
	}
	fd, err := openat(unix.AT_FDCWD, procPath(pfd, ""), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening file %d in %s: %w", fid, t.fids, err)
	}
	f := &treeFD{fd: fd}
	f.refs.Store(2) // the map's and the caller's
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen { // a newer generation began while this one opened
		unix.Close(fd)
		return nil, fmt.Errorf("file %d: generation %d after %d: %w", fid, gen, t.gen, ErrNotInTree)
	}
	if old := t.fds[fid]; old != nil { // another read opened it meanwhile
		old.refs.Add(1)
		f.refs.Store(0)
		unix.Close(fd)
		return old, nil
	}
	for k, o := range t.fds { // a random victim: cheap, and good enough
		if len(t.fds) < t.max {
			break
		}
		delete(t.fds, k)
		o.release()
	}
	t.fds[fid] = f
	return f, nil
}

// Forget closes fid's descriptor, if open (the file was forgotten).
func (t *TreeReader) Forget(fid uint64) {
	t.mu.Lock()
	f := t.fds[fid]
	delete(t.fds, fid)
	t.mu.Unlock()
	if f != nil {
		f.release()
	}
}

// Reset closes every descriptor: the next reads open the files anew, in
// whatever tree then stands at the replica's path.
func (t *TreeReader) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resetLocked(t.gen)
}

func (t *TreeReader) resetLocked(gen uint64) {
	for _, f := range t.fds {
		f.release() // a read under way keeps its descriptor until it is done
	}
	t.fds, t.gen = make(map[uint64]*treeFD), gen
}

// Open is how many descriptors the reader holds.
func (t *TreeReader) Open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.fds)
}

// Close closes every descriptor; reads after it open them again.
func (t *TreeReader) Close() error {
	t.Reset()
	return nil
}
