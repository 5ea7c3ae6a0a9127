package replica

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/brickvol/brick/proto/brickpb"
)

// Sentinel errors of a Replica. Branch with errors.Is.
var (
	// ErrStaleEpoch: an op or read carries an epoch below the brick's
	// promise (it comes from a fenced head). The error is a
	// *StaleEpochError. Fatal for a Replicate stream.
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrGap: an op's seq is not applied+1. Fatal for a stream.
	ErrGap = errors.New("sequence gap")
	// ErrLogTruncated: the op log no longer covers the asked position;
	// heal must compare checksums instead.
	ErrLogTruncated = errors.New("op log truncated")
	// ErrClosed: the replica was closed.
	ErrClosed = errors.New("replica closed")
	// ErrLocalFailure: an op could not be applied for a reason of this
	// brick's own (disk full, I/O error): it is not applied, the stream
	// must end and the brick leave the ISR. The op may be half done; if
	// the same op is sent again it is finished idempotently.
	ErrLocalFailure = errors.New("brick failed to apply an op")
	// ErrCorrupt: meta.db or the op log is damaged (possible after a
	// power loss, see the package doc). OpenReplica moves such bookkeeping
	// aside; the replica must then be rebuilt by a full heal.
	ErrCorrupt = errors.New("replica bookkeeping corrupt")
	// ErrInvalid: a malformed request (missing reference, bad size).
	ErrInvalid = errors.New("invalid request")
)

// StaleEpochError is the ErrStaleEpoch refusal, with both epochs.
type StaleEpochError struct{ Epoch, Promise uint64 }

func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("fenced: epoch %d is older than the brick's promise %d", e.Epoch, e.Promise)
}

// Is makes errors.Is(err, ErrStaleEpoch) hold.
func (e *StaleEpochError) Is(target error) bool { return target == ErrStaleEpoch }

// ReplicaOptions tunes a Replica; the zero value means the defaults.
type ReplicaOptions struct {
	// MaxLogBytes bounds the op log by the size of its records (default
	// 64 MiB); MaxLogOps by their number (default 1<<20). The oldest
	// applied ops are dropped first.
	MaxLogBytes int64
	MaxLogOps   int
	// FDCacheSize is how many directory and file descriptors stay open
	// (default 256).
	FDCacheSize int
	// WritebackWindow is the unit in which a long sequential write is
	// handed to writeback and then dropped from the page cache
	// (dropBehind; default 8 MiB, negative: never).
	WritebackWindow int64
	// DirectWriteMin is the size from which a write aligned to 4 KiB
	// goes to the disk with O_DIRECT instead of through the page cache
	// (writeDirect; 0 or negative, the default: never).
	DirectWriteMin int64
	// SpareFiles is how many emptied inodes of deleted files are kept in
	// spare/ for new files to reuse (spares.go; default 16384, negative:
	// none).
	SpareFiles int
	// Logger receives recovery and failure reports (default: discarded).
	Logger *slog.Logger
}

// Validate names the first bad field.
func (o ReplicaOptions) Validate() error {
	switch {
	case o.MaxLogBytes < 0:
		return fmt.Errorf("ReplicaOptions.MaxLogBytes is %d, want >= 0", o.MaxLogBytes)
	case o.MaxLogOps < 0:
		return fmt.Errorf("ReplicaOptions.MaxLogOps is %d, want >= 0", o.MaxLogOps)
	case o.FDCacheSize < 0:
		return fmt.Errorf("ReplicaOptions.FDCacheSize is %d, want >= 0", o.FDCacheSize)
	}
	return nil
}

