package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func logEntry(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// harness applies commands to an FSM at increasing indexes and times.
type harness struct {
	t testing.TB
	f *FSM
}

func newHarness(t testing.TB) *harness { return &harness{t: t, f: NewFSM()} }

// apply encodes c (At defaults to t0 + index seconds) and applies it at the
// next index.
func (h *harness) apply(c Command) *ApplyResult {
	h.t.Helper()
	idx := h.f.Index() + 1
	if c.At.IsZero() {
		c.At = t0.Add(time.Duration(idx) * time.Second)
	}
	res, ok := h.f.Apply(logEntry(idx, mustEncode(h.t, c))).(*ApplyResult)
	if !ok || res.Index != idx {
		h.t.Fatalf("Apply returned %#v", res)
	}
	return res
}

// ok applies c and fails the test if it is refused.
func (h *harness) ok(c Command) *Volume {
	h.t.Helper()
	res := h.apply(c)
	if res.Err != nil {
		h.t.Fatalf("%s: %v", c.Type, res.Err)
	}
	return res.Volume
}

// refuse applies c, wants an error matching sentinel and mentioning every
// part of want, and checks that nothing but Index changed.
func (h *harness) refuse(c Command, sentinel error, want ...string) {
	h.t.Helper()
	before := h.f.State()
	res := h.apply(c)
	if !errors.Is(res.Err, sentinel) {
		h.t.Fatalf("%s: err = %v, want %v", c.Type, res.Err, sentinel)
	}
	if res.Volume != nil {
		h.t.Errorf("%s refused but returned volume %+v", c.Type, res.Volume)
	}
	for _, w := range want {
		if !strings.Contains(res.Err.Error(), w) {
			h.t.Errorf("%s: error %q does not mention %q", c.Type, res.Err, w)
		}
	}
	after := h.f.State()
	if after.Index != before.Index+1 {
		h.t.Errorf("Index %d -> %d, want +1", before.Index, after.Index)
	}
	after.Index = before.Index
	assertStatesEqual(h.t, "state after refused "+string(c.Type), after, before)
}

func (h *harness) volume(id VolumeID) *Volume {
	h.t.Helper()
	v, ok := h.f.Volume(id)
	if !ok {
		h.t.Fatalf("volume %s missing", id)
	}
	return v
}

func assertStatesEqual(t testing.TB, what string, got, want *State) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("%s differs:\n got %s\nwant %s", what, g, w)
	}
}

func initCmd(id string) Command {
	return Command{Type: CmdInitCluster, InitCluster: &InitCluster{ClusterID: id}}
}

func brickCmd(id BrickID, name string, free uint64) Command {
	return Command{Type: CmdUpsertBrick, UpsertBrick: &Brick{ID: id, Name: name, Addr: name + ":7000", CapacityBytes: 1 << 40, FreeBytes: free}}
}

func createCmd(v Volume) Command {
	if v.SizeBytes == 0 {
		v.SizeBytes = 10 << 30
	}
	if v.Access == "" {
		v.Access = AccessSingle
	}
	if v.MinISR == 0 {
		v.MinISR = 1
	}
	return Command{Type: CmdCreateVolume, CreateVolume: &v}
}

func deleteCmd(name string, force bool) Command {
	return Command{Type: CmdDeleteVolume, DeleteVolume: &DeleteVolume{Name: name, Force: force}}
}

func attachCmd(v VolumeID, b BrickID, expect uint64, force bool) Command {
	return Command{Type: CmdAttach, Attach: &Attach{Volume: v, Brick: b, ExpectEpoch: expect, Force: force}}
}

func detachCmd(v VolumeID, b BrickID) Command {
	return Command{Type: CmdDetach, Detach: &Detach{Volume: v, Brick: b}}
}

func isrCmd(v VolumeID, epoch uint64, isr ...BrickID) Command {
	return Command{Type: CmdSetISR, SetISR: &SetISR{Volume: v, Epoch: epoch, ISR: isr}}
}

func removeBrickCmd(id BrickID) Command {
	return Command{Type: CmdRemoveBrick, RemoveBrick: &RemoveBrick{ID: id}}
}

// fixture: cluster c-1; bricks b1..b4 (h1..h4) and b5 (h5, no disk);
// volume v1 "db" replicas=3 single on b1,b2,b3; volume v2 "web"
// replicas=2 shared on b2,b3.
func fixture(t testing.TB) *harness {
	h := newHarness(t)
	h.ok(initCmd("c-1"))
	for i, name := range []string{"h1", "h2", "h3", "h4"} {
		h.ok(brickCmd(BrickID("b"+name[1:]), name, uint64(100-i)<<30))
	}
	nd := brickCmd("b5", "h5", 0)
	nd.UpsertBrick.NoDisk = true
	h.ok(nd)
	h.ok(createCmd(Volume{ID: "v1", Name: "db", Layout: Layout{Replicas: 3}, MinISR: 2, Placement: []BrickID{"b1", "b2", "b3"}}))
	h.ok(createCmd(Volume{ID: "v2", Name: "web", Layout: Layout{Replicas: 2}, Access: AccessShared, Placement: []BrickID{"b2", "b3"}}))
	return h
}

