package control

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/brickvol/brick/volspec"
)

// FSM is the Raft state machine holding the cluster's State. It implements
// raft.FSM.
//
// Thread-safety: Raft calls Apply, Snapshot and Restore from one goroutine;
// every read method may be called from any goroutine at the same time. Reads
// return deep copies the caller owns.
//
// Determinism: Apply depends only on the State and the log entry. It never
// reads a clock (every timestamp is the command's At), never iterates a map
// where the order could show in the result, and never does I/O.
type FSM struct {
	mu    sync.RWMutex
	state *State
	// changed is closed, and replaced, on every Apply and Restore.
	changed chan struct{}
}

// ApplyResult is what Apply returns for every entry (raft's
// ApplyFuture.Response).
type ApplyResult struct {
	// Err is nil when the command took effect. Otherwise it wraps one of the
	// sentinel errors and the catalog is unchanged.
	Err error
	// Volume is a copy of the volume the command created or changed (for
	// delete-volume: the volume as it was removed), if any. For an attach
	// that was already in place it is the unchanged volume.
	Volume *Volume
	// Index is the entry's Raft log index.
	Index uint64
}

// NewFSM returns an FSM with an empty State (no cluster ID yet).
func NewFSM() *FSM {
	return &FSM{state: newState(), changed: make(chan struct{})}
}

func newState() *State {
	return &State{
		Bricks:     map[BrickID]*Brick{},
		Volumes:    map[VolumeID]*Volume{},
		Tombstones: map[VolumeID]time.Time{},
	}
}

var _ raft.FSM = (*FSM)(nil)

// Apply applies one committed log entry and returns an *ApplyResult.
//
// An entry that cannot be decoded, or whose command is refused, leaves the
// catalog (cluster ID, bricks, volumes, tombstones) exactly as it was: every
// check runs before anything is written. State.Index still advances to the
// entry's index, because the entry *was* applied (the refusal is its
// deterministic outcome on every replica), and Changed fires, so a reader
// waiting for an index is never stranded by a refused command. The one
// exception is an entry whose index is not above State.Index (impossible
// under Raft): it is refused and Index stays.
func (f *FSM) Apply(l *raft.Log) interface{} {
	res := &ApplyResult{Index: l.Index}
	cmd, err := DecodeCommand(l.Data)

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state.Index != 0 && l.Index <= f.state.Index {
		res.Err = fmt.Errorf("apply log entry %d: %w: already at index %d", l.Index, ErrInvalid, f.state.Index)
		return res
	}
	if err == nil {
		res.Volume, err = f.apply(cmd)
	}
	res.Err = err
	f.state.Index = l.Index
	f.notifyLocked()
	return res
}

func (f *FSM) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// apply runs one decoded command. Each handler checks everything first and
// writes last, so an error return means nothing changed. The returned volume
// is a copy.
func (f *FSM) apply(c Command) (*Volume, error) {
	switch c.Type {
	case CmdInitCluster:
		return nil, f.initCluster(c.InitCluster)
	case CmdUpsertBrick:
		return nil, f.upsertBrick(c.At, c.UpsertBrick)
	case CmdRemoveBrick:
		return nil, f.removeBrick(c.RemoveBrick)
	case CmdCreateVolume:
		return f.createVolume(c.At, c.CreateVolume)
	case CmdDeleteVolume:
		return f.deleteVolume(c.At, c.DeleteVolume)
	case CmdAttach:
		return f.attach(c.At, c.Attach)
	case CmdDetach:
		return f.detach(c.Detach)
	case CmdSetISR:
		return f.setISR(c.SetISR)
	case CmdResizeVolume:
		return f.resizeVolume(c.ResizeVolume)
	}
	// DecodeCommand refuses unknown types; this is a programming error.
	return nil, fmt.Errorf("apply %s command: %w: unknown type", c.Type, ErrInvalid)
}

