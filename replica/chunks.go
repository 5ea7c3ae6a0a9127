package replica

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// ChunkSize is the unit of the checksums heal compares.
const ChunkSize = 1 << 20

// chunkRange is an inclusive range of chunk indexes.
type chunkRange struct{ lo, hi uint64 }

// sumVal is a chunk's CRC32C and the number of bytes it covers: a stored
// checksum is valid only while the chunk still has that length, so a file
// growing or shrinking invalidates its last chunk without bookkeeping.
type sumVal struct{ crc, n uint32 }

func encodeSum(v sumVal) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(make([]byte, 0, 8), v.crc), v.n)
}

func decodeSum(b []byte) (sumVal, error) {
	if len(b) != 8 || binary.BigEndian.Uint32(b[4:]) > ChunkSize {
		return sumVal{}, fmt.Errorf("%w: checksum record of %d bytes", errBadRecord, len(b))
	}
	return sumVal{crc: binary.BigEndian.Uint32(b), n: binary.BigEndian.Uint32(b[4:])}, nil
}

// chunkWatch lets ChunkSums notice a change to a file it is reading.
type chunkWatch struct{ gen, refs int }

// dirtyRange forgets the checksums of the chunks holding [off, off+n).
// Caller holds applyMu.
func (r *Replica) dirtyRange(fid uint64, off, n int64) {
	if n <= 0 || off < 0 {
		return
	}
	end := off + n - 1
	if end < off {
		end = math.MaxInt64
	}
	r.dirty(fid, chunkRange{uint64(off) / ChunkSize, uint64(end) / ChunkSize})
}

// dirtyFrom forgets the checksums of the chunk holding off and all after.
func (r *Replica) dirtyFrom(fid uint64, off int64) {
	if off < 0 {
		off = 0
	}
	r.dirty(fid, chunkRange{uint64(off) / ChunkSize, math.MaxUint64})
}

func (r *Replica) dirty(fid uint64, cr chunkRange) {
	if w := r.watch[fid]; w != nil {
		w.gen++
	}
	rs := r.sumDrops[fid]
	if n := len(rs); n > 0 && rs[n-1] == cr {
		return
	}
	r.sumDrops[fid] = append(rs, cr)
	for k := range r.sumPuts {
		if k[0] == fid && k[1] >= cr.lo && k[1] <= cr.hi {
			delete(r.sumPuts, k)
		}
	}
}

// flushSums applies the pending checksum changes in tx (part of commit).
func (r *Replica) flushSums(tx *bolt.Tx) error {
	b := tx.Bucket(bucketSums)
	for fid, rs := range r.sumDrops {
		for _, cr := range rs {
			var keys [][]byte
			c := b.Cursor()
			hi := sumKey(fid, cr.hi)
			for k, _ := c.Seek(sumKey(fid, cr.lo)); k != nil && bytes.Compare(k, hi) <= 0; k, _ = c.Next() {
				keys = append(keys, append([]byte(nil), k...))
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
	}
	for k, v := range r.sumPuts {
		if err := b.Put(sumKey(k[0], k[1]), encodeSum(v)); err != nil {
			return err
		}
	}
	clear(r.sumDrops)
	clear(r.sumPuts)
	return nil
}

// ChunkSums returns the CRC32C (Castagnoli) of every ChunkSize chunk of
// regular file fid, the last one covering only up to the end of file, and
// the file size. Checksums are computed lazily, kept in meta.db and
// forgotten by writes, truncates and fallocates. It reads the file without
// blocking Apply; if an op changes the file meanwhile it starts again, and
// after three such attempts computes while holding Apply off. POSIX errors
// (ENOENT, EISDIR, EINVAL for a non-regular file) come back as
// syscall.Errno.
func (r *Replica) ChunkSums(fid uint64) ([]uint32, int64, error) {
	if err := r.enter(); err != nil {
		return nil, 0, err
	}
	defer r.exit()
	for attempt := 0; attempt < 3; attempt++ {
		sums, size, ok, err := r.chunkSums(fid, false)
		if err != nil || ok {
			return sums, size, err
		}
	}
	sums, size, _, err := r.chunkSums(fid, true)
	return sums, size, err
}

// chunkSums makes one attempt; ok false: the file changed meanwhile.
func (r *Replica) chunkSums(fid uint64, locked bool) (sums []uint32, size int64, ok bool, err error) {
	r.applyMu.Lock()
	unlock := func() {
		if !locked {
			r.applyMu.Unlock()
		}
	}
	defer func() {
		if locked {
			r.applyMu.Unlock()
		}
	}()
	if err := r.commit(false, nil); err != nil { // pending invalidations first
		unlock()
		return nil, 0, false, err
	}
	o, err := r.fileFD(fid)
	if err != nil {
		unlock()
		return nil, 0, false, err
	}
	defer o.release()
	st, err := fstat(o.fd)
	if err != nil {
		unlock()
		return nil, 0, false, err
	}
	size = st.Size
	n := uint64((size + ChunkSize - 1) / ChunkSize)
	stored := make(map[uint64]sumVal)
	err = r.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSums).Cursor()
		for k, v := c.Seek(sumKey(fid, 0)); k != nil; k, v = c.Next() {
			f, chunk, err := decodeSumKey(k)
			if err != nil {
				return err
			}
			if f != fid || chunk >= n {
				break
			}
			if sv, err := decodeSum(v); err == nil {
				stored[chunk] = sv
			}
		}
		return nil
	})
	if err != nil {
		unlock()
		return nil, 0, false, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	w := r.watch[fid]
	if w == nil {
		w = &chunkWatch{}
		r.watch[fid] = w
	}
	w.refs++
	gen := w.gen
	unlock()

	sums = make([]uint32, n)
	fresh := make(map[uint64]sumVal)
	buf := make([]byte, ChunkSize)
	var readErr error
	for i := uint64(0); i < n; i++ {
		if i%64 == 63 && r.checkOpen() != nil {
			readErr = ErrClosed
			break
		}
		want := uint32(min(ChunkSize, size-int64(i)*ChunkSize))
		if sv, ok := stored[i]; ok && sv.n == want {
			sums[i] = sv.crc
			continue
		}
		got, err := preadFull(o.fd, buf[:want], int64(i)*ChunkSize)
		if err != nil {
			readErr = fmt.Errorf("%w: reading file %d: %w", ErrLocalFailure, fid, err)
			break
		}
		sv := sumVal{crc: crc32.Checksum(buf[:got], castagnoli), n: uint32(got)}
		sums[i], fresh[i] = sv.crc, sv
	}

	if !locked {
		r.applyMu.Lock()
		defer r.applyMu.Unlock()
	}
	w.refs--
	if w.refs == 0 {
		delete(r.watch, fid)
	}
	if readErr != nil {
		return nil, 0, false, readErr
	}
	if w.gen != gen {
		return nil, 0, false, nil
	}
	for i, sv := range fresh {
		if sv.n == uint32(min(ChunkSize, size-int64(i)*ChunkSize)) {
			r.sumPuts[[2]uint64{fid, i}] = sv
		}
	}
	return sums, size, true, nil
}

func preadFull(fd int, buf []byte, off int64) (int, error) {
	got := 0
	for got < len(buf) {
		var n int
		err := retry(func() (err error) { n, err = unix.Pread(fd, buf[got:], off+int64(got)); return })
		if err != nil {
			return got, err
		}
		if n == 0 {
			break
		}
		got += n
	}
	return got, nil
}