func populatedFSM(t testing.TB) *FSM {
	h := fixture(t)
	h.ok(attachCmd("v1", "b1", 0, false))
	h.ok(attachCmd("v2", "b2", 0, false))
	h.ok(attachCmd("v2", "b4", 0, false))
	return h.f
}

func TestInitCluster(t *testing.T) {
	h := newHarness(t)
	h.refuse(initCmd(""), ErrInvalid, "cluster ID is empty")
	h.refuse(initCmd("a b"), ErrInvalid, "0x20")
	h.ok(initCmd("c-1"))
	if got := h.f.State().ClusterID; got != "c-1" || h.f.ClusterID() != "c-1" {
		t.Fatalf("ClusterID = %q", got)
	}
	h.refuse(initCmd("c-2"), ErrClusterInitialized, `its ID is "c-1"`)
	h.refuse(initCmd("c-1"), ErrClusterInitialized, `"c-1"`)
}

func TestUpsertBrick(t *testing.T) {
	h := newHarness(t)
	at1 := t0.Add(time.Hour)
	c := brickCmd("b1", "h1", 50)
	c.At = at1
	h.ok(c)
	b := h.f.State().Bricks["b1"]
	want := Brick{ID: "b1", Name: "h1", Addr: "h1:7000", CapacityBytes: 1 << 40, FreeBytes: 50, JoinedAt: at1, UpdatedAt: at1}
	if *b != want {
		t.Fatalf("brick = %+v, want %+v", *b, want)
	}
	// Update: everything but JoinedAt follows the command; payload times are ignored.
	at2 := at1.Add(time.Hour)
	c = brickCmd("b1", "h1-renamed", 40)
	c.At = at2
	c.UpsertBrick.RaftAddr = "h1:7001"
	c.UpsertBrick.JoinedAt = t0.Add(-time.Hour)
	h.ok(c)
	b = h.f.State().Bricks["b1"]
	want = Brick{ID: "b1", Name: "h1-renamed", Addr: "h1-renamed:7000", RaftAddr: "h1:7001", CapacityBytes: 1 << 40, FreeBytes: 40, JoinedAt: at1, UpdatedAt: at2}
	if *b != want {
		t.Fatalf("updated brick = %+v, want %+v", *b, want)
	}
	h.refuse(brickCmd("", "h9", 1), ErrInvalid, "brick ID is empty")
	h.refuse(brickCmd("b9", "", 1), ErrInvalid, "brick name is empty")
	h.refuse(brickCmd("b9", "h\n9", 1), ErrInvalid, "brick name")
	bad := brickCmd("b9", "h9", 1)
	bad.UpsertBrick.RaftAddr = "a b"
	h.refuse(bad, ErrInvalid, "raft address")
	h.refuse(brickCmd("b2", "h1-renamed", 1), ErrExists, "belongs to brick b1", "remove the old brick (b1) first")
}

func TestUpsertBrickNoDiskWhileInUse(t *testing.T) {
	h := fixture(t)
	c := brickCmd("b1", "h1", 1)
	c.UpsertBrick.NoDisk = true
	h.refuse(c, ErrBrickInUse, `volumes "db" place data`)
	c = brickCmd("b4", "h4", 1)
	c.UpsertBrick.NoDisk = true
	h.ok(c)
}

func TestRemoveBrick(t *testing.T) {
	h := fixture(t)
	h.refuse(removeBrickCmd("b9"), ErrNotFound, "b9")
	h.refuse(removeBrickCmd("b2"), ErrBrickInUse, `volumes "db", "web" place data on it`)
	h.ok(attachCmd("v1", "b4", 0, false))
	h.refuse(removeBrickCmd("b4"), ErrBrickInUse, `volumes "db" are attached on it`)
	h.ok(detachCmd("v1", "b4"))
	h.ok(removeBrickCmd("b4"))
	if _, ok := h.f.State().Bricks["b4"]; ok {
		t.Fatal("b4 still there")
	}
	// A daemon that lost its data dir can come back under its old name now.
	h.ok(brickCmd("b4-new", "h4", 1))
}