// maxIDLen bounds IDs, brick names and addresses stored in the catalog.
const maxIDLen = 253

// checkText refuses an empty, overlong, or non-printable-ASCII identifier.
func checkText(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > maxIDLen {
		return fmt.Errorf("%s is %d bytes long (at most %d)", what, len(s), maxIDLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("%s %q: byte 0x%02x at position %d is not allowed (printable ASCII without spaces)", what, s, s[i], i+1)
		}
	}
	return nil
}

func (f *FSM) initCluster(p *InitCluster) error {
	if err := checkText("cluster ID", p.ClusterID); err != nil {
		return fmt.Errorf("init cluster: %w: %w", ErrInvalid, err)
	}
	if f.state.ClusterID != "" {
		return fmt.Errorf("init cluster %q: %w: its ID is %q", p.ClusterID, ErrClusterInitialized, f.state.ClusterID)
	}
	f.state.ClusterID = p.ClusterID
	return nil
}

func (f *FSM) upsertBrick(at time.Time, p *Brick) error {
	if err := checkText("brick ID", string(p.ID)); err != nil {
		return fmt.Errorf("upsert brick: %w: %w", ErrInvalid, err)
	}
	op := fmt.Sprintf("upsert brick %q (%s)", p.Name, p.ID)
	if err := checkText("brick name", p.Name); err != nil {
		return fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
	}
	for _, a := range [...]struct{ what, addr string }{{"address", p.Addr}, {"raft address", p.RaftAddr}} {
		if a.addr == "" {
			continue // a brick may register before it listens
		}
		if err := checkText(a.what, a.addr); err != nil {
			return fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
		}
	}
	if other := f.brickByName(p.Name); other != nil && other.ID != p.ID {
		return fmt.Errorf("%s: %w: the name belongs to brick %s; a daemon that lost its data directory gets a new ID, so remove the old brick (%s) first",
			op, ErrExists, other.ID, other.ID)
	}
	old := f.state.Bricks[p.ID]
	if p.NoDisk && old != nil && !old.NoDisk {
		if vols := f.volumesPlacedOn(p.ID); len(vols) > 0 {
			return fmt.Errorf("%s: %w: cannot become a brick without disk while volumes %s place data on it", op, ErrBrickInUse, strings.Join(vols, ", "))
		}
	}
	b := *p
	b.UpdatedAt = at
	b.JoinedAt = at
	if old != nil {
		b.JoinedAt = old.JoinedAt
	}
	f.state.Bricks[b.ID] = &b
	return nil
}

func (f *FSM) removeBrick(p *RemoveBrick) error {
	b, ok := f.state.Bricks[p.ID]
	if !ok {
		return fmt.Errorf("remove brick %s: %w", p.ID, ErrNotFound)
	}
	op := fmt.Sprintf("remove brick %q (%s)", b.Name, b.ID)
	if vols := f.volumesPlacedOn(p.ID); len(vols) > 0 {
		return fmt.Errorf("%s: %w: volumes %s place data on it; move or delete them first", op, ErrBrickInUse, strings.Join(vols, ", "))
	}
	var attached []string
	for _, v := range f.sortedVolumes() {
		if v.attachment(p.ID) >= 0 {
			attached = append(attached, fmt.Sprintf("%q", v.Name))
		}
	}
	if len(attached) > 0 {
		return fmt.Errorf("%s: %w: volumes %s are attached on it; detach them (or attach them elsewhere with force) first", op, ErrBrickInUse, strings.Join(attached, ", "))
	}
	delete(f.state.Bricks, p.ID)
	return nil
}

