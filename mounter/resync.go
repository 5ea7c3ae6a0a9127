package mounter

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica/head"
)

// resyncer runs the full resyncs the head asks for (healing bricks in
// head.HealNeedsFull), one at a time, each on the target brick's daemon
// from an in-sync source, and tells the head when one is done.
type resyncer struct {
	h      *head.Head
	c      *conns
	volID  string
	addrs  map[string]string
	log    *slog.Logger
	rate   int64    // bytes/s the resync may fetch (0: unlimited)
	active sync.Map // brick ID → true while its resync runs (for status)
}

// resyncRetry is how long a failed resync waits before the next try.
const resyncRetry = 10 * time.Second

func (r *resyncer) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	next := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := r.h.Status()
		if st.State == head.StateFenced {
			return
		}
		for _, hs := range st.Heals {
			if hs.State != head.HealNeedsFull || time.Now().Before(next[hs.ID]) {
				continue
			}
			src := st.Primary
			if src == hs.ID || !slices.Contains(st.ISR, src) {
				src = ""
				for _, id := range st.ISR {
					if id != hs.ID {
						src = id
						break
					}
				}
			}
			if src == "" || r.addrs[hs.ID] == "" || r.addrs[src] == "" {
				continue
			}
			if err := r.resync(ctx, st.Epoch, hs.ID, src, hs.Reason); err != nil {
				r.log.Warn("full resync failed; retrying", "brick", hs.ID, "source", src, "err", err, "retry_in", resyncRetry)
				next[hs.ID] = time.Now().Add(resyncRetry)
				continue
			}
			r.h.Resynced(hs.ID)
		}
	}
}

func (r *resyncer) resync(ctx context.Context, epoch uint64, target, src, why string) error {
	cc, err := r.c.get(r.addrs[target])
	if err != nil {
		return err
	}
	r.active.Store(target, true)
	defer r.active.Delete(target)
	start := time.Now()
	r.log.Warn("full resync of a brick starting", "brick", target, "source", src, "why", why)
	ctx, cancel := context.WithTimeout(ctx, 6*time.Hour)
	defer cancel()
	resp, err := brickpb.NewReplicaClient(cc).Resync(ctx, &brickpb.ResyncRequest{
		Ref:         &brickpb.VolumeRef{Header: r.c.header(), VolumeId: r.volID, Epoch: epoch},
		SourceBrick: src, SourceAddr: r.addrs[src], BytesPerSec: r.rate})
	if err != nil {
		return err
	}
	r.log.Warn("full resync of a brick done: healing it from the op log", "brick", target, "source", src,
		"at_seq", resp.AppliedSeq, "files", resp.Files, "bytes_fetched", resp.BytesFetched, "bytes_reused", resp.BytesReused,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}