func TestCreateVolume(t *testing.T) {
	h := fixture(t)
	c := createCmd(Volume{ID: "v3", Name: "cache", SizeBytes: 5 << 30, Layout: Layout{ECData: 2, ECParity: 1}, MinISR: 3,
		Labels: map[string]string{"team": "ci"}, Placement: []BrickID{"b4", "b1", "b2"}, ISR: []BrickID{"b1"}, CreatedAt: t0.Add(-time.Hour)})
	c.At = t0.Add(time.Hour)
	got := h.ok(c)
	want := &Volume{ID: "v3", Name: "cache", SizeBytes: 5 << 30, Layout: Layout{ECData: 2, ECParity: 1}, Access: AccessSingle, MinISR: 3,
		Labels: map[string]string{"team": "ci"}, Placement: []BrickID{"b4", "b1", "b2"}, ISR: []BrickID{"b4", "b1", "b2"}, CreatedAt: t0.Add(time.Hour)}
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(h.volume("v3"), want) {
		t.Fatalf("created %+v, want %+v", got, want)
	}
	got.Placement[0] = "mutated" // the result is a copy
	got.Labels["team"] = "mutated"
	if v := h.volume("v3"); v.Placement[0] != "b4" || v.Labels["team"] != "ci" {
		t.Fatal("ApplyResult.Volume aliases the state")
	}
	empty := createCmd(Volume{ID: "v4", Name: "nolabels", Layout: Layout{Replicas: 1}, Labels: map[string]string{}, Placement: []BrickID{"b1"}})
	if v := h.ok(empty); v.Labels != nil {
		t.Errorf("empty labels kept as %#v, want nil (snapshots drop them)", v.Labels)
	}
}

func TestCreateVolumeRefusals(t *testing.T) {
	good := func() Volume {
		return Volume{ID: "v9", Name: "new", SizeBytes: 1 << 30, Layout: Layout{Replicas: 2}, Access: AccessSingle, MinISR: 1, Placement: []BrickID{"b1", "b4"}}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Volume)
		err    error
		want   []string
	}{
		{"empty ID", func(v *Volume) { v.ID = "" }, ErrInvalid, []string{"volume ID is empty"}},
		{"empty name", func(v *Volume) { v.Name = "" }, ErrInvalid, []string{"volume name is empty"}},
		{"bad name", func(v *Volume) { v.Name = "a/b" }, ErrInvalid, []string{`'/' at position 2`}},
		{"name taken", func(v *Volume) { v.Name = "db" }, ErrExists, []string{"belongs to volume v1"}},
		{"ID taken", func(v *Volume) { v.ID = "v1" }, ErrExists, []string{"ID belongs to another volume"}},
		{"zero size", func(v *Volume) { v.SizeBytes = 0 }, ErrInvalid, []string{"size 0"}},
		{"huge size", func(v *Volume) { v.SizeBytes = 1 << 63 }, ErrInvalid, []string{"outside"}},
		{"no layout", func(v *Volume) { v.Layout = Layout{} }, ErrInvalid, []string{"no layout"}},
		{"both layouts", func(v *Volume) { v.Layout = Layout{Replicas: 2, ECData: 1, ECParity: 1} }, ErrInvalid, []string{"both set"}},
		{"ec without parity", func(v *Volume) { v.Layout = Layout{ECData: 2} }, ErrInvalid, []string{"K+M"}},
		{"negative", func(v *Volume) { v.Layout = Layout{Replicas: -2} }, ErrInvalid, []string{"negative"}},
		{"bad access", func(v *Volume) { v.Access = "many" }, ErrInvalid, []string{`access "many"`}},
		{"no access", func(v *Volume) { v.Access = "" }, ErrInvalid, []string{`access ""`}},
		{"min-isr 0", func(v *Volume) { v.MinISR = 0 }, ErrInvalid, []string{"min-isr 0"}},
		{"min-isr > width", func(v *Volume) { v.MinISR = 3 }, ErrInvalid, []string{"min-isr 3", "between 1 and 2"}},
		{"bad label", func(v *Volume) { v.Labels = map[string]string{"a b": "c"} }, ErrInvalid, []string{"label key"}},
		{"short placement", func(v *Volume) { v.Placement = v.Placement[:1] }, ErrInvalid, []string{"placement has 1 bricks, replicas=2 needs 2"}},
		{"long placement", func(v *Volume) { v.Placement = append(v.Placement, "b2") }, ErrInvalid, []string{"has 3 bricks"}},
		{"duplicate brick", func(v *Volume) { v.Placement = []BrickID{"b1", "b1"} }, ErrInvalid, []string{"brick b1 twice"}},
		{"unknown brick", func(v *Volume) { v.Placement = []BrickID{"b1", "b9"} }, ErrNotFound, []string{"b9 is not in the cluster"}},
		{"no-disk brick", func(v *Volume) { v.Placement = []BrickID{"b1", "b5"} }, ErrInvalid, []string{`"h5" (b5) has no disk`}},
		{"epoch set", func(v *Volume) { v.Epoch = 3 }, ErrInvalid, []string{"set by the state machine"}},
		{"head set", func(v *Volume) { v.Head = "b1" }, ErrInvalid, []string{"set by the state machine"}},
		{"attachments set", func(v *Volume) { v.Attachments = []Attachment{{Brick: "b1"}} }, ErrInvalid, []string{"set by the state machine"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := fixture(t)
			v := good()
			tc.mutate(&v)
			h.refuse(Command{Type: CmdCreateVolume, CreateVolume: &v}, tc.err, tc.want...)
		})
	}
	t.Run("tombstoned ID", func(t *testing.T) {
		h := fixture(t)
		h.ok(deleteCmd("db", false))
		v := good()
		v.ID = "v1"
		h.refuse(Command{Type: CmdCreateVolume, CreateVolume: &v}, ErrExists, "deleted at", "never reused")
		v.ID = "v1-b"
		v.Name = "db" // the name is free again
		h.ok(Command{Type: CmdCreateVolume, CreateVolume: &v})
	})
}