func (f *FSM) createVolume(at time.Time, p *Volume) (*Volume, error) {
	if err := checkText("volume ID", string(p.ID)); err != nil {
		return nil, fmt.Errorf("create volume %q: %w: %w", p.Name, ErrInvalid, err)
	}
	op := fmt.Sprintf("create volume %q (%s)", p.Name, p.ID)
	invalid := func(err error) (*Volume, error) { return nil, fmt.Errorf("%s: %w: %w", op, ErrInvalid, err) }
	if err := volspec.ValidateName(p.Name); err != nil {
		return invalid(err)
	}
	if other := f.volumeByName(p.Name); other != nil {
		return nil, fmt.Errorf("%s: %w: the name belongs to volume %s", op, ErrExists, other.ID)
	}
	if _, ok := f.state.Volumes[p.ID]; ok {
		return nil, fmt.Errorf("%s: %w: the ID belongs to another volume", op, ErrExists)
	}
	if t, ok := f.state.Tombstones[p.ID]; ok {
		return nil, fmt.Errorf("%s: %w: the ID belonged to a volume deleted at %s; volume IDs are never reused", op, ErrExists, t.Format(time.RFC3339))
	}
	if p.SizeBytes == 0 || p.SizeBytes > volspec.MaxSize {
		return invalid(fmt.Errorf("size %d bytes is outside 1..%d", p.SizeBytes, uint64(volspec.MaxSize)))
	}
	if err := volspec.Layout(p.Layout).Validate(); err != nil {
		return invalid(err)
	}
	if p.Access != AccessSingle && p.Access != AccessShared {
		return invalid(fmt.Errorf("access %q: must be %q or %q", p.Access, AccessSingle, AccessShared))
	}
	if err := volspec.ValidateMinISR(p.MinISR, volspec.Layout(p.Layout)); err != nil {
		return invalid(err)
	}
	if err := volspec.ValidateLabels(p.Labels); err != nil {
		return invalid(err)
	}
	if len(p.Placement) != p.Layout.Width() {
		return invalid(fmt.Errorf("placement has %d bricks, %s needs %d", len(p.Placement), p.Layout, p.Layout.Width()))
	}
	for i, id := range p.Placement {
		if slices.Contains(p.Placement[:i], id) {
			return invalid(fmt.Errorf("placement lists brick %s twice", id))
		}
		b, ok := f.state.Bricks[id]
		if !ok {
			return nil, fmt.Errorf("%s: %w: placement brick %s is not in the cluster", op, ErrNotFound, id)
		}
		if b.NoDisk {
			return invalid(fmt.Errorf("placement brick %q (%s) has no disk", b.Name, id))
		}
	}
	if p.Epoch != 0 || p.Head != "" || len(p.Attachments) > 0 {
		return invalid(fmt.Errorf("epoch, head and attachments of a new volume are set by the state machine and must be empty"))
	}
	v := p.clone()
	v.Epoch, v.Head, v.Attachments = 0, "", nil
	v.ISR = slices.Clone(v.Placement) // a new, empty volume is trivially in sync
	v.CreatedAt = at
	if len(v.Labels) == 0 {
		v.Labels = nil
	}
	f.state.Volumes[v.ID] = v
	return v.clone(), nil
}

func (f *FSM) resizeVolume(p *ResizeVolume) (*Volume, error) {
	v := f.volumeByName(p.Name)
	if v == nil {
		return nil, fmt.Errorf("resize volume %q: %w", p.Name, ErrNotFound)
	}
	if p.SizeBytes < v.SizeBytes {
		return nil, fmt.Errorf("resize volume %q from %d to %d bytes: %w: volumes only grow", p.Name, v.SizeBytes, p.SizeBytes, ErrInvalid)
	}
	if p.SizeBytes > math.MaxInt64 {
		return nil, fmt.Errorf("resize volume %q to %d bytes: %w: larger than the largest size", p.Name, p.SizeBytes, ErrInvalid)
	}
	n := v.clone()
	n.SizeBytes = p.SizeBytes
	f.state.Volumes[n.ID] = n
	return n.clone(), nil
}

