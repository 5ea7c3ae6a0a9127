package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

// This file turns Control responses into what brick prints: tables for
// people, and plain JSON documents for scripts. The JSON shapes are a stable
// interface: fields are snake_case, always present (empty lists are [], empty
// maps {}, unknown times null), and only ever added to.

// none stands for an empty cell, so that columns never collapse.
const none = "-"

// peerJSON is one peer in `peer ls --json` and `status --json`.
type peerJSON struct {
	Name          string     `json:"name"`
	BrickID       string     `json:"brick_id"`
	Address       string     `json:"address"`
	GossipState   string     `json:"gossip_state"`
	GossipSince   *time.Time `json:"gossip_since"` // RFC 3339, UTC; null when unknown
	RaftRole      string     `json:"raft_role"`
	CapacityBytes uint64     `json:"capacity_bytes"`
	FreeBytes     uint64     `json:"free_bytes"`
}

// volumeJSON is a volume in `volume inspect --json` and everywhere else a
// volume is printed as JSON.
type volumeJSON struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	SizeBytes   uint64            `json:"size_bytes"`
	Layout      string            `json:"layout"`
	Replicas    uint32            `json:"replicas"`
	ECData      uint32            `json:"ec_data"`
	ECParity    uint32            `json:"ec_parity"`
	Access      string            `json:"access"`
	MinISR      uint32            `json:"min_isr"`
	Labels      map[string]string `json:"labels"`
	Placement   []placementJSON   `json:"placement"`
	Epoch       uint64            `json:"epoch"`
	Head        string            `json:"head"` // brick ID; "" when detached
	HeadName    string            `json:"head_name"`
	ISR         []string          `json:"isr"` // brick IDs
	Attachments []attachmentJSON  `json:"attachments"`
	State       string            `json:"state"`
	StateReason string            `json:"state_reason"`
	Created     *time.Time        `json:"created"`
	Heals       []healJSON        `json:"heals"`
}

// healJSON is one brick being healed, as the head reports it.
type healJSON struct {
	BrickID         string  `json:"brick_id"`
	BrickName       string  `json:"brick_name"`
	State           string  `json:"state"`
	Phase           string  `json:"phase"`
	BytesRemaining  int64   `json:"bytes_remaining"` // -1: unknown
	BytesTotal      int64   `json:"bytes_total"`
	OpsRemaining    uint64  `json:"ops_remaining"`
	FilesRemaining  int64   `json:"files_remaining"` // -1: unknown
	RateBytesPerSec float64 `json:"rate_bytes_per_sec"`
	ETASeconds      float64 `json:"eta_seconds"` // -1: unknown
	Reason          string  `json:"reason"`
}

type placementJSON struct {
	BrickID     string `json:"brick_id"`
	BrickName   string `json:"brick_name"`
	InSync      bool   `json:"in_sync"`
	GossipState string `json:"gossip_state"`
}

type attachmentJSON struct {
	BrickID   string     `json:"brick_id"`
	BrickName string     `json:"brick_name"`
	Epoch     uint64     `json:"epoch"`
	Since     *time.Time `json:"since"`
	Head      bool       `json:"head"`               // this host is the volume's head
	Endpoint  string     `json:"endpoint,omitempty"` // shared: where its mount process serves the others
}

// statusJSON is `brick status --json`.
type statusJSON struct {
	ClusterID  string       `json:"cluster_id"`
	Health     string       `json:"health"`
	Leader     string       `json:"leader"` // name; "" when there is none
	AnsweredBy string       `json:"answered_by"`
	Peers      []peerJSON   `json:"peers"`
	Volumes    []volumeJSON `json:"volumes"`
}

// removedJSON is `brick volume rm --json`.
type removedJSON struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