func (o ReplicaOptions) withDefaults() ReplicaOptions {
	if o.MaxLogBytes == 0 {
		o.MaxLogBytes = 64 << 20
	}
	if o.MaxLogOps == 0 {
		o.MaxLogOps = 1 << 20
	}
	if o.FDCacheSize == 0 {
		o.FDCacheSize = 256
	}
	if o.WritebackWindow == 0 {
		o.WritebackWindow = 8 << 20
	}
	if o.SpareFiles == 0 {
		o.SpareFiles = 16384
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// Replica is one volume's replica on one brick (see the package doc for
// the layout and the crash rules). Apply, Sync, Fence and ChunkSums are
// serialised among themselves; Meta, Read, OpsSince and State run
// concurrently with them and with each other. All methods are safe for
// concurrent use.
type Replica struct {
	dir    string
	opts   ReplicaOptions
	log    *slog.Logger
	db     *bolt.DB
	dataFD int // data/, the root directory (fid 1)
	fidsFD int // fids/
	fds    *fdCache

	applyMu  sync.Mutex // serialises Apply, Sync, Fence, commits, Close
	logArena []byte     // logOps' encoding buffer, kept between batches (applyMu)
	// Guarded by applyMu.
	intent     intentRec                // of the last exact op started
	failed     *brickpb.Op              // the op that failed locally, possibly half done
	logFirst   uint64                   // oldest seq in the op log, 0: empty (also under mu)
	logLast    uint64                   // newest seq in the op log (also under mu)
	logBytes   int64                    // (also under mu)
	sumDrops   map[uint64][]chunkRange  // checksums made stale since the last commit
	sumPuts    map[[2]uint64]sumVal     // (fid, chunk) -> checksums computed since then
	watch      map[uint64]*chunkWatch   // fids whose checksums are being computed
	hook       func(point string) error // tests: crash injection, nil otherwise
	runs       map[uint64]*writeRun     // sequential write runs (dropBehind)
	runClock   uint64                   // ages runs, for evicting the oldest
	noDirect   bool                     // the file system refused O_DIRECT (writeDirect)
	alignedBuf []byte                   // writeDirect's buffer for unaligned data
	wal        *opLog                   // the op log (wal.go)
	spares     *spares                  // emptied inodes for creates (spares.go)
	// committedApplied is the applied position meta.db holds: the log
	// keeps every op after it (a recovery replays them). sinceCommit
	// counts the log bytes appended after it.
	committedApplied uint64
	sinceCommit      int64
	// metaWithTree: meta.db is on the tree's file system, so one syncfs
	// makes both durable (set at open).
	metaWithTree bool
	// What the next barrier must flush (syncLocked): the regular files
	// that convergent ops changed since the last flush, or the whole
	// file system (flushAll) once anything else changed: the namespace,
	// a directory, meta.db (a NoSync commit), or more than maxFlushFiles
	// files. Guarded by applyMu.
	flushFiles map[uint64]struct{}
	flushAll   bool
	// fileSyncs and fsSyncs count the barriers of each kind (tests).
	fileSyncs, fsSyncs int

	mu           sync.Mutex // guards the fields below; never held across I/O
	applied      uint64
	appliedEpoch uint64
	// used is the sum of the sizes of the regular files in fids/ (every
	// regular file until OP_FORGET), kept by step; counted afresh by
	// every open.
	used     int64
	synced   uint64
	promised uint64
	maxFID   uint64
	suspect  string
	closed   bool
	progress chan struct{}      // closed and cleared when applied moves or on Close
	pendDirs map[uint64]*dirRec // directory map changes not yet in meta.db; nil: removed
	readers  sync.WaitGroup
}

// bootID identifies the running kernel; a variable so tests can fake a
// reboot.
var bootID = func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// OpenReplica opens the replica in dir, creating data/ (the root directory,
// fid 1, mode 0755, owner 0:0), fids/ and meta.db if missing. After an
// unclean shutdown it finishes the ops its log holds beyond the applied
// position (see the package doc) before returning. A replica is opened by
// one Replica at a time (meta.db is locked).
//
// Bookkeeping found damaged (ErrCorrupt: meta.db torn by a power loss, or
// its op log unreadable) is moved aside, not deleted (a full heal, which
// replaces the whole directory, removes it): meta.db and oplog/ are
// renamed with a ".corrupt-TIME" suffix, and the replica opens as a
// tree without its meta.db does: indexed from its tags, suspect, with no
// position, so a full heal rebuilds it (or, if every in-sync replica is
// in that state, a new head may adopt it). Refusing to open would leave
// the brick unable even to be resynced.
func OpenReplica(dir string, opts ReplicaOptions) (*Replica, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	r, err := openReplica(dir, opts)
	if !errors.Is(err, ErrCorrupt) {
		return r, err
	}
	moved, qerr := quarantine(dir, time.Now())
	if qerr != nil {
		return nil, fmt.Errorf("%w; moving the bookkeeping aside: %w", err, qerr)
	}
	opts.Logger.Error("replica bookkeeping damaged: moved it aside; the replica is rebuilt from its tree and needs a full heal",
		"replica", dir, "err", err, "moved", moved)
	return openReplica(dir, opts)
}

// quarantine renames a replica's meta.db and oplog/ out of the way,
// returning the new names.
func quarantine(dir string, now time.Time) ([]string, error) {
	suffix := ".corrupt-" + now.UTC().Format("20060102T150405.000000000Z")
	var moved []string
	for _, name := range []string{"meta.db", walDirName} {
		from := filepath.Join(dir, name)
		if _, err := os.Lstat(from); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.Rename(from, from+suffix); err != nil {
			return moved, err
		}
		moved = append(moved, from+suffix)
	}
	return moved, nil
}

func openReplica(dir string, opts ReplicaOptions) (*Replica, error) {
	r := &Replica{
		dir: dir, opts: opts, log: opts.Logger.With("replica", dir),
		dataFD: -1, fidsFD: -1, spares: &spares{fd: -1},
		fds: newFDCache(opts.FDCacheSize), runs: map[uint64]*writeRun{},
		sumDrops: map[uint64][]chunkRange{}, sumPuts: map[[2]uint64]sumVal{},
		watch: map[uint64]*chunkWatch{}, pendDirs: map[uint64]*dirRec{},
		flushFiles: map[uint64]struct{}{}, flushAll: true,
	}
	if err := r.open(); err != nil {
		r.release()
		return nil, fmt.Errorf("opening replica %s: %w", dir, err)
	}
	return r, nil
}

func (r *Replica) open() error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	data := filepath.Join(r.dir, "data")
	fresh := false
	if err := os.Mkdir(data, 0o755); err == nil {
		fresh = true
	} else if !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Mkdir(filepath.Join(r.dir, "fids"), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	var err error
	if r.dataFD, err = openat(unix.AT_FDCWD, data, oDir, 0); err != nil {
		return fmt.Errorf("opening %s: %w", data, err)
	}
	if r.fidsFD, err = openat(unix.AT_FDCWD, filepath.Join(r.dir, "fids"), oDir, 0); err != nil {
		return fmt.Errorf("opening fids/: %w", err)
	}
	if r.spares, err = openSpares(r.dir, r.opts.SpareFiles); err != nil {
		return err
	}
	if fresh {
		if err := unix.Fchmod(r.dataFD, 0o755); err != nil {
			return err
		}
		if os.Geteuid() == 0 {
			if err := unix.Fchown(r.dataFD, 0, 0); err != nil {
				return err
			}
		}
	}
	if fid, err := fidOfFD(r.dataFD); err != nil || fid != rootFID {
		if err := setFIDFD(r.dataFD, rootFID); err != nil {
			return fmt.Errorf("marking data/ as the root: %w", err)
		}
	}
	r.db, err = bolt.Open(filepath.Join(r.dir, "meta.db"), 0o600, &bolt.Options{
		Timeout: 2 * time.Second, NoSync: true, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType, InitialMmapSize: 1 << 30,
	})
	if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) ||
		errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrInvalidMapping) {
		return fmt.Errorf("%w: opening meta.db: %w", ErrCorrupt, err)
	}
	if err != nil {
		return fmt.Errorf("opening meta.db: %w", err)
	}
	// syncfs flushes meta.db with the tree only when both are on one
	// file system (a bind mount could split them).
	var dst, mst unix.Stat_t
	if err := unix.Fstat(r.dataFD, &dst); err != nil {
		return fmt.Errorf("stat of data/: %w", err)
	}
	if err := unix.Stat(filepath.Join(r.dir, "meta.db"), &mst); err != nil {
		return fmt.Errorf("stat of meta.db: %w", err)
	}
	r.metaWithTree = dst.Dev == mst.Dev
	clean, prevBoot, newDB, err := r.load()
	if err != nil {
		return err
	}
	if err := r.openLog(); err != nil {
		return err
	}
	if !clean {
		if err := r.recover(prevBoot); err != nil {
			return err
		}
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if ents, err := listDir(r.dataFD); err == nil && newDB && len(ents) > 0 {
		r.setSuspect("data/ was found without its meta.db: position and op log are lost; needs a full heal")
		if err := r.rebuildIndex(); err != nil {
			return err
		}
	}
	if err := r.countUsed(); err != nil {
		return err
	}
	return r.commit(true, func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if err := m.Put(keyClean, []byte{0}); err != nil {
			return err
		}
		return m.Put(keyBoot, []byte(bootID()))
	})
}