func (f *FSM) deleteVolume(at time.Time, p *DeleteVolume) (*Volume, error) {
	v := f.volumeByName(p.Name)
	if v == nil {
		return nil, fmt.Errorf("delete volume %q: %w", p.Name, ErrNotFound)
	}
	if len(v.Attachments) > 0 && !p.Force {
		return nil, fmt.Errorf("delete volume %q (%s): %w on %s; detach it first or delete with force",
			v.Name, v.ID, ErrAttached, f.brickNames(v.Attachments))
	}
	delete(f.state.Volumes, v.ID)
	f.state.Tombstones[v.ID] = at
	return v.clone(), nil
}

func (f *FSM) attach(at time.Time, p *Attach) (*Volume, error) {
	v, ok := f.state.Volumes[p.Volume]
	if !ok {
		return nil, fmt.Errorf("attach volume %s: %w", p.Volume, ErrNotFound)
	}
	b, ok := f.state.Bricks[p.Brick]
	if !ok {
		return nil, fmt.Errorf("attach volume %q (%s) on brick %s: %w: no such brick", v.Name, v.ID, p.Brick, ErrNotFound)
	}
	op := fmt.Sprintf("attach volume %q (%s) on brick %q", v.Name, v.ID, b.Name)
	if p.ExpectEpoch != 0 && p.ExpectEpoch != v.Epoch {
		return nil, fmt.Errorf("%s: %w: expected epoch %d, the volume is at epoch %d", op, ErrStaleEpoch, p.ExpectEpoch, v.Epoch)
	}
	if p.TakeHead && v.Access != AccessShared {
		return nil, fmt.Errorf("%s: %w: take-head is for shared volumes; %q is %s", op, ErrInvalid, v.Name, v.Access)
	}
	if i := v.attachment(p.Brick); i >= 0 {
		n := v.clone()
		switch {
		case p.TakeHead && v.Head != p.Brick:
			n.Epoch++
			n.Head = p.Brick
			n.Attachments[i].Epoch = n.Epoch
			if j := n.attachment(v.Head); j >= 0 {
				n.Attachments = slices.Delete(n.Attachments, j, j+1)
			}
		case p.Renew && (v.Head == p.Brick || v.Head == ""):
			n.Epoch++
			n.Head = p.Brick
			n.Attachments[i].Epoch = n.Epoch
		case p.Endpoint != "" && p.Endpoint != v.Attachments[i].Endpoint:
		default:
			return v.clone(), nil // already attached: idempotent, the epoch stays
		}
		if p.Endpoint != "" {
			n.Attachments[n.attachment(p.Brick)].Endpoint = p.Endpoint
		}
		f.state.Volumes[n.ID] = n
		return n.clone(), nil
	}
	if p.TakeHead {
		return nil, fmt.Errorf("%s: %w: take-head needs the brick attached first", op, ErrNotFound)
	}
	n := v.clone()
	if n.Access == AccessShared {
		if n.Head == "" {
			n.Epoch++
			n.Head = p.Brick
		}
		n.Attachments = append(n.Attachments, Attachment{Brick: p.Brick, Epoch: n.Epoch, Since: at, Endpoint: p.Endpoint})
	} else {
		if len(n.Attachments) > 0 && !p.Force {
			return nil, fmt.Errorf("%s: %w: held by %s; attach with force to take it over", op, ErrAttached, f.brickNames(n.Attachments))
		}
		n.Epoch++
		n.Head = p.Brick
		n.Attachments = []Attachment{{Brick: p.Brick, Epoch: n.Epoch, Since: at}}
	}
	f.state.Volumes[n.ID] = n
	return n.clone(), nil
}

