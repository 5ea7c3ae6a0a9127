package mounter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/brickvol/brick/fuse"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica/head"
)

// StatusFile is what a mount process tells its brickd about the volume it
// heads, rewritten every StatusInterval: brickd has no other window into a
// mount process, which outlives it by design. Written atomically (rename).
type StatusFile struct {
	Volume  string   `json:"volume"`
	Epoch   uint64   `json:"epoch"`
	State   string   `json:"state"`
	Reason  string   `json:"reason,omitempty"`
	ISR     []string `json:"isr"`
	LastSeq uint64   `json:"last_seq"`
	Heals   []Heal   `json:"heals,omitempty"`
	// Counters since the mount process started: what the mount answered
	// itself and what it asked a brick for.
	Counters Counters  `json:"counters"`
	Written  time.Time `json:"written"`
}

// Counters count how a mount process served its file system.
type Counters struct {
	LookupsAnswered  uint64 `json:"lookups_answered"`   // by the name cache
	LookupsPassedOn  uint64 `json:"lookups_passed_on"`  // to a brick
	OpsAnsweredEarly uint64 `json:"ops_answered_early"` // before a brick applied them
	ReadsLocal       uint64 `json:"reads_local"`        // from this host's replica's tree
	ReadsPassedOn    uint64 `json:"reads_passed_on"`    // to a brick, though this host has a replica
}

// Heal is one brick being brought back, with enough for a progress bar.
type Heal struct {
	Brick          string  `json:"brick"`
	State          string  `json:"state"`
	Phase          string  `json:"phase,omitempty"`
	Applied        uint64  `json:"applied"`
	Target         uint64  `json:"target"`
	OpsRemaining   uint64  `json:"ops_remaining"`
	BytesRemaining int64   `json:"bytes_remaining"` // -1: unknown
	BytesTotal     int64   `json:"bytes_total"`     // the most remaining seen in this heal
	Rate           float64 `json:"rate_bytes_per_sec"`
	ETAMillis      int64   `json:"eta_ms"` // -1: unknown
	Reason         string  `json:"reason,omitempty"`
}

// StatusInterval is how often the status file is rewritten; brickd treats
// a file older than a few intervals as stale.
const StatusInterval = time.Second

// ReadStatusFile reads a status file written by a mount process.
func ReadStatusFile(path string) (*StatusFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s StatusFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding mount status %s: %w", path, err)
	}
	return &s, nil
}

// writeStatus keeps path up to date with h's status until ctx ends.
func writeStatus(ctx context.Context, path string, h *head.Head, be *backend, resyncing *sync.Map) {
	totals := map[string]int64{}
	t := time.NewTicker(StatusInterval)
	defer t.Stop()
	for {
		st := h.Status()
		out := StatusFile{Volume: st.Volume, Epoch: st.Epoch, State: st.State, Reason: st.Reason, ISR: st.ISR,
			LastSeq: st.LastSeq, Counters: be.counters(), Written: time.Now()}
		seen := map[string]bool{}
		for _, hs := range st.Heals {
			seen[hs.ID] = true
			totals[hs.ID] = max(totals[hs.ID], hs.BytesRemaining)
			eta := int64(-1)
			if hs.ETA >= 0 {
				eta = hs.ETA.Milliseconds()
			}
			phase := hs.Phase
			if _, ok := resyncing.Load(hs.ID); ok {
				phase = "resync"
			}
			out.Heals = append(out.Heals, Heal{Brick: hs.ID, State: hs.State, Phase: phase, Applied: hs.Applied,
				Target: hs.Target, OpsRemaining: hs.OpsRemaining, BytesRemaining: hs.BytesRemaining,
				BytesTotal: totals[hs.ID], Rate: hs.Rate, ETAMillis: eta, Reason: hs.Reason})
		}
		for id := range totals {
			if !seen[id] {
				delete(totals, id) // healed: the next heal starts a new bar
			}
		}
		if b, err := json.Marshal(out); err == nil {
			tmp := path + ".tmp"
			if os.WriteFile(tmp, b, 0o600) == nil {
				os.Rename(tmp, path)
			}
		}
		select {
		case <-ctx.Done():
			os.Remove(path)
			return
		case <-t.C:
		}
	}
}

// followSize polls the catalog for the volume's size and applies a resize
// to the mounted file system's quota.
func followSize(ctx context.Context, ctl brickpb.ControlClient, c *conns, name string, size int64, srv *fuse.Server, log *slog.Logger) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		vr, err := ctl.GetVolume(qctx, &brickpb.GetVolumeRequest{Header: c.header(), Name: name})
		cancel()
		if err != nil || vr.GetVolume() == nil {
			continue // brickd restarting, or no leader: try again later
		}
		if n := int64(vr.Volume.SizeBytes); n != size && n > 0 {
			log.Info("volume resized: new quota", "from", size, "to", n)
			srv.SetQuotaBytes(n)
			size = n
		}
	}
}
