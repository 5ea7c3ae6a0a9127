package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The op log lives in segment files under <replica>/oplog/, not in
// meta.db: appending a batch is one pwrite, where a bbolt commit wrote
// five to ten pages (the log record, its nested bucket, the leaves above,
// the meta page) and cost a write op about a third of its time on a brick
// (docs/benchmarks.md). The log needs no transactions of its own: it is
// written before the tree (write-ahead, package doc), made durable by the
// same syncfs as the tree and meta.db, and checked on reading.
//
// A segment is named by the seq of its first record (%020d.log) and holds
// records of contiguous seqs:
//
//	length  uint32  payload bytes
//	crc     uint32  CRC-32C of seq and payload
//	seq     uint64
//	payload         encodeLogRec's bytes
//
// all little-endian, then an end mark (a header of zeros), which the next
// append overwrites; an append writes zeros from its end mark to the end
// of that page, so no append writes part of a page the page cache may
// lack (the kernel would read it from the disk first). Segment files are
// written in place, never extended by an append: a new one is
// zero-filled to the segment size when made,
// and a trimmed one is kept as a spare (%020d.spare) and reused; stale
// bytes past the end mark are never read. An append that grew the file
// made every fsync barrier pay ext4 block allocation and a journal commit
// for the log's inode. Opening scans every segment up to its end mark; a
// record that is short, fails its checksum or breaks the sequence ends the
// log there (a torn append): the segment is cut and later ones removed.

const (
	walDirName = "oplog"
	walHdr     = 16
	// walMaxRec bounds one record's payload (a stream message is at most
	// 64 MiB); a longer length field is damage, not a record.
	walMaxRec = 64 << 20
	// walSpares is how many trimmed segments are kept for reuse.
	walSpares = 2
	// walPage is the page size Append pads its end mark to.
	walPage = 4096
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// walSeg is one segment file.
type walSeg struct {
	first uint64   // seq of offs[0]
	f     *os.File // read-write
	offs  []uint32 // offset of each record; record i has seq first+i
	size  int64    // end of the last whole record (where the end mark is)
	cap   int64    // the file's size
}

func (s *walSeg) last() uint64 { return s.first + uint64(len(s.offs)) - 1 }

// end is where record i ends.
func (s *walSeg) end(i int) int64 {
	if i+1 < len(s.offs) {
		return int64(s.offs[i+1])
	}
	return s.size
}

// opLog is a replica's op log. Appends, truncations and trims are the
// replica's (under its applyMu); reads run concurrently with them.
type opLog struct {
	dir    string
	segMax int64
	log    *slog.Logger

	mu     sync.RWMutex
	segs   []*walSeg
	spares []string // paths of trimmed segment files kept for reuse
	first  uint64   // oldest seq served (earlier records are trimmed); 0: empty
	last   uint64
	bytes  int64 // of the records first..last, headers included

	scratch []byte // Append's buffer, kept between appends (one appender at a time)
	// tailSum, if set, finds a checksum a payload carries of its own
	// tail: the CRC-32C of p[head:] (ok false: none). Append then
	// combines it into the record's checksum instead of reading the tail
	// again (records.go's logRecTail).
	tailSum func(p []byte) (head int, sum uint32, ok bool)
}

// openOpLog opens (creating if needed) the log under dir, cutting a torn
// tail. segMax is the size at which a new segment is started.
func openOpLog(dir string, segMax int64, log *slog.Logger) (*opLog, error) {
	l := &opLog{dir: filepath.Join(dir, walDirName), segMax: segMax, log: log}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the op log directory: %w", err)
	}
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("listing the op log: %w", err)
	}
	var firsts []uint64
	for _, e := range ents {
		name := e.Name()
		if n, err := strconv.ParseUint(strings.TrimSuffix(name, ".spare"), 10, 64); err == nil && name == spareName(n) {
			l.spares = append(l.spares, filepath.Join(l.dir, name))
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 10, 64)
		if !strings.HasSuffix(name, ".log") || err != nil || n == 0 || name != segName(n) {
			log.Warn("ignoring a stray file in the op log directory", "file", filepath.Join(l.dir, name))
			continue
		}
		firsts = append(firsts, n)
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	for i, first := range firsts {
		if len(l.segs) > 0 && first != l.last+1 {
			l.log.Warn("op log segments do not follow each other: dropping the later ones",
				"last", l.last, "next_segment", first)
			l.removeFiles(firsts[i:])
			break
		}
		s, torn, err := l.openSeg(first)
		if err != nil {
			l.Close()
			return nil, err
		}
		if len(s.offs) == 0 {
			s.f.Close()
			os.Remove(filepath.Join(l.dir, segName(first)))
			l.removeFiles(firsts[i+1:])
			break
		}
		l.segs = append(l.segs, s)
		if l.first == 0 {
			l.first = s.first
		}
		l.last = s.last()
		l.bytes += s.size
		if torn {
			l.removeFiles(firsts[i+1:])
			break
		}
	}
	return l, nil
}

