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
			for k, v := c.Seek(u64Key(applied + 1)); k != nil; k, v = c.Next() {
				stale = append(stale, append([]byte(nil), k...))
				size -= int64(len(v))
			}
			for _, k := range stale {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			last = applied
			if first > last {
				first = 0
			}
		}
		for i, op := range ops {
			if err := b.Put(u64Key(op.Seq), encoded[i]); err != nil {
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
			size -= int64(len(b.Get(k)))
			if err := b.Delete(k); err != nil {
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
		r.intent, r.intentLogged = *intent, ops[0].Seq
	}
	r.mu.Lock()
	r.logFirst, r.logLast, r.logBytes = first, last, size
	r.mu.Unlock()
	return nil
}

// logged returns the logged op seq, or nil if the log does not hold it.
func (r *Replica) logged(seq uint64) (*brickpb.Op, error) {
	var op *brickpb.Op
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLog).Get(u64Key(seq))
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
			c := tx.Bucket(bucketLog).Cursor()
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