func TestDeleteVolume(t *testing.T) {
	h := fixture(t)
	h.refuse(deleteCmd("nope", false), ErrNotFound, `"nope"`)
	h.ok(attachCmd("v2", "b1", 0, false))
	h.ok(attachCmd("v2", "b4", 0, false))
	h.refuse(deleteCmd("web", false), ErrAttached, `brick "h1", brick "h4"`, "force")
	at := t0.Add(24 * time.Hour)
	c := deleteCmd("web", true)
	c.At = at
	if v := h.ok(c); v == nil || v.ID != "v2" {
		t.Fatalf("delete returned %+v", v)
	}
	st := h.f.State()
	if _, ok := st.Volumes["v2"]; ok || st.Tombstones["v2"] != at {
		t.Fatalf("after delete: volumes %v tombstones %v", st.Volumes, st.Tombstones)
	}
	h.ok(deleteCmd("db", false)) // not attached: no force needed
	h.refuse(deleteCmd("db", true), ErrNotFound)
}

func TestAttachSingle(t *testing.T) {
	h := fixture(t)
	at := t0.Add(time.Hour)
	c := attachCmd("v1", "b1", 0, false)
	c.At = at
	v := h.ok(c)
	if v.Epoch != 1 || v.Head != "b1" || !reflect.DeepEqual(v.Attachments, []Attachment{{Brick: "b1", Epoch: 1, Since: at}}) {
		t.Fatalf("after attach: %+v", v)
	}
	// Idempotent: attaching again, even with force, changes nothing.
	before := h.f.State()
	for _, c := range []Command{attachCmd("v1", "b1", 0, false), attachCmd("v1", "b1", 1, true)} {
		if v := h.ok(c); v.Epoch != 1 || v.Head != "b1" {
			t.Fatalf("re-attach: %+v", v)
		}
	}
	after := h.f.State()
	after.Index = before.Index
	assertStatesEqual(t, "state after idempotent attach", after, before)

	h.refuse(attachCmd("v1", "b2", 0, false), ErrAttached, `held by brick "h1"`, "force")
	h.refuse(attachCmd("v1", "b2", 5, true), ErrStaleEpoch, "expected epoch 5", "at epoch 1")
	h.refuse(attachCmd("v1", "b1", 5, false), ErrStaleEpoch) // the epoch check comes first
	h.refuse(attachCmd("v9", "b2", 0, false), ErrNotFound, "v9")
	h.refuse(attachCmd("v1", "b9", 0, true), ErrNotFound, "b9")

	// Force takes over at the next epoch and drops the old holder.
	v = h.ok(attachCmd("v1", "b2", 1, true))
	if v.Epoch != 2 || v.Head != "b2" || len(v.Attachments) != 1 || v.Attachments[0].Brick != "b2" || v.Attachments[0].Epoch != 2 {
		t.Fatalf("after forced attach: %+v", v)
	}
	// Detach, then attach elsewhere: the epoch moves on from 2.
	h.ok(detachCmd("v1", "b2"))
	v = h.ok(attachCmd("v1", "b5", 2, false)) // a no-disk host may mount
	if v.Epoch != 3 || v.Head != "b5" {
		t.Fatalf("attach after detach: %+v", v)
	}
}

func TestAttachRenew(t *testing.T) {
	h := fixture(t)
	h.ok(attachCmd("v1", "b1", 0, false))
	renew := attachCmd("v1", "b1", 1, false)
	renew.Attach.Renew = true
	v := h.ok(renew)
	if v.Epoch != 2 || v.Head != "b1" || len(v.Attachments) != 1 || v.Attachments[0].Epoch != 2 {
		t.Fatalf("after renew: %+v", v)
	}
	// A renew conditioned on the old epoch loses a race with another renew.
	h.refuse(renew, ErrStaleEpoch, "expected epoch 1")
	// Renew is not a takeover: another host is still refused.
	other := attachCmd("v1", "b2", 0, false)
	other.Attach.Renew = true
	h.refuse(other, ErrAttached)
	// A non-head attachment of a shared volume is not bumped by renew.
	h.ok(attachCmd("v2", "b1", 0, false))
	h.ok(attachCmd("v2", "b4", 0, false))
	r := attachCmd("v2", "b4", 0, false)
	r.Attach.Renew = true
	if v := h.ok(r); v.Epoch != 1 || v.Head != "b1" {
		t.Fatalf("renew of a non-head shared attachment: %+v", v)
	}
}