// load creates the buckets if needed and reads the counters.
func (r *Replica) load() (clean bool, boot string, newDB bool, err error) {
	defer func() {
		// bbolt panics on some damaged pages rather than failing.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: reading meta.db: %v", ErrCorrupt, p)
		}
	}()
	err = r.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketDirs, bucketLog, bucketSums} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keyFormat); v == nil {
			newDB = true
			if err := m.Put(keyFormat, u64Key(metaFormat)); err != nil {
				return err
			}
			if err := m.Put(keyClean, []byte{1}); err != nil {
				return err
			}
		} else if f, err := decodeU64(v); err != nil {
			return fmt.Errorf("%w: meta.db format %x", ErrCorrupt, v)
		} else if f != metaFormat {
			// Another brickd version's, not damage: never moved aside.
			return fmt.Errorf("meta.db format %d, this brickd reads format %d only", f, metaFormat)
		}
		for _, c := range []struct {
			key []byte
			dst *uint64
		}{{keyApplied, &r.applied}, {keyAppliedEpoch, &r.appliedEpoch}, {keySynced, &r.synced},
			{keyPromised, &r.promised}, {keyMaxFID, &r.maxFID}} {
			if v := m.Get(c.key); v != nil {
				n, err := decodeU64(v)
				if err != nil {
					return fmt.Errorf("%w: %s: %w", ErrCorrupt, c.key, err)
				}
				*c.dst = n
			}
		}
		if v := m.Get(keyIntent); v != nil {
			in, err := decodeIntent(v)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrCorrupt, err)
			}
			r.intent = in
		}
		clean = bytes.Equal(m.Get(keyClean), []byte{1})
		boot = string(m.Get(keyBoot))
		r.suspect = string(m.Get(keySuspect))
		r.committedApplied = r.applied
		return nil
	})
	return clean, boot, newDB, err
}

