package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// EncodeCommand encodes a command for the Raft log as JSON. A zero Version
// is set to CommandVersion; the command is otherwise encoded as given (no
// validation: DecodeCommand and the FSM do that).
func EncodeCommand(c Command) ([]byte, error) {
	if c.Version == 0 {
		c.Version = CommandVersion
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.Type, err)
	}
	return b, nil
}

// DecodeCommand decodes one Raft log entry strictly: a single JSON object,
// no unknown fields, Version == CommandVersion, a known Type, a non-zero At
// in years 1..9999 (UTC), and exactly the payload field matching Type set.
// At is returned in UTC. Errors wrap ErrInvalid and name the problem.
// It checks shape only; the FSM checks meaning.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Command{}, fmt.Errorf("decode command: %w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Command{}, fmt.Errorf("decode command: %w: trailing data after the command object", ErrInvalid)
	}
	if c.Version != CommandVersion {
		return Command{}, fmt.Errorf("decode command: %w: version %d, this build reads version %d only", ErrInvalid, c.Version, CommandVersion)
	}
	if c.At.IsZero() {
		return Command{}, fmt.Errorf("decode %s command: %w: no timestamp (at)", c.Type, ErrInvalid)
	}
	c.At = c.At.UTC()
	if y := c.At.Year(); y < 1 || y > 9999 {
		return Command{}, fmt.Errorf("decode %s command: %w: timestamp %s is out of range", c.Type, ErrInvalid, c.At)
	}
	want, set := c.payloadField(), c.setPayloads()
	if want == "" {
		return Command{}, fmt.Errorf("decode command: %w: unknown type %q", ErrInvalid, c.Type)
	}
	if len(set) != 1 || set[0] != want {
		return Command{}, fmt.Errorf("decode %s command: %w: want exactly the %q payload, have %q", c.Type, ErrInvalid, want, set)
	}
	// An empty map or list decodes as empty but re-encodes as absent
	// (omitempty): one form for both, so a command is what its bytes say.
	if v := c.CreateVolume; v != nil {
		if len(v.Labels) == 0 {
			v.Labels = nil
		}
		if len(v.Attachments) == 0 {
			v.Attachments = nil
		}
	}
	return c, nil
}

// payloadField is the JSON name of the payload Type calls for, or "" for an
// unknown type.
func (c *Command) payloadField() string {
	switch c.Type {
	case CmdInitCluster:
		return "init_cluster"
	case CmdUpsertBrick:
		return "upsert_brick"
	case CmdRemoveBrick:
		return "remove_brick"
	case CmdCreateVolume:
		return "create_volume"
	case CmdDeleteVolume:
		return "delete_volume"
	case CmdAttach:
		return "attach"
	case CmdDetach:
		return "detach"
	case CmdSetISR:
		return "set_isr"
	case CmdResizeVolume:
		return "resize_volume"
	}
	return ""
}

// setPayloads lists the JSON names of the non-nil payload fields.
func (c *Command) setPayloads() []string {
	set := []string{}
	add := func(isSet bool, name string) {
		if isSet {
			set = append(set, name)
		}
	}
	add(c.InitCluster != nil, "init_cluster")
	add(c.UpsertBrick != nil, "upsert_brick")
	add(c.RemoveBrick != nil, "remove_brick")
	add(c.CreateVolume != nil, "create_volume")
	add(c.DeleteVolume != nil, "delete_volume")
	add(c.Attach != nil, "attach")
	add(c.Detach != nil, "detach")
	add(c.SetISR != nil, "set_isr")
	add(c.ResizeVolume != nil, "resize_volume")
	return set
}

// SnapshotVersion is the encoding version of a state snapshot.
const SnapshotVersion = 1

// snapshotFile is the JSON form of a snapshot.
type snapshotFile struct {
	Version int    `json:"v"`
	State   *State `json:"state"`
}

// EncodeSnapshot writes st as a versioned JSON snapshot.
func EncodeSnapshot(w io.Writer, st *State) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(snapshotFile{Version: SnapshotVersion, State: st}); err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	return nil
}

// DecodeSnapshot reads a snapshot written by EncodeSnapshot, strictly (one
// object, no unknown fields, version SnapshotVersion), and checks its
// structure: no nil bricks or volumes, each filed under its own ID. Nil maps
// come back empty, timestamps in UTC. Errors wrap ErrInvalid.
func DecodeSnapshot(r io.Reader) (*State, error) {
	var f snapshotFile
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("decode snapshot: %w: trailing data after the snapshot object", ErrInvalid)
	}
	if f.Version != SnapshotVersion {
		return nil, fmt.Errorf("decode snapshot: %w: version %d, this build reads version %d only", ErrInvalid, f.Version, SnapshotVersion)
	}
	st := f.State
	if st == nil {
		return nil, fmt.Errorf("decode snapshot: %w: no state", ErrInvalid)
	}
	if st.Bricks == nil {
		st.Bricks = map[BrickID]*Brick{}
	}
	if st.Volumes == nil {
		st.Volumes = map[VolumeID]*Volume{}
	}
	if st.Tombstones == nil {
		st.Tombstones = map[VolumeID]time.Time{}
	}
	for id, b := range st.Bricks {
		if b == nil || b.ID != id {
			return nil, fmt.Errorf("decode snapshot: %w: brick entry %q holds %s", ErrInvalid, id, describeBrick(b))
		}
		b.JoinedAt, b.UpdatedAt = b.JoinedAt.UTC(), b.UpdatedAt.UTC()
	}
	for id, v := range st.Volumes {
		if v == nil || v.ID != id {
			return nil, fmt.Errorf("decode snapshot: %w: volume entry %q holds %s", ErrInvalid, id, describeVolume(v))
		}
		v.CreatedAt = v.CreatedAt.UTC()
		for i := range v.Attachments {
			v.Attachments[i].Since = v.Attachments[i].Since.UTC()
		}
		if len(v.Labels) == 0 {
			v.Labels = nil
		}
		if len(v.Attachments) == 0 {
			v.Attachments = nil
		}
	}
	for id, t := range st.Tombstones {
		st.Tombstones[id] = t.UTC()
	}
	return st, nil
}

func describeBrick(b *Brick) string {
	if b == nil {
		return "nothing"
	}
	return fmt.Sprintf("brick %q", b.ID)
}

func describeVolume(v *Volume) string {
	if v == nil {
		return "nothing"
	}
	return fmt.Sprintf("volume %q", v.ID)
}