func TestAttachShared(t *testing.T) {
	h := fixture(t)
	v := h.ok(attachCmd("v2", "b1", 0, false))
	if v.Epoch != 1 || v.Head != "b1" {
		t.Fatalf("first shared attach: %+v", v)
	}
	v = h.ok(attachCmd("v2", "b4", 0, false))
	if v.Epoch != 1 || v.Head != "b1" || len(v.Attachments) != 2 || v.Attachments[1] != (Attachment{Brick: "b4", Epoch: 1, Since: v.Attachments[1].Since}) {
		t.Fatalf("second shared attach: %+v", v)
	}
	v = h.ok(attachCmd("v2", "b4", 0, false)) // idempotent
	if len(v.Attachments) != 2 || v.Epoch != 1 {
		t.Fatalf("repeated shared attach: %+v", v)
	}
	h.refuse(attachCmd("v2", "b5", 7, false), ErrStaleEpoch)
	v = h.ok(attachCmd("v2", "b5", 1, false))
	if len(v.Attachments) != 3 || v.Head != "b1" {
		t.Fatalf("third shared attach: %+v", v)
	}
}

// A shared volume's endpoint is recorded without an epoch change, and an
// attached host takes the head over from a dead one at the next epoch,
// conditioned on the epoch it judged.
func TestAttachTakeHead(t *testing.T) {
	h := fixture(t)
	h.ok(attachCmd("v2", "b1", 0, false))
	h.ok(attachCmd("v2", "b4", 0, false))
	ep := attachCmd("v2", "b4", 1, false)
	ep.Attach.Endpoint = "127.0.0.4:4000"
	v := h.ok(ep)
	if v.Epoch != 1 || v.Head != "b1" || v.Attachments[1].Endpoint != "127.0.0.4:4000" {
		t.Fatalf("after endpoint: %+v", v)
	}
	take := attachCmd("v2", "b4", 1, false)
	take.Attach.TakeHead = true
	v = h.ok(take)
	if v.Epoch != 2 || v.Head != "b4" || len(v.Attachments) != 1 || v.Attachments[0].Brick != "b4" ||
		v.Attachments[0].Epoch != 2 || v.Attachments[0].Endpoint != "127.0.0.4:4000" {
		t.Fatalf("after take-head: %+v", v)
	}
	// A second taker that judged epoch 1 loses the race.
	h.ok(attachCmd("v2", "b5", 0, false))
	late := attachCmd("v2", "b5", 1, false)
	late.Attach.TakeHead = true
	h.refuse(late, ErrStaleEpoch, "expected epoch 1")
	// Taking the head one already has changes nothing.
	again := attachCmd("v2", "b4", 2, false)
	again.Attach.TakeHead = true
	if v = h.ok(again); v.Epoch != 2 || v.Head != "b4" {
		t.Fatalf("take-head by the head: %+v", v)
	}
	// Not attached, or not shared: refused.
	un := attachCmd("v2", "b2", 2, false)
	un.Attach.TakeHead = true
	h.refuse(un, ErrNotFound, "attached first")
	h.ok(attachCmd("v1", "b1", 0, false))
	single := attachCmd("v1", "b1", 0, false)
	single.Attach.TakeHead = true
	h.refuse(single, ErrInvalid, "shared")
}

func TestDetach(t *testing.T) {
	h := fixture(t)
	h.refuse(detachCmd("v9", "b1"), ErrNotFound, "v9")
	h.refuse(detachCmd("v1", "b1"), ErrNotFound, `brick "h1"`, "not attached")

	h.ok(attachCmd("v1", "b1", 0, false))
	v := h.ok(detachCmd("v1", "b1"))
	if v.Head != "" || v.Epoch != 1 || v.Attachments != nil {
		t.Fatalf("single after detach: %+v", v)
	}

	// Shared: b1 (head, oldest), b4, b5. Detaching a non-head keeps the head
	// and epoch; detaching the head hands over to the oldest remaining
	// attachment at a new epoch.
	h.ok(attachCmd("v2", "b1", 0, false))
	h.ok(attachCmd("v2", "b4", 0, false))
	h.ok(attachCmd("v2", "b5", 0, false))
	v = h.ok(detachCmd("v2", "b5"))
	if v.Head != "b1" || v.Epoch != 1 || len(v.Attachments) != 2 {
		t.Fatalf("shared after non-head detach: %+v", v)
	}
	h.ok(attachCmd("v2", "b5", 0, false))
	v = h.ok(detachCmd("v2", "b1"))
	if v.Head != "b4" || v.Epoch != 2 || len(v.Attachments) != 2 {
		t.Fatalf("shared after head detach: %+v", v)
	}
	v = h.ok(detachCmd("v2", "b4"))
	if v.Head != "b5" || v.Epoch != 3 {
		t.Fatalf("shared after second head detach: %+v", v)
	}
	v = h.ok(detachCmd("v2", "b5"))
	if v.Head != "" || v.Epoch != 3 || v.Attachments != nil {
		t.Fatalf("shared after last detach: %+v", v)
	}
	// The next attach bumps the epoch.
	if v = h.ok(attachCmd("v2", "b4", 0, false)); v.Epoch != 4 || v.Head != "b4" {
		t.Fatalf("shared re-attach: %+v", v)
	}
}