// recover runs after an unclean shutdown: it finishes the logged ops
// beyond the applied position, the first of them in redo mode when its
// intent was recorded. After a reboot (a power loss, maybe) it also checks
// meta.db and marks the replica suspect.
func (r *Replica) recover(prevBoot string) error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if prevBoot == "" || prevBoot != bootID() {
		if err := r.db.View(func(tx *bolt.Tx) error {
			var first error
			for err := range tx.Check() { // drain: Check runs in its own goroutine
				if first == nil {
					first = fmt.Errorf("%w: %w", ErrCorrupt, err)
				}
			}
			return first
		}); err != nil {
			return err
		}
		r.setSuspect(fmt.Sprintf("unclean shutdown across a reboot: the tree may differ from applied seq %d "+
			"(only synced seq %d is certain); needs a full heal", r.applied, r.synced))
		if err := r.rebuildIndex(); err != nil {
			return err
		}
		if err := r.db.Update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket(bucketSums); err != nil {
				return err
			}
			_, err := tx.CreateBucket(bucketSums)
			return err
		}); err != nil {
			return err
		}
	}
	first := r.applied + 1
	r.log.Warn("recovering after an unclean shutdown", "applied", r.applied, "logged", r.logLast,
		"intent", r.intent.seq)
	for seq := first; seq <= r.logLast && seq >= first; seq++ {
		op, err := r.logged(seq)
		if err != nil {
			return err
		}
		if op == nil {
			break
		}
		redo := seq == first && r.intent.seq == seq
		if _, err := r.step(op, redo, false); err != nil {
			r.failed = op
			r.log.Error("recovery stopped: the brick cannot apply a logged op", "seq", seq, "err", err)
			break
		}
	}
	if r.Suspect() == "" {
		// Same boot: the page cache kept everything the process wrote,
		// and this makes it durable, so the synced position (which
		// barriers do not commit, see syncLocked) is the applied one.
		if _, err := r.syncLocked(true); err != nil {
			return err
		}
	}
	return r.commit(false, nil)
}

// setSuspect records (in memory now, in meta.db at the next commit) that
// the tree may not be exactly the state at the applied position.
func (r *Replica) setSuspect(why string) {
	r.log.Error("replica needs a full heal", "why", why)
	r.mu.Lock()
	r.suspect = why
	r.mu.Unlock()
}

