package daemon

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/proto/brickpb"
)

// peerService is daemon-to-daemon traffic. Requests from the CLI ("cli"
// sender) are refused: only daemons speak here.
type peerService struct {
	brickpb.UnimplementedPeerServer
	d *Daemon
}

func fromDaemon(h *brickpb.Header) error {
	if h.GetSenderId() == "cli" {
		return status.Error(codes.PermissionDenied, "the Peer service is for daemons, not the CLI")
	}
	return nil
}

func (s *peerService) Apply(ctx context.Context, req *brickpb.ApplyRequest) (*brickpb.ApplyResponse, error) {
	if err := fromDaemon(req.Header); err != nil {
		return nil, err
	}
	cmd, err := control.DecodeCommand(req.Command)
	if err != nil {
		return nil, invalid("decoding command from %s: %v", req.Header.SenderId, err)
	}
	if !s.d.node.IsLeader() {
		return nil, fmt.Errorf("applying %s from %s: %w", cmd.Type, req.Header.SenderId, control.ErrNotLeader)
	}
	res, err := s.d.node.Propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return &brickpb.ApplyResponse{Index: res.Index}, nil
}

func (s *peerService) EnsureReplica(ctx context.Context, req *brickpb.ReplicaRequest) (*brickpb.ReplicaResponse, error) {
	if err := fromDaemon(req.Header); err != nil {
		return nil, err
	}
	if s.d.cfg.NoDisk {
		return nil, status.Errorf(codes.FailedPrecondition, "daemon %s is a tie-breaker (--no-disk) and holds no replicas", s.d.cfg.Name)
	}
	p, err := s.d.store.Ensure(req.VolumeId)
	if err != nil {
		return nil, invalid("%v", err)
	}
	s.d.log.Info("replica ready", "volume", req.VolumeName, "id", req.VolumeId, "path", p)
	return &brickpb.ReplicaResponse{Path: p}, nil
}

func (s *peerService) RemoveReplica(ctx context.Context, req *brickpb.ReplicaRequest) (*brickpb.ReplicaResponse, error) {
	if err := fromDaemon(req.Header); err != nil {
		return nil, err
	}
	// Only a deleted volume's replica may go: the request must not be able
	// to destroy a live one, whoever sends it.
	// The delete was committed on the leader; wait for this daemon's copy
	// of the catalog to apply it.
	for {
		changed := s.d.node.FSM().Changed()
		if _, live := s.d.node.FSM().State().Volumes[control.VolumeID(req.VolumeId)]; !live {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still in the catalog; remove it with `brick volume rm` first", req.VolumeId)
		}
	}
	s.d.replicas.close(req.VolumeId)
	if err := s.d.store.Remove(req.VolumeId); err != nil {
		return nil, invalid("%v", err)
	}
	s.d.log.Info("replica removed", "volume", req.VolumeName, "id", req.VolumeId)
	return &brickpb.ReplicaResponse{}, nil
}
