package replica

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"golang.org/x/sys/unix"

	bolt "go.etcd.io/bbolt"

	"github.com/brickvol/brick/proto/brickpb"
)

// scanSlice bounds how much of the log one read transaction collects.
const scanSlice = 4 << 20

// logArenaMax bounds the arena logOps keeps between batches.
const logArenaMax = 4 << 20

// logOps writes ops (validated, contiguous from applied+1) to the op log
// before any of them touches the tree (one append to the log's segment
// files, wal.go) and, when intent is not nil, commits the applied position
// and intent (the first op's, see step) to meta.db. Records beyond the
// applied position (left by an op that failed locally) are replaced, and
// the oldest records beyond the bounds are dropped, none after meta.db's
// applied position (a recovery replays from there). Caller holds applyMu.
func (r *Replica) logOps(ops []*brickpb.Op, intent *intentRec) error {
	// The records are encoded into one arena, kept between batches (ops
	// are logged one batch at a time, under applyMu), so a write's data
	// is not also zeroed by a fresh allocation on its way to the log.
	encoded := make([][]byte, len(ops))
	size, want := 0, 0
	for _, op := range ops {
		want += 5 + proto.Size(op)
	}
	arena := r.logArena
	if cap(arena) < want {
		arena = make([]byte, 0, want)
	}
	arena = arena[:0]
	for i, op := range ops {
		out, err := appendLogRec(arena, op)
		if err != nil {
			return err
		}
		encoded[i] = out[len(arena):len(out):len(out)]
		arena = out
		size += walHdr + len(encoded[i])
	}
	if cap(arena) <= logArenaMax {
		r.logArena = arena[:0]
	}
	r.mu.Lock()
	applied := r.applied
	r.mu.Unlock()
	err := r.wal.TruncateAfter(applied)
	if _, last, _ := r.wal.Range(); err == nil && last != 0 && last != applied {
		// A log that stops short of the applied position cannot be
		// continued (openLog drops such a log; this is a safety net).
		r.log.Warn("the op log ends before the applied position: starting it afresh", "log_last", last, "applied", applied)
		err = r.wal.Reset()
	}
	if err == nil {
		err = r.wal.Append(ops[0].Seq, encoded)
	}
	if err != nil {
		r.publishLog()
		return fmt.Errorf("%w: writing the op log: %w", ErrLocalFailure, err)
	}
	r.sinceCommit += int64(size)
	r.wal.Trim(r.opts.MaxLogOps, r.opts.MaxLogBytes, min(applied, r.committedApplied))
	r.publishLog()
	if intent != nil {
		if err := r.commit(false, func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyIntent, encodeIntent(*intent))
		}); err != nil {
			return fmt.Errorf("%w: op %d: %w", ErrLocalFailure, ops[0].Seq, err)
		}
		r.intent = *intent
	}
	return nil
}

// publishLog copies the log's range to the fields State and Fence report.
func (r *Replica) publishLog() {
	first, last, bytes := r.wal.Range()
	r.mu.Lock()
	r.logFirst, r.logLast, r.logBytes = first, last, bytes
	r.mu.Unlock()
}

// openLog opens the op log (wal.go), moves the records of a log kept in
// meta.db by an earlier version into it, and drops a log that cannot
// follow the applied position meta.db holds (possible only after a power
// loss, which makes the replica suspect anyway). Caller: open.
func (r *Replica) openLog() error {
	segMax := min(max(r.opts.MaxLogBytes/8, 1<<20), 16<<20)
	var err error
	if r.wal, err = openOpLog(r.dir, segMax, r.log); err != nil {
		return err
	}
	var dst, lst unix.Stat_t
	if err := unix.Fstat(r.dataFD, &dst); err != nil {
		return fmt.Errorf("stat of data/: %w", err)
	}
	if err := unix.Stat(r.wal.dir, &lst); err != nil {
		return fmt.Errorf("stat of the op log directory: %w", err)
	}
	r.metaWithTree = r.metaWithTree && dst.Dev == lst.Dev
	if err := r.migrateLog(); err != nil {
		return err
	}
	// From here on the log takes records logOps has just encoded, whose
	// own checksums are right by construction; migrated ones were
	// checksummed whole, so damage in them is found where it is.
	r.wal.tailSum = logRecTail
	first, last, _ := r.wal.Range()
	if first != 0 && (last < r.applied || first > r.applied+1) {
		r.log.Warn("the op log does not reach meta.db's applied position: dropping it",
			"log_first", first, "log_last", last, "applied", r.applied)
		if err := r.wal.Reset(); err != nil {
			return err
		}
	}
	r.wal.Trim(r.opts.MaxLogOps, r.opts.MaxLogBytes, r.applied)
	r.publishLog()
	return nil
}