// versionJSON is `brick version --json`.
type versionJSON struct {
	Version         string `json:"version"`
	ProtocolVersion uint32 `json:"protocol_version"`
	GoVersion       string `json:"go_version"`
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// unixMs turns a protobuf millisecond timestamp into a UTC time; 0 is unknown.
func unixMs(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

func peerToJSON(p *brickpb.PeerInfo) peerJSON {
	return peerJSON{
		Name:          p.GetName(),
		BrickID:       p.GetBrickId(),
		Address:       p.GetAddress(),
		GossipState:   p.GetGossipState(),
		GossipSince:   unixMs(p.GetGossipSinceUnixMs()),
		RaftRole:      p.GetRaftRole(),
		CapacityBytes: p.GetCapacityBytes(),
		FreeBytes:     p.GetFreeBytes(),
	}
}

func peersToJSON(ps []*brickpb.PeerInfo) []peerJSON {
	out := make([]peerJSON, 0, len(ps))
	for _, p := range sortedPeers(ps) {
		out = append(out, peerToJSON(p))
	}
	return out
}

func volumeToJSON(v *brickpb.Volume) volumeJSON {
	j := volumeJSON{
		ID:          v.GetId(),
		Name:        v.GetName(),
		SizeBytes:   v.GetSizeBytes(),
		Layout:      layoutOf(v),
		Replicas:    v.GetReplicas(),
		ECData:      v.GetEcData(),
		ECParity:    v.GetEcParity(),
		Access:      v.GetAccess(),
		MinISR:      v.GetMinIsr(),
		Labels:      map[string]string{},
		Placement:   []placementJSON{},
		Epoch:       v.GetEpoch(),
		Head:        v.GetHead(),
		HeadName:    v.GetHeadName(),
		ISR:         append([]string{}, v.GetIsr()...),
		Attachments: []attachmentJSON{},
		State:       v.GetState(),
		StateReason: v.GetStateReason(),
		Created:     unixMs(v.GetCreatedUnixMs()),
		Heals:       []healJSON{},
	}
	for _, h := range v.GetHeals() {
		eta := -1.0
		if h.GetEtaMs() >= 0 {
			eta = float64(h.GetEtaMs()) / 1000
		}
		j.Heals = append(j.Heals, healJSON{BrickID: h.GetBrickId(), BrickName: h.GetBrickName(), State: h.GetState(),
			Phase: h.GetPhase(), BytesRemaining: h.GetBytesRemaining(), BytesTotal: h.GetBytesTotal(),
			OpsRemaining: h.GetOpsRemaining(), FilesRemaining: h.GetFilesRemaining(), RateBytesPerSec: h.GetRateBytesPerSec(),
			ETASeconds: eta, Reason: h.GetReason()})
	}
	maps.Copy(j.Labels, v.GetLabels())
	for _, p := range v.GetPlacement() {
		j.Placement = append(j.Placement, placementJSON{
			BrickID:     p.GetBrickId(),
			BrickName:   p.GetBrickName(),
			InSync:      p.GetInSync(),
			GossipState: p.GetGossipState(),
		})
	}
	for _, at := range v.GetAttachments() {
		j.Attachments = append(j.Attachments, attachmentJSON{
			BrickID:   at.GetBrickId(),
			BrickName: at.GetBrickName(),
			Epoch:     at.GetEpoch(),
			Since:     unixMs(at.GetSinceUnixMs()),
			Head:      at.GetBrickId() == v.GetHead(),
			Endpoint:  at.GetEndpoint(),
		})
	}
	return j
}

func volumesToJSON(vs []*brickpb.Volume) []volumeJSON {
	out := make([]volumeJSON, 0, len(vs))
	for _, v := range sortedVolumes(vs) {
		out = append(out, volumeToJSON(v))
	}
	return out
}

func statusToJSON(s *brickpb.ClusterStatusResponse) statusJSON {
	return statusJSON{
		ClusterID:  s.GetClusterId(),
		Health:     s.GetHealth(),
		Leader:     s.GetLeader(),
		AnsweredBy: s.GetAnsweredBy(),
		Peers:      peersToJSON(s.GetPeers()),
		Volumes:    volumesToJSON(s.GetVolumes()),
	}
}

func sortedPeers(ps []*brickpb.PeerInfo) []*brickpb.PeerInfo {
	return slices.SortedStableFunc(slices.Values(ps), func(a, b *brickpb.PeerInfo) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
}

func sortedVolumes(vs []*brickpb.Volume) []*brickpb.Volume {
	return slices.SortedStableFunc(slices.Values(vs), func(a, b *brickpb.Volume) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
}

// layoutOf is the volume's layout as "replicas=3" or "ec=4+2", "" if unknown.
func layoutOf(v *brickpb.Volume) string {
	switch {
	case v.GetLayout() != "":
		return v.GetLayout()
	case v.GetEcData() > 0:
		return fmt.Sprintf("ec=%d+%d", v.GetEcData(), v.GetEcParity())
	case v.GetReplicas() > 0:
		return fmt.Sprintf("replicas=%d", v.GetReplicas())
	}
	return ""
}

// age is a short duration for a table cell: 12s, 5m, 3h, 4d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s" // clock skew between hosts
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// gossipCell is a peer's gossip state and how long it has been in it:
// "alive 3h", "dead 12s".
func gossipCell(state string, sinceMs int64, now time.Time) string {
	if state == "" {
		state = "unknown"
	}
	if sinceMs == 0 {
		return state
	}
	return state + " " + age(now.Sub(time.UnixMilli(sinceMs)))
}

func sizeCell(b uint64) string {
	if b == 0 {
		return none
	}
	return volspec.FormatSize(b)
}

func cell(s string) string {
	if s == "" {
		return none
	}
	return s
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writePeersTable prints peers sorted by name. Capacity and free space are
// "-" for a peer without a disk (a tie-breaker) or that has not reported.
func writePeersTable(w io.Writer, peers []*brickpb.PeerInfo, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tADDRESS\tGOSSIP\tRAFT\tCAPACITY\tFREE")
	for _, p := range sortedPeers(peers) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n",
			cell(p.GetName()), cell(p.GetAddress()),
			gossipCell(p.GetGossipState(), p.GetGossipSinceUnixMs(), now),
			cell(p.GetRaftRole()), sizeCell(p.GetCapacityBytes()), sizeCell(p.GetFreeBytes()))
	}
	return tw.Flush()
}

// isrCell is "in-sync members/placed bricks", e.g. "2/3".
func isrCell(v *brickpb.Volume) string {
	return fmt.Sprintf("%d/%d", len(v.GetIsr()), len(v.GetPlacement()))
}

// headCell is the head's host name, or "-" when the volume is detached.
func headCell(v *brickpb.Volume) string {
	if v.GetHead() == "" {
		return none
	}
	return cell(firstOf(v.GetHeadName(), v.GetHead()))
}

// firstOf returns the first non-empty string.
func firstOf(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// writeVolumesTable prints volumes sorted by name.
func writeVolumesTable(w io.Writer, vols []*brickpb.Volume) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tLAYOUT\tACCESS\tSIZE\tSTATE\tHEAD\tEPOCH\tISR")
	for _, v := range sortedVolumes(vols) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			cell(v.GetName()), cell(layoutOf(v)), cell(v.GetAccess()), volspec.FormatSize(v.GetSizeBytes()),
			cell(v.GetState()), headCell(v), v.GetEpoch(), isrCell(v))
	}
	return tw.Flush()
}

// timestamp is a time for people, in loc, with its age: "2026-11-23
// 14:02:11 UTC (3h ago)".
func timestamp(ms int64, now time.Time, loc *time.Location) string {
	t := time.UnixMilli(ms)
	return fmt.Sprintf("%s (%s ago)", t.In(loc).Format(time.DateTime+" MST"), age(now.Sub(t)))
}

// writeVolumeSummary is the head of `volume inspect` and `volume status`:
// what the volume is, its state, and who serves it.
func writeVolumeSummary(w io.Writer, v *brickpb.Volume, now time.Time, loc *time.Location) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "%s\t%s  min-isr=%d  %s  %s\n",
		v.GetName(), cell(layoutOf(v)), v.GetMinIsr(), cell(v.GetAccess()), volspec.FormatSize(v.GetSizeBytes()))
	state := cell(v.GetState())
	if r := v.GetStateReason(); r != "" {
		state += " (" + r + ")"
	}
	fmt.Fprintf(tw, "state\t%s\n", state)
	if v.GetHead() == "" {
		fmt.Fprintf(tw, "head\tdetached (epoch %d)\n", v.GetEpoch())
	} else {
		fmt.Fprintf(tw, "head\t%s (%s, epoch %d)\n", firstOf(v.GetHeadName(), v.GetHead()), v.GetHead(), v.GetEpoch())
	}
	for _, at := range v.GetAttachments() {
		line := fmt.Sprintf("%s (%s) at epoch %d", firstOf(at.GetBrickName(), at.GetBrickId()), at.GetBrickId(), at.GetEpoch())
		if at.GetSinceUnixMs() != 0 {
			line += " since " + timestamp(at.GetSinceUnixMs(), now, loc)
		}
		label := "attached"
		if v.GetAccess() == "shared" {
			label = "mounted"
			if at.GetBrickId() == v.GetHead() {
				line += " (head)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, line)
	}
	if labels := v.GetLabels(); len(labels) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			kv = append(kv, k+"="+labels[k])
		}
		fmt.Fprintf(tw, "labels\t%s\n", strings.Join(kv, " "))
	}
	fmt.Fprintf(tw, "id\t%s\n", cell(v.GetId()))
	if ms := v.GetCreatedUnixMs(); ms != 0 {
		fmt.Fprintf(tw, "created\t%s\n", timestamp(ms, now, loc))
	}
	return tw.Flush()
}