func TestSetISR(t *testing.T) {
	h := fixture(t)
	v := h.ok(isrCmd("v1", 0, "b3", "b1")) // never attached: epoch 0
	if !reflect.DeepEqual(v.ISR, []BrickID{"b1", "b3"}) {
		t.Fatalf("ISR = %v, want placement order [b1 b3]", v.ISR)
	}
	h.ok(attachCmd("v1", "b1", 0, false))
	h.refuse(isrCmd("v1", 0, "b1"), ErrStaleEpoch, "proposed at epoch 0", "at epoch 1")
	h.refuse(isrCmd("v1", 2, "b1"), ErrStaleEpoch)
	h.refuse(isrCmd("v1", 1, "b1", "b4"), ErrInvalid, "b4 is not in the placement")
	h.refuse(isrCmd("v1", 1, "b1", "b1"), ErrInvalid, "b1 is listed twice")
	h.refuse(isrCmd("v9", 1, "b1"), ErrNotFound)
	v = h.ok(isrCmd("v1", 1, "b3", "b2", "b1"))
	if !reflect.DeepEqual(v.ISR, []BrickID{"b1", "b2", "b3"}) {
		t.Fatalf("ISR = %v", v.ISR)
	}
	v = h.ok(isrCmd("v1", 1)) // empty: unavailable, allowed
	if v.ISR == nil || len(v.ISR) != 0 {
		t.Fatalf("empty ISR = %#v, want empty non-nil", v.ISR)
	}
}

// A head at epoch 1 tries to drop a replica from the ISR after a new head
// took over at epoch 2: its set-isr must be refused, or it could shrink the
// successor's ISR.
func TestISRShrinkRacesNewEpoch(t *testing.T) {
	h := fixture(t)
	h.ok(attachCmd("v1", "b1", 0, false))          // old head, epoch 1
	h.ok(attachCmd("v1", "b4", 1, true))           // takeover, epoch 2
	h.refuse(isrCmd("v1", 1, "b1"), ErrStaleEpoch) // old head's shrink, late
	if v := h.volume("v1"); !reflect.DeepEqual(v.ISR, []BrickID{"b1", "b2", "b3"}) || v.Epoch != 2 {
		t.Fatalf("volume after the race: %+v", v)
	}
	h.ok(isrCmd("v1", 2, "b2", "b3")) // the new head may
}

func TestApplyUndecodable(t *testing.T) {
	h := fixture(t)
	for _, data := range [][]byte{nil, []byte("garbage"), []byte(`{"v":1,"type":"attach"}`), {0xff, 0x00}} {
		before := h.f.State()
		idx := before.Index + 1
		res := h.f.Apply(logEntry(idx, data)).(*ApplyResult)
		if !errors.Is(res.Err, ErrInvalid) || res.Index != idx || res.Volume != nil {
			t.Fatalf("Apply(%q) = %+v", data, res)
		}
		after := h.f.State()
		if after.Index != idx {
			t.Errorf("Index = %d, want %d", after.Index, idx)
		}
		after.Index = before.Index
		assertStatesEqual(t, "state after undecodable entry", after, before)
	}
}

func TestApplyRefusesOldIndex(t *testing.T) {
	h := fixture(t)
	before := h.f.State()
	res := h.f.Apply(logEntry(before.Index, mustEncode(t, initCmd("x")))).(*ApplyResult)
	if !errors.Is(res.Err, ErrInvalid) || !strings.Contains(res.Err.Error(), "already at index") {
		t.Fatalf("replayed index: %v", res.Err)
	}
	assertStatesEqual(t, "state after replayed index", h.f.State(), before)
}

func TestStateIsDeepCopy(t *testing.T) {
	f := populatedFSM(t)
	st := f.State()
	st.Bricks["b1"].Name = "x"
	st.Volumes["v1"].Placement[0] = "x"
	st.Volumes["v1"].ISR[0] = "x"
	st.Volumes["v1"].Attachments[0].Brick = "x"
	delete(st.Volumes, "v2")
	st.Tombstones["zz"] = t0
	v, _ := f.VolumeByName("db")
	v.Labels = map[string]string{"x": "y"}
	assertStatesEqual(t, "state after mutating copies", f.State(), populatedFSM(t).State())
	if _, ok := f.VolumeByName("nope"); ok {
		t.Error("VolumeByName found a missing volume")
	}
	if (*State)(nil).Clone() != nil {
		t.Error("nil Clone")
	}
}

