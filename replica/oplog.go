package replica

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/brickvol/brick/proto/brickpb"
)

// scanSlice bounds how much of the log one read transaction collects.
const scanSlice = 4 << 20

// logOps writes ops (validated, contiguous from applied+1) to the op log
// before any of them touches the tree, in one NoSync commit with the
// counters and, when not nil, intent (the first op's, see step). Records
// beyond the applied position (left by an op that failed locally) are
// replaced, and the oldest applied records beyond the bounds are dropped.
// Caller holds applyMu.
func (r *Replica) logOps(ops []*brickpb.Op, intent *intentRec) error {
	encoded := make([][]byte, len(ops))
	for i, op := range ops {
		var err error
		if encoded[i], err = encodeLogRec(op); err != nil {
			return err
		}
	}
	r.mu.Lock()
	applied := r.applied
	r.mu.Unlock()
	first, last, size := r.logFirst, r.logLast, r.logBytes
	err := r.commit(false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		if last > applied {
			var stale [][]byte
			c := b.Cursor()
			for k, _ := c.Seek(u64Key(applied + 1)); k != nil; k, _ = c.Next() {
				stale = append(stale, append([]byte(nil), k...))
				size -= int64(len(getLogRec(b, k)))
			}
			for _, k := range stale {
				if err := delLogRec(b, k); err != nil {
					return err
				}
			}
			last = applied
			if first > last {
				first = 0
			}
		}
		for i, op := range ops {
			if err := putLogRec(b, u64Key(op.Seq), encoded[i]); err != nil {
				return err
			}
			size += int64(len(encoded[i]))
		}
		if first == 0 {
			first = ops[0].Seq
		}
		last = ops[len(ops)-1].Seq
		for first != 0 && first <= applied &&
			(last-first+1 > uint64(r.opts.MaxLogOps) || size > r.opts.MaxLogBytes) {
			k := u64Key(first)
			size -= int64(len(getLogRec(b, k)))
			if err := delLogRec(b, k); err != nil {
				return err
			}
			first++
		}
		if intent != nil {
			if err := tx.Bucket(bucketMeta).Put(keyIntent, encodeIntent(*intent)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyLogBytes, u64Key(uint64(size)))
	})
	if err != nil {
		return fmt.Errorf("%w: writing the op log: %w", ErrLocalFailure, err)
	}
	if intent != nil {
		r.intent = *intent
	}
	r.mu.Lock()
	r.logFirst, r.logLast, r.logBytes = first, last, size
	r.mu.Unlock()
	return nil
}

// Records of at least bigRec bytes are kept in a nested bucket of their
// own, under recKey. bbolt keeps a value inline in its leaf and rewrites
// the whole leaf, neighbours included (a leaf of up to four big values is
// never split), on every put or delete beside it: with sequential keys
// every write op's data was written about three times over (profile in
// docs/benchmarks.md). A nested bucket has pages of its own, written once
// and freed whole; its parent leaf holds only a small header.
const bigRec = 2048

var recKey = []byte("r")

func putLogRec(b *bolt.Bucket, k, v []byte) error {
	if len(v) < bigRec {
		return b.Put(k, v)
	}
	nb, err := b.CreateBucket(k)
	if err != nil {
		return err
	}
	return nb.Put(recKey, v)
}

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

func delLogRec(b *bolt.Bucket, k []byte) error {
	if b.Bucket(k) != nil {
		return b.DeleteBucket(k)
	}
	return b.Delete(k)
}

// logged returns the logged op seq, or nil if the log does not hold it.
func (r *Replica) logged(seq uint64) (*brickpb.Op, error) {
	var op *brickpb.Op
	err := r.db.View(func(tx *bolt.Tx) error {
		v := getLogRec(tx.Bucket(bucketLog), u64Key(seq))
		if v == nil {
			return nil
		}
		var err error
		op, err = decodeLogRec(seq, v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return op, nil
}

// ScanOps calls fn with every op after seq `after` up to the applied
// position at the time of the call, in order, stopping at fn's first
// error. It fails with ErrLogTruncated when the log no longer holds
// after+1 (also mid-scan, if the log is trimmed meanwhile), and with ErrGap
// when after is beyond the applied position. The log is read in slices,
// each in its own short read transaction, so a slow fn never holds
// meta.db. The ops passed to fn are fn's to keep.
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
		var batch []*brickpb.Op
		if err := r.enter(); err != nil { // per slice: a slow fn never holds Close off
			return err
		}
		err := r.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketLog)
			c := b.Cursor()
			size := 0
			k, v := c.Seek(u64Key(next))
			if k == nil || string(k) != string(u64Key(next)) {
				return fmt.Errorf("%w: op %d is no longer in the log", ErrLogTruncated, next)
			}
			for ; k != nil && size < scanSlice; k, v = c.Next() {
				seq, err := decodeU64(k)
				if err != nil {
					return fmt.Errorf("%w: %w", ErrCorrupt, err)
				}
				if seq > applied {
					break
				}
				if seq != next+uint64(len(batch)) {
					return fmt.Errorf("%w: op log jumps from %d to %d", ErrCorrupt, next+uint64(len(batch))-1, seq)
				}
				if v == nil {
					v = getLogRec(b, k) // a big record, in a bucket of its own
				}
				op, err := decodeLogRec(seq, v)
				if err != nil {
					return fmt.Errorf("%w: %w", ErrCorrupt, err)
				}
				batch = append(batch, op)
				size += len(v)
			}
			return nil
		})
		r.exit()
		if err != nil {
			return err
		}
		for _, op := range batch {
			if err := fn(op); err != nil {
				return err
			}
		}
		next += uint64(len(batch))
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
