package daemon

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica"
)

// replicaService is the brick's Replica service: replica.Server's, plus
// Resync, which needs the daemon (dialling the source, swapping the
// replica this daemon keeps open).
type replicaService struct {
	*replica.Server
	d *Daemon
}

// Resync rebuilds this brick's replica of the volume as a copy of the
// source brick's (see replica.BuildResync) and swaps it in.
func (s *replicaService) Resync(ctx context.Context, req *brickpb.ResyncRequest) (*brickpb.ResyncResponse, error) {
	d := s.d
	ref := req.GetRef()
	if ref == nil || ref.VolumeId == "" || ref.Epoch == 0 || req.SourceAddr == "" {
		return nil, status.Error(codes.InvalidArgument, "resync needs a volume reference with an epoch and a source address")
	}
	old, err := d.replicas.lookup(ref.VolumeId)
	if err != nil {
		return nil, err
	}
	if _, _, promised, _ := old.State(); ref.Epoch < promised {
		return nil, status.Errorf(codes.FailedPrecondition, "fenced: epoch %d is older than the brick's promise %d", ref.Epoch, promised)
	}
	if !d.resyncing.TryLock() {
		return nil, status.Errorf(codes.ResourceExhausted, "a resync is already running on brick %s; retry later", d.cfg.Name)
	}
	defer d.resyncing.Unlock()
	cc, err := d.peers.conn(req.SourceAddr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connecting to the source brick %s at %s: %v", req.SourceBrick, req.SourceAddr, err)
	}
	dir, err := d.store.Path(ref.VolumeId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	staging := dir + ".resync"
	os.RemoveAll(staging)
	start := time.Now()
	log := d.log.With("volume", ref.VolumeId, "source", req.SourceBrick, "epoch", ref.Epoch)
	log.Warn("full resync: rebuilding this brick's replica as a copy of the source's, by chunk checksums",
		"bytes_per_sec", req.BytesPerSec)
	src := replica.Throttled(&replica.GRPCSource{Client: brickpb.NewReplicaClient(cc),
		Ref: &brickpb.VolumeRef{Header: d.peers.header(0), VolumeId: ref.VolumeId, Epoch: ref.Epoch}}, req.BytesPerSec)
	st, err := replica.BuildResync(ctx, staging, old, src, ref.Epoch, d.cfg.replicaOptions(log))
	if err != nil {
		log.Error("full resync failed", "err", err)
		return nil, status.Errorf(codes.Internal, "resync of %s from %s: %v", ref.VolumeId, req.SourceBrick, err)
	}
	if err := d.replicas.swap(ref.VolumeId, dir, staging); err != nil {
		log.Error("full resync: swapping the copy in failed", "err", err)
		return nil, status.Errorf(codes.Internal, "resync of %s: %v", ref.VolumeId, err)
	}
	log.Warn("full resync done", "applied_seq", st.AppliedSeq, "files", st.Files, "bytes_fetched", st.BytesFetched,
		"bytes_reused", st.BytesReused, "took", time.Since(start).Round(time.Millisecond))
	return &brickpb.ResyncResponse{AppliedSeq: st.AppliedSeq, Files: st.Files, BytesFetched: st.BytesFetched,
		BytesReused: st.BytesReused}, nil
}

// swap closes the open replica of volumeID, moves the staging copy into its
// place and opens it.
func (rs *replicas) swap(volumeID, dir, staging string) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r, ok := rs.m[volumeID]; ok {
		r.Close()
		delete(rs.m, volumeID)
	}
	if err := replica.SwapReplica(dir, staging); err != nil {
		return err
	}
	r, err := replica.OpenReplica(dir, rs.d.cfg.replicaOptions(rs.d.log.With("volume", volumeID)))
	if err != nil {
		return fmt.Errorf("opening the resynced replica: %w", err)
	}
	rs.m[volumeID] = r
	return nil
}