// Suspect says why the replica's tree may differ from its applied
// position (after a power loss, a tampered tree, or a half-applied op that
// was replaced by a different one), or "" when it does not. A suspect
// replica must be repaired by a full heal (checksum and tree comparison)
// before it rejoins an ISR; ClearSuspect records that it was.
func (r *Replica) Suspect() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.suspect
}

// ClearSuspect records, durably, that a full heal made the tree match the
// applied position.
func (r *Replica) ClearSuspect() error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.Lock()
	r.suspect = ""
	r.mu.Unlock()
	return r.commit(true, nil)
}

// commit writes the counters and the pending directory map and checksum
// changes to meta.db in one transaction, plus extra. durable makes it a
// synced commit (which also makes every earlier NoSync commit durable).
// Caller holds applyMu.
func (r *Replica) commit(durable bool, extra func(*bolt.Tx) error) error {
	r.mu.Lock()
	counters := [][2][]byte{
		{keyApplied, u64Key(r.applied)}, {keyAppliedEpoch, u64Key(r.appliedEpoch)},
		{keySynced, u64Key(r.synced)}, {keyPromised, u64Key(r.promised)},
		{keyMaxFID, u64Key(r.maxFID)},
	}
	applied := r.applied
	suspect := r.suspect
	dirs := make(map[uint64]*dirRec, len(r.pendDirs))
	for k, v := range r.pendDirs {
		dirs[k] = v
	}
	r.mu.Unlock()
	if durable {
		r.db.NoSync = false
		defer func() { r.db.NoSync = true }()
	} else {
		r.flushAll = true // only a syncfs makes this commit durable
	}
	err := r.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		for _, kv := range counters {
			if err := m.Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		if suspect != "" {
			if err := m.Put(keySuspect, []byte(suspect)); err != nil {
				return err
			}
		} else if err := m.Delete(keySuspect); err != nil {
			return err
		}
		db := tx.Bucket(bucketDirs)
		for fid, d := range dirs {
			var err error
			if d == nil {
				err = db.Delete(u64Key(fid))
			} else {
				err = db.Put(u64Key(fid), encodeDirRec(*d))
			}
			if err != nil {
				return err
			}
		}
		if err := r.flushSums(tx); err != nil {
			return err
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("committing meta.db: %w", err)
	}
	r.committedApplied, r.sinceCommit = applied, 0
	r.mu.Lock()
	for k, v := range dirs {
		if r.pendDirs[k] == v {
			delete(r.pendDirs, k)
		}
	}
	r.mu.Unlock()
	return nil
}

// State reports the replica's position: the last applied seq, the last
// synced seq, the epoch promise and the highest file ID.
// Usage is the sum of the sizes of the replica's regular files and the
// applied seq it is true at.
func (r *Replica) Usage() (used int64, applied uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used, r.applied
}

// countUsed sums the sizes of the regular files in fids/.
func (r *Replica) countUsed() error {
	ents, err := listDir(r.fidsFD)
	if err != nil {
		return fmt.Errorf("%w: counting usage: %w", ErrLocalFailure, err)
	}
	var used int64
	for _, e := range ents {
		if st, err := lstatAt(r.fidsFD, e.name); err == nil && isReg(&st) {
			used += st.Size
		}
	}
	r.mu.Lock()
	r.used = used
	r.mu.Unlock()
	return nil
}

// fidSize is the size of regular file fid, or -1 (not one, or gone).
func (r *Replica) fidSize(fid uint64) int64 {
	st, err := lstatAt(r.fidsFD, fidName(fid))
	if err != nil || !isReg(&st) {
		return -1
	}
	return st.Size
}

func (r *Replica) State() (applied, synced, promised, maxFID uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied, r.synced, r.promised, r.maxFID
}

// Fence raises the epoch promise to epoch (durably, before returning);
// a lower epoch leaves it unchanged. Either way it reports the replica's
// position, which a new head uses to pick the source of a catch-up.
func (r *Replica) Fence(epoch uint64) (*brickpb.FenceResponse, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	old := r.promised
	raise := epoch > old
	if raise {
		r.promised = epoch
	}
	r.mu.Unlock()
	if raise {
		if err := r.commit(true, nil); err != nil {
			r.mu.Lock()
			r.promised = old
			r.mu.Unlock()
			return nil, fmt.Errorf("fencing at epoch %d: %w", epoch, err)
		}
		r.log.Info("fenced", "epoch", epoch, "previous", old)
	}
	return r.fenceResponse(), nil
}

// fenceResponse reports the replica's position. Caller holds applyMu.
func (r *Replica) fenceResponse() *brickpb.FenceResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &brickpb.FenceResponse{
		PromisedEpoch: r.promised, AppliedEpoch: r.appliedEpoch, AppliedSeq: r.applied,
		SyncedSeq: r.synced, MaxFid: r.maxFID, LogFirstSeq: r.logFirst, NeedsFullHeal: r.suspect, UsedBytes: r.used,
	}
}