// writeVolumeBricks is the table of the volume's bricks in placement order.
func writeVolumeBricks(w io.Writer, v *brickpb.Volume) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "BRICK\tHOST\tSTATE\tGOSSIP")
	for _, p := range v.GetPlacement() {
		state := "out-of-isr"
		if p.GetInSync() {
			state = "in-sync"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n",
			cell(p.GetBrickId()), cell(p.GetBrickName()), state, firstOf(p.GetGossipState(), "unknown"))
	}
	return tw.Flush()
}

// writeVolumeDetail is the human view of one volume: a summary, its
// bricks, and the heals in progress.
func writeVolumeDetail(w io.Writer, v *brickpb.Volume, now time.Time, loc *time.Location) error {
	if err := writeVolumeSummary(w, v, now, loc); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := writeVolumeBricks(w, v); err != nil {
		return err
	}
	if len(v.GetHeals()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "HEALING	STATE	PROGRESS	REMAINING	RATE	ETA")
	for _, h := range v.GetHeals() {
		state := h.GetState()
		if p := h.GetPhase(); p != "" {
			state += " (" + p + ")"
		}
		left := fmt.Sprintf("%d ops", h.GetOpsRemaining())
		if b := h.GetBytesRemaining(); b >= 0 {
			left = volspec.FormatSize(uint64(b)) + ", " + left
		}
		if f := h.GetFilesRemaining(); f >= 0 {
			left += fmt.Sprintf(", %d files", f)
		}
		rate, eta := "-", "-"
		if r := h.GetRateBytesPerSec(); r > 0 {
			rate = volspec.FormatSize(uint64(r)) + "/s"
		}
		if e := h.GetEtaMs(); e >= 0 {
			eta = (time.Duration(e) * time.Millisecond).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(firstOf(h.GetBrickName(), h.GetBrickId())), cell(state),
			progressBar(h.GetBytesTotal(), h.GetBytesRemaining(), 20), left, rate, eta)
		if r := h.GetReason(); r != "" && h.GetState() != "healing" {
			fmt.Fprintf(tw, "\t%s\t\t\t\t\n", cell(r))
		}
	}
	return tw.Flush()
}