func TestChangedAndWaitIndex(t *testing.T) {
	h := fixture(t)
	ch := h.f.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any apply")
	default:
	}
	idx := h.f.Index()
	done := make(chan error, 1)
	go func() { done <- h.f.WaitIndex(context.Background(), idx+2) }()
	h.refuse(initCmd("again"), ErrClusterInitialized) // refused entries count too
	<-ch
	if h.f.Changed() == ch {
		t.Fatal("Changed returned the closed channel")
	}
	h.ok(attachCmd("v1", "b1", 0, false))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.f.WaitIndex(ctx, idx+100); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitIndex on a cancelled context = %v", err)
	}
	if err := h.f.WaitIndex(ctx, idx); err != nil {
		t.Fatalf("WaitIndex for a past index = %v", err)
	}
}

// Readers run while Apply and Snapshot run; -race checks the locking.
func TestConcurrentReaders(t *testing.T) {
	h := fixture(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = h.f.State()
				_, _ = h.f.VolumeByName("db")
				_, _ = h.f.Volume("v2")
				_ = h.f.Changed()
			}
		}()
	}
	for i := range 200 {
		if i%2 == 0 {
			h.ok(attachCmd("v2", "b4", 0, false))
		} else {
			h.ok(detachCmd("v2", "b4"))
		}
		if i%50 == 0 {
			snapshotBytes(t, h.f)
		}
	}
	close(stop)
	wg.Wait()
}

var seedFlag = flag.Int64("seed", 0, "seed for the random command tests (0: from the clock)")

// randomCommand draws a command over a small universe of IDs and names, so
// that most commands meet existing objects and many are refused.
func randomCommand(r *rand.Rand, st *State, step int) Command {
	pick := func(n int, prefix string) string { return prefix + strconv.Itoa(1+r.IntN(n)) }
	live := slices.Sorted(maps.Keys(st.Volumes))
	volID := func() VolumeID {
		if len(live) > 0 && r.IntN(4) != 0 {
			return live[r.IntN(len(live))]
		}
		return VolumeID(pick(10, "v"))
	}
	brickID := func() BrickID { return BrickID(pick(6, "b")) }
	c := Command{At: t0.Add(time.Duration(step) * time.Second)}
	if r.IntN(10) == 0 {
		c.At = c.At.In(time.FixedZone("X", 3600))
	}
	current := func(id VolumeID) *Volume { return st.Volumes[id] }
	switch n := r.IntN(100); {
	case n < 2:
		c.Type, c.InitCluster = CmdInitCluster, &InitCluster{ClusterID: pick(2, "c")}
	case n < 17:
		id := brickID()
		c.Type, c.UpsertBrick = CmdUpsertBrick, &Brick{ID: id, Name: pick(7, "h"), FreeBytes: uint64(r.IntN(100)) << 30, NoDisk: r.IntN(10) == 0}
	case n < 22:
		c.Type, c.RemoveBrick = CmdRemoveBrick, &RemoveBrick{ID: brickID()}
	case n < 42:
		l := Layout{Replicas: 1 + r.IntN(3)}
		if r.IntN(3) == 0 {
			l = Layout{ECData: 2, ECParity: 1}
		}
		var bricks []*Brick
		for _, b := range st.Bricks {
			bricks = append(bricks, b)
		}
		var vols []*Volume
		for _, v := range st.Volumes {
			vols = append(vols, v)
		}
		placement, err := Place(bricks, vols, l.Width())
		if err != nil || r.IntN(5) == 0 {
			placement = nil
			for range l.Width() {
				placement = append(placement, brickID())
			}
		}
		access := AccessSingle
		if r.IntN(2) == 0 {
			access = AccessShared
		}
		c.Type, c.CreateVolume = CmdCreateVolume, &Volume{ID: volID(), Name: pick(6, "n"), SizeBytes: uint64(1+r.IntN(20)) << 30,
			Layout: l, Access: access, MinISR: r.IntN(l.Width() + 2), Placement: placement}
	case n < 50:
		c.Type, c.DeleteVolume = CmdDeleteVolume, &DeleteVolume{Name: pick(6, "n"), Force: r.IntN(2) == 0}
	case n < 70:
		a := &Attach{Volume: volID(), Brick: brickID(), Force: r.IntN(3) == 0}
		if v := current(a.Volume); v != nil && r.IntN(2) == 0 {
			a.ExpectEpoch = v.Epoch
		} else if r.IntN(4) == 0 {
			a.ExpectEpoch = uint64(r.IntN(5))
		}
		c.Type, c.Attach = CmdAttach, a
	case n < 85:
		d := &Detach{Volume: volID(), Brick: brickID()}
		if v := current(d.Volume); v != nil && len(v.Attachments) > 0 && r.IntN(4) != 0 {
			d.Brick = v.Attachments[r.IntN(len(v.Attachments))].Brick
		}
		c.Type, c.Detach = CmdDetach, d
	default:
		s := &SetISR{Volume: volID(), Epoch: uint64(r.IntN(3))}
		if v := current(s.Volume); v != nil {
			if r.IntN(4) != 0 {
				s.Epoch = v.Epoch
			}
			for _, id := range v.Placement {
				if r.IntN(3) != 0 {
					s.ISR = append(s.ISR, id)
				}
			}
		}
		if r.IntN(8) == 0 {
			s.ISR = append(s.ISR, brickID())
		}
		c.Type, c.SetISR = CmdSetISR, s
	}
	return c
}