// migrateLog moves the records of the op log bucket in meta.db (before
// the log had files of its own) into the log's files, durably, then
// empties the bucket. A crash in between finds the bucket whole and
// starts over.
func (r *Replica) migrateLog() error {
	var n int
	if err := r.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketLog).Stats().KeyN
		return nil
	}); err != nil || n == 0 {
		return err
	}
	if err := r.wal.Reset(); err != nil {
		return err
	}
	err := r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		c := b.Cursor()
		var batch [][]byte
		var first uint64
		flush := func() error {
			err := r.wal.Append(first, batch)
			batch = nil
			return err
		}
		for k, v := c.First(); k != nil; k, v = c.Next() {
			seq, err := decodeU64(k)
			if err != nil {
				return fmt.Errorf("%w: op log key: %w", ErrCorrupt, err)
			}
			if v == nil {
				v = getLogRec(b, k)
			}
			switch _, last, _ := r.wal.Range(); {
			case len(batch) > 0 && seq != first+uint64(len(batch)),
				len(batch) == 0 && last != 0 && seq != last+1:
				// Logs of that version can have holes: only the run
				// after the last one is worth keeping.
				r.log.Warn("the op log in meta.db has a hole: keeping only the records after it", "at", seq)
				batch = nil
				if err := r.wal.Reset(); err != nil {
					return err
				}
			}
			if len(batch) == 0 {
				first = seq
			}
			batch = append(batch, append([]byte(nil), v...))
			if len(batch) >= 1024 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if len(batch) > 0 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = r.wal.Sync()
	}
	if err != nil {
		return fmt.Errorf("moving the op log out of meta.db: %w", err)
	}
	r.db.NoSync = false
	defer func() { r.db.NoSync = true }()
	if err := r.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketLog); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketLog); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(keyLogBytes)
	}); err != nil {
		return fmt.Errorf("emptying the op log bucket of meta.db: %w", err)
	}
	r.log.Info("moved the op log out of meta.db into its own files", "records", n)
	return nil
}

// An earlier version kept the log in meta.db's bucketLog, records of
// bigRec bytes and more in a nested bucket of their own under recKey;
// migrateLog reads them with getLogRec.
const bigRec = 2048

var recKey = []byte("r")

// getLogRec returns the record at k, inline or in its own bucket; nil if
// there is none.
func getLogRec(b *bolt.Bucket, k []byte) []byte {
	if v := b.Get(k); v != nil {
		return v
	}
	if nb := b.Bucket(k); nb != nil {
		return nb.Get(recKey)
	}
	return nil
}

// logged returns the logged op seq, or nil if the log does not hold it.
func (r *Replica) logged(seq uint64) (*brickpb.Op, error) {
	recs, err := r.wal.Read(seq, seq, 1)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	op, err := decodeLogRec(seq, recs[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return op, nil
}

// ScanOps calls fn with every op after seq `after` up to the applied
// position at the time of the call, in order, stopping at fn's first
// error. It fails with ErrLogTruncated when the log no longer holds
// after+1 (also mid-scan, if the log is trimmed meanwhile), and with ErrGap
// when after is beyond the applied position. The log is read in slices of
// about scanSlice bytes, so a slow fn never holds the log. The ops passed
// to fn are fn's to keep.
func (r *Replica) ScanOps(after uint64, fn func(*brickpb.Op) error) error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	r.mu.Lock()
	applied := r.applied
	r.mu.Unlock()
	if after > applied {
		return fmt.Errorf("%w: asked for the ops after %d, but only %d are applied", ErrGap, after, applied)
	}
	next := after + 1
	for next <= applied {
		if err := r.enter(); err != nil { // per slice: a slow fn never holds Close off
			return err
		}
		recs, err := r.wal.Read(next, applied, scanSlice)
		r.exit()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if len(recs) == 0 {
			return fmt.Errorf("%w: op %d is no longer in the log", ErrLogTruncated, next)
		}
		for _, v := range recs {
			op, err := decodeLogRec(next, v)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrCorrupt, err)
			}
			if err := fn(op); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

// OpsSince returns the logged ops after seq up to the applied position
// (see ScanOps for the errors). It holds them all in memory; a server
// should stream with ScanOps instead.
func (r *Replica) OpsSince(seq uint64) ([]*brickpb.Op, error) {
	var ops []*brickpb.Op
	err := r.ScanOps(seq, func(op *brickpb.Op) error {
		ops = append(ops, op)
		return nil
	})
	return ops, err
}

// LogRange is the range of ops the op log holds (first 0: empty).
func (r *Replica) LogRange() (first, last uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logFirst, r.logLast
}