func segName(first uint64) string { return fmt.Sprintf("%020d.log", first) }

func spareName(first uint64) string { return fmt.Sprintf("%020d.spare", first) }

// retire keeps the file of segment s, which nothing served is in any
// more, as a spare, or removes it when there are enough. Caller holds mu.
func (l *opLog) retire(s *walSeg) error {
	s.f.Close()
	path := filepath.Join(l.dir, segName(s.first))
	spare := filepath.Join(l.dir, spareName(s.first))
	for i, p := range l.spares {
		if p == spare {
			l.spares = append(l.spares[:i], l.spares[i+1:]...)
			break
		}
	}
	if len(l.spares) >= walSpares || s.cap < l.segMax {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("removing op log segment: %w", err)
		}
		return nil
	}
	if err := os.Rename(path, spare); err != nil {
		return fmt.Errorf("keeping op log segment %s as a spare: %w", path, err)
	}
	l.spares = append(l.spares, spare)
	return nil
}

// newSegment makes the file of a segment starting at first, holding at
// least need bytes: a spare renamed, or a new file zero-filled (see the
// file comment for why never a file that grows).
func (l *opLog) newSegment(first uint64, need int64) (*walSeg, error) {
	path := filepath.Join(l.dir, segName(first))
	l.mu.Lock()
	var spare string
	if n := len(l.spares); n > 0 {
		spare, l.spares = l.spares[n-1], l.spares[:n-1]
	}
	l.mu.Unlock()
	if spare != "" {
		f, err := os.OpenFile(spare, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("opening op log spare %s: %w", spare, err)
		}
		st, err := f.Stat()
		if err == nil {
			// An end mark first: records the file held before must not
			// pass for this segment's if the process dies before its
			// first append (after TruncateAfter they can have its seqs).
			// A whole page, for the reason Append pads its end mark.
			_, err = f.WriteAt(make([]byte, min(walPage, max(st.Size(), walHdr))), 0)
		}
		if err == nil {
			err = os.Rename(spare, path)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reusing op log segment %s: %w", spare, err)
		}
		return &walSeg{first: first, f: f, cap: st.Size()}, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating op log segment %s: %w", path, err)
	}
	size := max(l.segMax, need)
	zeros := make([]byte, min(size, 1<<20))
	for off := int64(0); off < size; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("filling op log segment %s: %w", path, err)
		}
	}
	return &walSeg{first: first, f: f, cap: size}, nil
}

func (l *opLog) removeFiles(firsts []uint64) {
	for _, f := range firsts {
		os.Remove(filepath.Join(l.dir, segName(f)))
	}
}

// openSeg reads a segment whole and cuts it after its last sound record;
// torn reports that it did.
func (l *opLog) openSeg(first uint64) (*walSeg, bool, error) {
	path := filepath.Join(l.dir, segName(first))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false, fmt.Errorf("opening op log segment %s: %w", path, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("reading op log segment %s: %w", path, err)
	}
	offs, size, serr := scanSegment(b, first)
	s := &walSeg{first: first, f: f, offs: offs, size: size, cap: int64(len(b))}
	if serr == nil {
		return s, false, nil
	}
	l.log.Warn("op log segment ends in a damaged record (a torn append?): cutting it there",
		"segment", path, "records", len(offs), "at", size, "why", serr)
	if _, err := f.WriteAt(make([]byte, walHdr), size); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("cutting op log segment %s: %w", path, err)
	}
	return s, true, nil
}