// checkInvariants verifies what every reachable state must satisfy.
func checkInvariants(st *State) error {
	names := map[string]VolumeID{}
	for id, v := range st.Volumes {
		if other, dup := names[v.Name]; dup {
			return fmt.Errorf("volumes %s and %s share the name %q", id, other, v.Name)
		}
		names[v.Name] = id
		if _, ok := st.Tombstones[id]; ok {
			return fmt.Errorf("volume %s is live and tombstoned", id)
		}
		if len(v.Placement) != v.Layout.Width() || v.MinISR < 1 || v.MinISR > v.Layout.Width() {
			return fmt.Errorf("volume %s: placement %v, layout %s, min-isr %d", id, v.Placement, v.Layout, v.MinISR)
		}
		for _, b := range v.Placement {
			if br, ok := st.Bricks[b]; !ok || br.NoDisk {
				return fmt.Errorf("volume %s placed on missing or disk-less brick %s", id, b)
			}
		}
		last := -1
		for _, b := range v.ISR {
			i := slices.Index(v.Placement, b)
			if i <= last {
				return fmt.Errorf("volume %s: ISR %v is not an ordered subset of placement %v", id, v.ISR, v.Placement)
			}
			last = i
		}
		headAttached := v.Head == ""
		for _, a := range v.Attachments {
			if _, ok := st.Bricks[a.Brick]; !ok || a.Epoch > v.Epoch || a.Epoch == 0 {
				return fmt.Errorf("volume %s: bad attachment %+v at epoch %d", id, a, v.Epoch)
			}
			headAttached = headAttached || a.Brick == v.Head
		}
		if !headAttached || (len(v.Attachments) > 0) != (v.Head != "") {
			return fmt.Errorf("volume %s: head %q with attachments %+v", id, v.Head, v.Attachments)
		}
		if v.Access == AccessSingle && len(v.Attachments) > 1 {
			return fmt.Errorf("single-access volume %s attached %d times", id, len(v.Attachments))
		}
	}
	return nil
}

// Two FSMs fed the same random commands, one of them snapshotted and
// restored into a fresh FSM midway, answer every command alike and end in
// equal states; every state on the way satisfies the invariants.
func TestRandomCommandsSnapshotMidway(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
	for run := range 30 {
		r := rand.New(rand.NewPCG(uint64(seed), uint64(run)))
		a, b := newHarness(t), newHarness(t)
		steps := 100 + r.IntN(300)
		mid := r.IntN(steps)
		refused := 0
		for i := range steps {
			if i == mid {
				c := NewFSM()
				if err := c.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, b.f)))); err != nil {
					t.Fatalf("seed %d run %d: restore: %v", seed, run, err)
				}
				b.f = c
			}
			cmd := randomCommand(r, a.f.State(), i)
			ra, rb := a.apply(cmd), b.apply(cmd)
			if fmt.Sprint(ra.Err) != fmt.Sprint(rb.Err) || !reflect.DeepEqual(ra.Volume, rb.Volume) {
				t.Fatalf("seed %d run %d step %d %s: results differ:\n%+v\n%+v", seed, run, i, cmd.Type, ra, rb)
			}
			if ra.Err != nil {
				refused++
			}
			if err := checkInvariants(a.f.State()); err != nil {
				t.Fatalf("seed %d run %d step %d %s: %v", seed, run, i, cmd.Type, err)
			}
		}
		assertStatesEqual(t, fmt.Sprintf("seed %d run %d: final state", seed, run), b.f.State(), a.f.State())
		if refused == steps || refused == 0 {
			t.Errorf("seed %d run %d: %d of %d commands refused; the generator is off", seed, run, refused, steps)
		}
	}
}

func TestResizeVolume(t *testing.T) {
	h := fixture(t)
	resize := func(name string, size uint64) Command {
		return Command{Version: CommandVersion, Type: CmdResizeVolume, At: t0, ResizeVolume: &ResizeVolume{Name: name, SizeBytes: size}}
	}
	before := h.f.State().Volumes["v1"].SizeBytes
	v := h.ok(resize(h.f.State().Volumes["v1"].Name, before*2))
	if v.SizeBytes != before*2 {
		t.Fatalf("after resize: %d bytes, want %d", v.SizeBytes, before*2)
	}
	h.ok(resize(v.Name, before*2)) // the same size again: idempotent
	h.refuse(resize(v.Name, before), ErrInvalid, "only grow")
	h.refuse(resize("nope", before), ErrNotFound)
	b, err := EncodeCommand(resize(v.Name, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := DecodeCommand(b); err != nil || c.ResizeVolume == nil || c.ResizeVolume.SizeBytes != 1<<40 {
		t.Fatalf("round trip: %+v, %v", c, err)
	}
}