// MaxAdoptReason bounds the reason Adopt records.
const MaxAdoptReason = 1024

// Adopt takes a suspect replica's tree as the volume's contents at its
// applied position, for a head at epoch (the replica's promise) that found
// every in-sync replica suspect: after a power loss of all of them, each
// still holds every fsync acknowledged before it (design.md promise 1),
// and no better copy exists. It flushes the tree (so synced reaches
// applied), clears the suspicion durably and logs why, and reports the
// position. A replica that is not suspect is left as it is.
func (r *Replica) Adopt(epoch uint64, why string) (*brickpb.FenceResponse, error) {
	if why == "" || len(why) > MaxAdoptReason {
		return nil, fmt.Errorf("%w: adopt reason of %d bytes, want 1 to %d", ErrInvalid, len(why), MaxAdoptReason)
	}
	if epoch == 0 {
		return nil, fmt.Errorf("%w: adopt at epoch 0: heads start at 1", ErrInvalid)
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	promised, was := r.promised, r.suspect
	r.mu.Unlock()
	switch {
	case epoch < promised:
		return nil, &StaleEpochError{Epoch: epoch, Promise: promised}
	case epoch > promised:
		return nil, fmt.Errorf("%w: adopt at epoch %d, but the replica is fenced at %d only: fence first", ErrInvalid, epoch, promised)
	case was == "":
		return r.fenceResponse(), nil
	}
	if _, err := r.syncLocked(true); err != nil {
		return nil, fmt.Errorf("adopting the replica: %w", err)
	}
	r.mu.Lock()
	r.suspect = ""
	r.mu.Unlock()
	if err := r.commit(true, nil); err != nil {
		r.mu.Lock()
		r.suspect = was
		r.mu.Unlock()
		return nil, fmt.Errorf("adopting the replica: %w", err)
	}
	// An op its recovery could not finish is part of the tree as it
	// stands now, like any write never fsync'd: the new head's op at that
	// seq is a new op, not a different one in its place.
	r.failed = nil
	resp := r.fenceResponse()
	r.log.Warn("adopted a suspect replica as the volume's contents", "why", why, "was_suspect", was,
		"epoch", epoch, "applied", resp.AppliedSeq)
	return resp, nil
}

// Sync makes every applied op durable and returns the synced seq. It is
// what OP_SYNC does: an fsync of each file changed since the last flush
// when only a few files' data or attributes changed, else one syncfs of
// the brick file system (syncLocked).
func (r *Replica) Sync() (uint64, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if err := r.checkOpen(); err != nil {
		return 0, err
	}
	return r.syncLocked(false)
}

// maxFlushFiles is the most files a barrier fsyncs one by one; past it a
// syncfs costs less. Each fsync ends in a flush of the disk's cache.
const maxFlushFiles = 2

// noteFlush records what op changes for the next barrier. Caller holds
// applyMu.
func (r *Replica) noteFlush(op *brickpb.Op) {
	if r.flushAll {
		return
	}
	switch op.Type {
	case brickpb.OpType_OP_WRITE, brickpb.OpType_OP_TRUNCATE, brickpb.OpType_OP_FALLOCATE,
		brickpb.OpType_OP_SETATTR, brickpb.OpType_OP_REMOVEXATTR:
	case brickpb.OpType_OP_SETXATTR:
		if exactOp(op) {
			r.flushAll = true
			return
		}
	default:
		r.flushAll = true
		return
	}
	r.flushFiles[op.Fid] = struct{}{}
	if len(r.flushFiles) > maxFlushFiles {
		r.flushAll = true
	}
}

// syncLocked makes everything applied durable. full insists on a syncfs
// (Close, recovery), even with nothing applied since the last barrier:
// barriers that fsynced files left the op log and meta.db to the page
// cache, and a replica closed clean must find its log whole after a
// reboot.
func (r *Replica) syncLocked(full bool) (uint64, error) {
	r.mu.Lock()
	target, old := r.applied, r.synced
	r.mu.Unlock()
	if target == old && !full {
		return old, nil
	}
	// The barrier's promise is the tree (design.md promise 1: the data
	// is on the disk). When only convergent ops on a few regular files
	// ran since the last flush, and meta.db took no commit since, an
	// fsync of each of those files keeps it; the op log and meta.db are
	// not flushed. They matter only for a recovery: on the same boot the
	// page cache still holds them, and after a reboot the replica is
	// suspect and healed in full from a brick that stayed up (package
	// doc, rule 5). With three bricks on one disk an fsync took 235–258 µs
	// where a syncfs, which also writes the log's pages, took 427–479 µs.
	done := false
	if !full && !r.flushAll && r.metaWithTree {
		var err error
		if done, err = r.fsyncFiles(); err != nil {
			return old, err
		}
	}
	if done {
		r.fileSyncs++
	} else {
		if err := r.syncAll(); err != nil {
			return old, err
		}
		r.fsSyncs++
	}
	clear(r.flushFiles)
	r.flushAll = false
	r.mu.Lock()
	r.synced = target
	r.mu.Unlock()
	if !r.metaWithTree {
		if err := r.commit(true, nil); err != nil {
			r.mu.Lock()
			r.synced = old
			r.mu.Unlock()
			return old, fmt.Errorf("%w: %w", ErrLocalFailure, err)
		}
	}
	return target, nil
}

// fsyncFiles fsyncs each file in flushFiles. It reports false when a
// file cannot be opened as a regular file (the barrier then falls back to
// syncfs), and fails only when an fsync does: the data may be lost.
func (r *Replica) fsyncFiles() (bool, error) {
	for fid := range r.flushFiles {
		o, err := r.fileFD(fid)
		if err != nil {
			return false, nil
		}
		err = retry(func() error { return unix.Fsync(o.fd) })
		o.release()
		if err != nil {
			return false, fmt.Errorf("%w: fsync of file %d: %w", ErrLocalFailure, fid, err)
		}
	}
	return true, nil
}

// syncAll flushes the whole brick file system: the tree, the op log and
// meta.db's NoSync commits before it, complete (commits run under
// applyMu). The synced counter is not committed here: it reaches meta.db
// with the next commit and the disk with the flush after, so on disk it
// may lag (a power loss then under-reports it; the replica is suspect
// then anyway), never lead the tree. A crash of the process on the same
// boot loses nothing the page cache held, and the recovery syncs again
// (recover). A synced meta.db commit (two fdatasyncs) after the syncfs
// made each barrier cost each brick three flushes of the disk, and a
// NoSync one a tenth of its time.
func (r *Replica) syncAll() error {
	if err := retry(func() error { return unix.Syncfs(r.dataFD) }); err != nil {
		return fmt.Errorf("%w: syncfs: %w", ErrLocalFailure, err)
	}
	if !r.metaWithTree {
		if err := r.wal.Sync(); err != nil {
			return fmt.Errorf("%w: %w", ErrLocalFailure, err)
		}
	}
	return nil
}

func (r *Replica) checkOpen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	return nil
}

// enter registers a reader; Close waits for readers to leave.
func (r *Replica) enter() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.readers.Add(1)
	return nil
}

func (r *Replica) exit() { r.readers.Done() }

// Close syncs the replica, marks it cleanly shut down and releases it.
// Waiting readers return ErrClosed.
func (r *Replica) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	if r.progress != nil {
		close(r.progress)
		r.progress = nil
	}
	r.mu.Unlock()
	r.readers.Wait() // before applyMu: a reader (ChunkSums) may be waiting for it
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	_, err := r.syncLocked(true)
	if err == nil {
		err = r.commit(true, func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyClean, []byte{1})
		})
	}
	r.release()
	return err
}

// release closes descriptors and meta.db without writing anything.
func (r *Replica) release() {
	r.fds.closeAll()
	r.spares.close()
	for _, fd := range []*int{&r.dataFD, &r.fidsFD} {
		if *fd >= 0 {
			closeFD(*fd)
			*fd = -1
		}
	}
	if r.db != nil {
		_ = r.db.Close()
		r.db = nil
	}
	if r.wal != nil {
		r.wal.Close()
		r.wal = nil
	}
}

// Dir is the replica's directory.
func (r *Replica) Dir() string { return r.dir }
