package replica

import (
	"golang.org/x/sys/unix"
)

// maxRuns bounds how many files' sequential write runs are followed at
// once; a new run evicts the least recently written.
const maxRuns = 8

// writeRun is one file's current run of sequential writes (dropBehind).
type writeRun struct {
	start  int64   // first byte of the run not yet handed to writeback
	next   int64   // where the run's next write must start to extend it
	kicked []int64 // windows handed to writeback and not yet dropped
	age    uint64  // runClock at the run's last write
}

// dropBehind keeps a long sequential write from filling the page cache:
// each window (ReplicaOptions.WritebackWindow) of a run of sequential
// writes to one file is handed to writeback as soon as it is complete, and
// dropped from the page cache two windows later, once written back. A
// brick's copy of a big file is read back rarely (the op log holds recent
// writes for heal; reads go to the page cache of the mount first), while
// filling the cache with it costs: it evicts what readers use, and every
// page allocated to it is a fresh page to fill, which on a VM whose host
// backs guest memory lazily costs far more than the copy itself
// (docs/benchmarks.md, session 9). Writes that do not extend a run (random
// or rewriting) start a new one and are never dropped before a full
// window follows them.
//
// Durability is unchanged: the barrier's syncfs still decides what is
// durable. An error is writeback's own (EIO): this brick may have lost
// the data.
func (r *Replica) dropBehind(fd int, fid uint64, off, n int64) error {
	w := r.opts.WritebackWindow
	if w <= 0 || n <= 0 {
		return nil
	}
	r.runClock++
	run := r.runs[fid]
	switch {
	case run == nil:
		if len(r.runs) >= maxRuns {
			var oldest uint64
			for f, x := range r.runs {
				if oldest == 0 || x.age < r.runs[oldest].age {
					oldest = f
				}
			}
			delete(r.runs, oldest)
		}
		run = &writeRun{start: off}
		r.runs[fid] = run
	case off != run.next: // a new run of the same file, in place: random writes allocate nothing
		run.start, run.kicked = off, run.kicked[:0]
	}
	run.next, run.age = off+n, r.runClock
	for run.next-run.start >= w {
		if err := unix.SyncFileRange(fd, run.start, w, unix.SYNC_FILE_RANGE_WRITE); err != nil {
			return err
		}
		run.kicked = append(run.kicked, run.start)
		run.start += w
		for len(run.kicked) > 2 {
			s := run.kicked[0]
			run.kicked = run.kicked[1:]
			const all = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
			if err := unix.SyncFileRange(fd, s, w, all); err != nil {
				return err
			}
			// Advice only: pages still dirty or mapped stay.
			unix.Fadvise(fd, s, w, unix.FADV_DONTNEED)
		}
	}
	return nil
}