func (f *FSM) detach(p *Detach) (*Volume, error) {
	v, ok := f.state.Volumes[p.Volume]
	if !ok {
		return nil, fmt.Errorf("detach volume %s: %w", p.Volume, ErrNotFound)
	}
	i := v.attachment(p.Brick)
	if i < 0 {
		return nil, fmt.Errorf("detach volume %q (%s) from brick %s: %w: not attached there", v.Name, v.ID, f.brickName(p.Brick), ErrNotFound)
	}
	n := v.clone()
	n.Attachments = slices.Delete(n.Attachments, i, i+1)
	if n.Head == p.Brick {
		n.Head = ""
		if n.Access == AccessShared && len(n.Attachments) > 0 {
			// The oldest remaining attachment takes over, at a new epoch.
			oldest := 0
			for j, a := range n.Attachments {
				if a.Since.Before(n.Attachments[oldest].Since) {
					oldest = j
				}
			}
			n.Epoch++
			n.Head = n.Attachments[oldest].Brick
		}
	}
	if len(n.Attachments) == 0 {
		n.Attachments = nil
	}
	f.state.Volumes[n.ID] = n
	return n.clone(), nil
}

func (f *FSM) setISR(p *SetISR) (*Volume, error) {
	v, ok := f.state.Volumes[p.Volume]
	if !ok {
		return nil, fmt.Errorf("set ISR of volume %s: %w", p.Volume, ErrNotFound)
	}
	op := fmt.Sprintf("set ISR of volume %q (%s)", v.Name, v.ID)
	if p.Epoch != v.Epoch {
		return nil, fmt.Errorf("%s: %w: proposed at epoch %d, the volume is at epoch %d", op, ErrStaleEpoch, p.Epoch, v.Epoch)
	}
	for i, id := range p.ISR {
		if !slices.Contains(v.Placement, id) {
			return nil, fmt.Errorf("%s: %w: brick %s is not in the placement %v", op, ErrInvalid, id, v.Placement)
		}
		if slices.Contains(p.ISR[:i], id) {
			return nil, fmt.Errorf("%s: %w: brick %s is listed twice", op, ErrInvalid, id)
		}
	}
	n := v.clone()
	n.ISR = make([]BrickID, 0, len(p.ISR)) // empty means unavailable, kept non-nil
	for _, id := range v.Placement {
		if slices.Contains(p.ISR, id) {
			n.ISR = append(n.ISR, id)
		}
	}
	f.state.Volumes[n.ID] = n
	return n.clone(), nil
}

// attachment returns the index of brick's attachment, or -1.
func (v *Volume) attachment(brick BrickID) int {
	return slices.IndexFunc(v.Attachments, func(a Attachment) bool { return a.Brick == brick })
}

func (f *FSM) brickByName(name string) *Brick {
	for _, b := range f.state.Bricks {
		if b.Name == name {
			return b
		}
	}
	return nil
}

func (f *FSM) volumeByName(name string) *Volume {
	for _, v := range f.state.Volumes {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// sortedVolumes lists the volumes by name, for deterministic messages.
func (f *FSM) sortedVolumes() []*Volume {
	vols := make([]*Volume, 0, len(f.state.Volumes))
	for _, v := range f.state.Volumes {
		vols = append(vols, v)
	}
	sort.Slice(vols, func(i, j int) bool { return vols[i].Name < vols[j].Name })
	return vols
}

// volumesPlacedOn lists, quoted and sorted, the volumes with data on brick.
func (f *FSM) volumesPlacedOn(brick BrickID) []string {
	var names []string
	for _, v := range f.sortedVolumes() {
		if slices.Contains(v.Placement, brick) {
			names = append(names, fmt.Sprintf("%q", v.Name))
		}
	}
	return names
}

// brickName renders a brick for a message: its quoted name, or its ID if it
// is not in the catalog.
func (f *FSM) brickName(id BrickID) string {
	if b, ok := f.state.Bricks[id]; ok {
		return fmt.Sprintf("brick %q", b.Name)
	}
	return fmt.Sprintf("brick %s", id)
}

func (f *FSM) brickNames(atts []Attachment) string {
	names := make([]string, len(atts))
	for i, a := range atts {
		names[i] = f.brickName(a.Brick)
	}
	return strings.Join(names, ", ")
}

// State returns a deep copy of the whole state; the caller owns it.
func (f *FSM) State() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// ClusterID is the cluster's ID, "" before init-cluster is applied.
func (f *FSM) ClusterID() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.ClusterID
}

// Index is the Raft index of the last applied entry (State().Index, cheaply).
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Index
}