// progressBar draws how much of total is done: "[#######-------] 52%", or
// an empty bar when the total is unknown.
func progressBar(total, remaining int64, width int) string {
	if total <= 0 || remaining < 0 {
		return "[" + strings.Repeat("?", width) + "]"
	}
	done := float64(total-min(remaining, total)) / float64(total)
	n := int(done * float64(width))
	return fmt.Sprintf("[%s%s] %3.0f%%", strings.Repeat("#", n), strings.Repeat("-", width-n), done*100)
}

// writeClusterStatus is `brick status`: one line about the cluster, then
// the peers and the volumes.
func writeClusterStatus(w io.Writer, s *brickpb.ClusterStatusResponse, now time.Time) error {
	fmt.Fprintf(w, "cluster %s  %s  leader %s  answered by %s\n",
		cell(s.GetClusterId()), cell(s.GetHealth()), firstOf(s.GetLeader(), "none"), cell(s.GetAnsweredBy()))
	fmt.Fprintln(w)
	if err := writePeersTable(w, s.GetPeers(), now); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(s.GetVolumes()) == 0 {
		_, err := fmt.Fprintln(w, "no volumes")
		return err
	}
	return writeVolumesTable(w, s.GetVolumes())
}

// createdLine is what `volume create` prints: "created volume gocd-db
// (replicas=3, 10 GiB, single) on b-4f1a(ci-1), b-9c07(ci-2)".
func createdLine(v *brickpb.Volume) string {
	var bricks []string
	for _, p := range v.GetPlacement() {
		b := p.GetBrickId()
		if n := p.GetBrickName(); n != "" {
			b += "(" + n + ")"
		}
		bricks = append(bricks, b)
	}
	line := fmt.Sprintf("created volume %s (%s, %s, %s)",
		v.GetName(), cell(layoutOf(v)), volspec.FormatSize(v.GetSizeBytes()), cell(v.GetAccess()))
	if len(bricks) > 0 {
		line += " on " + strings.Join(bricks, ", ")
	}
	return line
}