// scanSegment returns the offsets of the sound records of segment b, whose
// first record must have seq first, and where they end: at the end mark
// or the end of b; a non-nil error says why the bytes there are neither
// a record nor an end mark.
func scanSegment(b []byte, first uint64) (offs []uint32, end int64, err error) {
	off := 0
	for off < len(b) {
		if endMark(b[off:]) {
			return offs, int64(off), nil
		}
		seq := first + uint64(len(offs))
		if _, n, err := decodeWALRec(b[off:], seq); err != nil {
			return offs, int64(off), err
		} else {
			offs = append(offs, uint32(off))
			off += n
		}
	}
	return offs, int64(off), nil
}

// endMark reports whether b starts with an end mark (a header of zeros,
// or zeros to the end of the file).
func endMark(b []byte) bool {
	for _, c := range b[:min(len(b), walHdr)] {
		if c != 0 {
			return false
		}
	}
	return true
}

// decodeWALRec decodes the record at the start of b, which must have seq
// want; it returns the payload (aliasing b) and the record's length.
func decodeWALRec(b []byte, want uint64) ([]byte, int, error) {
	if len(b) < walHdr {
		return nil, 0, fmt.Errorf("%d bytes, short of a record header", len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	sum := binary.LittleEndian.Uint32(b[4:])
	seq := binary.LittleEndian.Uint64(b[8:])
	switch {
	case n > walMaxRec:
		return nil, 0, fmt.Errorf("record length %d is beyond the limit", n)
	case len(b)-walHdr < int(n):
		return nil, 0, fmt.Errorf("record of %d bytes cut at %d", n, len(b)-walHdr)
	}
	payload := b[walHdr : walHdr+int(n)]
	if got := walSum(b[8:16], payload); got != sum {
		return nil, 0, fmt.Errorf("record checksum %08x, want %08x", got, sum)
	}
	if seq != want {
		return nil, 0, fmt.Errorf("record of op %d where op %d belongs", seq, want)
	}
	return payload, walHdr + int(n), nil
}

func walSum(seq, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(seq, walCRC), walCRC, payload)
}

// appendWALRec appends the record of seq to buf.
func appendWALRec(buf []byte, seq uint64, payload []byte) []byte {
	return append(appendWALHdr(buf, seq, payload), payload...)
}

// appendWALHdr appends the header of seq's record to buf.
func appendWALHdr(buf []byte, seq uint64, payload []byte) []byte {
	var h [walHdr]byte
	binary.LittleEndian.PutUint32(h[:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[8:], seq)
	binary.LittleEndian.PutUint32(h[4:], walSum(h[8:16], payload))
	return append(buf, h[:]...)
}

// combineMin is the payload size from which Append combines a checksum
// the payload carries (tailSum) rather than checksum all of it; below
// it, combining costs about as much.
const combineMin = 64 << 10

// appendHdr is appendWALHdr, with the checksum of a big payload's tail
// taken from the payload when tailSum finds one there.
func (l *opLog) appendHdr(buf []byte, seq uint64, payload []byte) []byte {
	if l.tailSum == nil || len(payload) < combineMin {
		return appendWALHdr(buf, seq, payload)
	}
	head, tail, ok := l.tailSum(payload)
	if !ok || head < 0 || head > len(payload) {
		return appendWALHdr(buf, seq, payload)
	}
	var h [walHdr]byte
	binary.LittleEndian.PutUint32(h[:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[8:], seq)
	sum := crc32.Update(crc32.Checksum(h[8:16], walCRC), walCRC, payload[:head])
	binary.LittleEndian.PutUint32(h[4:], crc32cCombine(sum, tail, int64(len(payload)-head)))
	return append(buf, h[:]...)
}

// Append's gathering: payloads up to walGatherMax are copied into its
// buffer, bigger ones written from where they are; a buffer up to
// walScratchMax is kept for the next append.
const (
	walGatherMax  = 16 << 10
	walScratchMax = 1 << 20
)

// pwritev writes iov at off, all of it, in as few calls as IOV_MAX allows.
func pwritev(f *os.File, iov [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(iov) > 0 {
		chunk := iov[:min(len(iov), 1024)]
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), chunk, off)
			return true
		}); err != nil {
			return err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return werr
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off += int64(n)
		// Drop what was written, keeping the unwritten rest of a
		// partly written buffer.
		for n > 0 && len(iov) > 0 {
			if n < len(iov[0]) {
				iov[0] = iov[0][n:]
				n = 0
				break
			}
			n -= len(iov[0])
			iov = iov[1:]
		}
	}
	return nil
}

// Range is the oldest and newest seq served (0, 0: empty) and their bytes.
func (l *opLog) Range() (first, last uint64, bytes int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.first, l.last, l.bytes
}

// Append writes the records of ops first.. (payloads[i] is op first+i's)
// in one write. first must be last+1, or anything when the log is empty.
func (l *opLog) Append(first uint64, payloads [][]byte) error {
	if len(payloads) == 0 {
		return nil
	}
	l.mu.RLock()
	empty, last := l.first == 0, l.last
	var tail *walSeg
	if n := len(l.segs); n > 0 {
		tail = l.segs[n-1]
	}
	l.mu.RUnlock()
	if !empty && first != last+1 {
		return fmt.Errorf("appending op %d to an op log that ends at %d", first, last)
	}
	size := 0
	for _, p := range payloads {
		if len(p) > walMaxRec {
			return fmt.Errorf("op %d: a log record of %d bytes is beyond the limit", first, len(p))
		}
		size += walHdr + len(p)
	}
	offs := make([]uint32, len(payloads))
	base := int64(0)
	fresh := tail == nil || tail.size >= l.segMax || tail.size+int64(size+walHdr) > tail.cap ||
		tail.size+int64(size) > 1<<31
	if !fresh {
		base = tail.size
	}
	total := int64(size) // the records, without the end mark
	seg := tail
	if fresh {
		var err error
		if seg, err = l.newSegment(first, total+walHdr); err != nil {
			return err
		}
	}
	// The end mark is padded with zeros to the end of its page (within
	// the file): a write that covers only part of a page the page cache
	// does not hold makes the kernel read that page from the disk first,
	// so every append whose end crossed into a new page waited for a disk
	// read (after the cache was dropped, or in a reused spare). Past the
	// end mark nothing is read.
	end := base + total + walHdr
	pad := max(0, min((end+walPage-1)/walPage*walPage, seg.cap)-end)
	// Headers and small payloads are gathered in one buffer; a big
	// payload (a write's data) goes to the file from where it is, so it
	// is not copied once more on its way (pwritev). The buffer's size is
	// exact: it never moves while iov points into it.
	gathered := walHdr + int(pad) // the end mark
	for _, p := range payloads {
		gathered += walHdr
		if len(p) <= walGatherMax {
			gathered += len(p)
		}
	}
	buf := l.scratch
	if cap(buf) < gathered {
		buf = make([]byte, 0, gathered)
	}
	buf = buf[:0]
	var iov [][]byte
	from, at := 0, base
	for i, p := range payloads {
		offs[i] = uint32(at)
		at += int64(walHdr + len(p))
		buf = l.appendHdr(buf, first+uint64(i), p)
		if len(p) <= walGatherMax {
			buf = append(buf, p...)
			continue
		}
		iov = append(iov, buf[from:], p)
		from = len(buf)
	}
	buf = append(buf, make([]byte, walHdr+int(pad))...) // the end mark
	iov = append(iov, buf[from:])
	if cap(buf) <= walScratchMax {
		l.scratch = buf[:0]
	}
	if err := pwritev(seg.f, iov, base); err != nil {
		if fresh {
			seg.f.Close()
			os.Remove(filepath.Join(l.dir, segName(first)))
		} else {
			seg.f.WriteAt(make([]byte, walHdr), base) // best effort: a reopen cuts what is left anyway
		}
		return fmt.Errorf("appending ops %d-%d to the op log: %w", first, first+uint64(len(payloads))-1, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if fresh {
		l.segs = append(l.segs, seg)
	}
	seg.offs = append(seg.offs, offs...)
	seg.size = base + total
	seg.cap = max(seg.cap, seg.size+walHdr)
	if l.first == 0 {
		l.first = first
	}
	l.last = first + uint64(len(payloads)) - 1
	l.bytes += total
	return nil
}

// TruncateAfter drops every record after seq (records an op that failed
// locally left beyond the applied position, before others replace them).
func (l *opLog) TruncateAfter(seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.first == 0 || seq >= l.last {
		return nil
	}
	if seq < l.first {
		return l.resetLocked()
	}
	for len(l.segs) > 0 {
		s := l.segs[len(l.segs)-1]
		if s.first > seq {
			l.bytes -= s.size
			l.segs = l.segs[:len(l.segs)-1]
			if err := l.retire(s); err != nil {
				return err
			}
			continue
		}
		i := int(seq - s.first + 1) // first record to drop
		cut := int64(s.offs[i])
		if _, err := s.f.WriteAt(make([]byte, walHdr), cut); err != nil {
			return fmt.Errorf("cutting the op log after op %d: %w", seq, err)
		}
		l.bytes -= s.size - cut
		s.offs, s.size = s.offs[:i], cut
		break
	}
	l.last = seq
	return nil
}

// Trim drops the oldest records while there are more than maxOps or
// more than maxBytes of them, but none after limit (ops a recovery may
// still need). Whole segments are removed once nothing in them is served.
func (l *opLog) Trim(maxOps int, maxBytes int64, limit uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.first == 0 {
		return
	}
	si := 0
	for l.first <= limit && l.first <= l.last &&
		(l.last-l.first+1 > uint64(maxOps) || l.bytes > maxBytes) {
		for l.segs[si].last() < l.first {
			si++
		}
		s := l.segs[si]
		i := int(l.first - s.first)
		l.bytes -= s.end(i) - int64(s.offs[i])
		l.first++
	}
	for len(l.segs) > 0 && l.segs[0].last() < l.first {
		s := l.segs[0]
		l.segs = l.segs[1:]
		if err := l.retire(s); err != nil {
			l.log.Warn("could not retire an op log segment", "err", err)
		}
	}
	if l.first > l.last {
		l.first, l.last, l.bytes = 0, 0, 0
	}
}

// Reset empties the log.
func (l *opLog) Reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resetLocked()
}

func (l *opLog) resetLocked() error {
	var errs []error
	for _, s := range l.segs {
		if err := l.retire(s); err != nil {
			errs = append(errs, err)
		}
	}
	l.segs = nil
	l.first, l.last, l.bytes = 0, 0, 0
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("emptying the op log: %w", err)
	}
	return nil
}

// Read returns the payloads of the records from seq on, up to seq `to`
// and about maxBytes (at least one); nil if the log does not hold seq.
func (l *opLog) Read(seq, to uint64, maxBytes int) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.first == 0 || seq < l.first || seq > l.last {
		return nil, nil
	}
	to = min(to, l.last)
	si := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].last() >= seq })
	var out [][]byte
	size := 0
	for ; si < len(l.segs) && seq <= to && (size < maxBytes || len(out) == 0); si++ {
		s := l.segs[si]
		i := int(seq - s.first)
		j := i
		for j < len(s.offs) && s.first+uint64(j) <= to && (size < maxBytes || j == i && len(out) == 0) {
			size += int(s.end(j) - int64(s.offs[j]))
			j++
		}
		from := int64(s.offs[i])
		b := make([]byte, s.end(j-1)-from)
		if _, err := s.f.ReadAt(b, from); err != nil {
			return nil, fmt.Errorf("reading ops %d-%d from the op log: %w", seq, s.first+uint64(j-1), err)
		}
		for k := i; k < j; k++ {
			p, n, err := decodeWALRec(b, s.first+uint64(k))
			if err != nil {
				return nil, fmt.Errorf("op log record %d: %w", s.first+uint64(k), err)
			}
			out = append(out, p)
			b = b[n:]
		}
		seq = s.first + uint64(j)
	}
	return out, nil
}

// Sync makes the log durable (fsync of every segment and the directory),
// for a replica whose file systems a syncfs of its tree does not cover.
func (l *opLog) Sync() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range l.segs {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("syncing the op log: %w", err)
		}
	}
	if err := syncDir(l.dir); err != nil {
		return fmt.Errorf("syncing the op log directory: %w", err)
	}
	return nil
}

// Close closes the segment files.
func (l *opLog) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeAll()
}

func (l *opLog) closeAll() {
	for _, s := range l.segs {
		s.f.Close()
	}
	l.segs = nil
}