// VolumeByName returns a copy of the live volume with that name.
func (f *FSM) VolumeByName(name string) (*Volume, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if v := f.volumeByName(name); v != nil {
		return v.clone(), true
	}
	return nil, false
}

// Volume returns a copy of the live volume with that ID.
func (f *FSM) Volume(id VolumeID) (*Volume, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if v, ok := f.state.Volumes[id]; ok {
		return v.clone(), true
	}
	return nil, false
}

// Changed returns a channel that is closed at the next Apply or Restore
// (whatever its outcome). Take the channel, then read the state, then wait:
//
//	for {
//		ch := fsm.Changed()
//		if done(fsm.State()) {
//			break
//		}
//		<-ch // or select with a context
//	}
//
// Each call after a change returns a fresh channel.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// WaitIndex blocks until State.Index >= index or ctx ends (returning its
// error). Use it after a proposal to read one's own write on this node.
func (f *FSM) WaitIndex(ctx context.Context, index uint64) error {
	for {
		f.mu.RLock()
		at, ch := f.state.Index, f.changed
		f.mu.RUnlock()
		if at >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for raft index %d (at %d): %w", index, at, ctx.Err())
		}
	}
}

// Snapshot captures a deep copy of the state under the lock; Persist writes
// it later, outside the lock, while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{state: f.state.Clone()}, nil
}

type fsmSnapshot struct{ state *State }

// Persist writes the snapshot (see EncodeSnapshot) and closes the sink, or
// cancels it on error.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := EncodeSnapshot(sink, s.state); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot at index %d: %w", s.state.Index, err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot at index %d: %w", s.state.Index, err)
	}
	return nil
}

// Release does nothing: the snapshot holds only its own copy.
func (s *fsmSnapshot) Release() {}

// Restore replaces the state with a snapshot written by Persist. The whole
// snapshot is decoded and checked before the state is swapped; on any error
// (wrapping ErrInvalid) the current state is untouched. It closes rc.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := DecodeSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = st
	f.notifyLocked()
	return nil
}

// Clone returns a deep copy of s: maps, slices, labels and every brick and
// volume are new; nil stays nil and empty stays empty.
func (s *State) Clone() *State {
	if s == nil {
		return nil
	}
	c := &State{ClusterID: s.ClusterID, Index: s.Index}
	if s.Bricks != nil {
		c.Bricks = make(map[BrickID]*Brick, len(s.Bricks))
		for id, b := range s.Bricks {
			c.Bricks[id] = b.clone()
		}
	}
	if s.Volumes != nil {
		c.Volumes = make(map[VolumeID]*Volume, len(s.Volumes))
		for id, v := range s.Volumes {
			c.Volumes[id] = v.clone()
		}
	}
	if s.Tombstones != nil {
		c.Tombstones = make(map[VolumeID]time.Time, len(s.Tombstones))
		for id, t := range s.Tombstones {
			c.Tombstones[id] = t
		}
	}
	return c
}

func (b *Brick) clone() *Brick {
	if b == nil {
		return nil
	}
	c := *b
	return &c
}

func (v *Volume) clone() *Volume {
	if v == nil {
		return nil
	}
	c := *v
	if v.Labels != nil {
		c.Labels = make(map[string]string, len(v.Labels))
		for k, val := range v.Labels {
			c.Labels[k] = val
		}
	}
	c.Placement = slices.Clone(v.Placement)
	c.ISR = slices.Clone(v.ISR)
	c.Attachments = slices.Clone(v.Attachments)
	return &c
}
