package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 14, 2, 11, 0, time.UTC)

// sampleCommands is one valid command of every type.
func sampleCommands() []Command {
	return []Command{
		{Type: CmdInitCluster, At: t0, InitCluster: &InitCluster{ClusterID: "c-1"}},
		{Type: CmdUpsertBrick, At: t0, UpsertBrick: &Brick{ID: "b1", Name: "h1", Addr: "127.0.0.1:7000", RaftAddr: "127.0.0.1:7001", CapacityBytes: 100 << 30, FreeBytes: 90 << 30}},
		{Type: CmdRemoveBrick, At: t0, RemoveBrick: &RemoveBrick{ID: "b1"}},
		{Type: CmdCreateVolume, At: t0, CreateVolume: &Volume{ID: "v1", Name: "db", SizeBytes: 10 << 30, Layout: Layout{Replicas: 3},
			Access: AccessSingle, MinISR: 2, Labels: map[string]string{"team": "ci"}, Placement: []BrickID{"b1", "b2", "b3"}}},
		{Type: CmdDeleteVolume, At: t0, DeleteVolume: &DeleteVolume{Name: "db", Force: true}},
		{Type: CmdAttach, At: t0, Attach: &Attach{Volume: "v1", Brick: "b1", ExpectEpoch: 3, Force: true}},
		{Type: CmdDetach, At: t0, Detach: &Detach{Volume: "v1", Brick: "b1"}},
		{Type: CmdSetISR, At: t0, SetISR: &SetISR{Volume: "v1", Epoch: 2, ISR: []BrickID{"b1", "b3"}}},
	}
}

func mustEncode(t testing.TB, c Command) []byte {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatalf("EncodeCommand(%s): %v", c.Type, err)
	}
	return b
}

func TestCodecRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		b := mustEncode(t, c)
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("DecodeCommand(%s): %v", b, err)
		}
		c.Version = CommandVersion
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", c.Type, got, c)
		}
	}
}

func TestEncodeSetsVersion(t *testing.T) {
	b := mustEncode(t, sampleCommands()[0])
	if !bytes.Contains(b, []byte(`"v":1`)) {
		t.Errorf("encoding lacks the version: %s", b)
	}
	c := sampleCommands()[0]
	c.Version = 7
	if _, err := DecodeCommand(mustEncode(t, c)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "version 7") {
		t.Errorf("version 7 decoded: %v", err)
	}
}

func TestDecodeCommandRefuses(t *testing.T) {
	at := `"at":"2026-11-23T14:02:11Z"`
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", ``, "EOF"},
		{"not json", `hello`, "invalid character"},
		{"null", `null`, "version 0"},
		{"array", `[]`, "cannot unmarshal array"},
		{"unknown field", `{"v":1,"type":"detach",` + at + `,"detach":{"volume":"v","brick":"b"},"extra":1}`, `unknown field "extra"`},
		{"unknown payload field", `{"v":1,"type":"detach",` + at + `,"detach":{"volume":"v","brick":"b","force":true}}`, `unknown field "force"`},
		{"no version", `{"type":"detach",` + at + `,"detach":{"volume":"v","brick":"b"}}`, "version 0"},
		{"version 2", `{"v":2,"type":"detach",` + at + `,"detach":{"volume":"v","brick":"b"}}`, "version 2"},
		{"unknown type", `{"v":1,"type":"explode",` + at + `,"detach":{"volume":"v","brick":"b"}}`, `unknown type "explode"`},
		{"no type", `{"v":1,` + at + `,"detach":{"volume":"v","brick":"b"}}`, `unknown type ""`},
		{"no payload", `{"v":1,"type":"detach",` + at + `}`, `want exactly the "detach" payload, have []`},
		{"null payload", `{"v":1,"type":"detach",` + at + `,"detach":null}`, `have []`},
		{"wrong payload", `{"v":1,"type":"detach",` + at + `,"attach":{"volume":"v","brick":"b"}}`, `have ["attach"]`},
		{"two payloads", `{"v":1,"type":"detach",` + at + `,"attach":{},"detach":{}}`, `have ["attach" "detach"]`},
		{"no timestamp", `{"v":1,"type":"detach","detach":{"volume":"v","brick":"b"}}`, "no timestamp"},
		{"bad timestamp", `{"v":1,"type":"detach","at":"yesterday","detach":{}}`, "cannot parse"},
		{"timestamp out of range", `{"v":1,"type":"detach","at":"9999-12-31T23:59:59-01:00","detach":{}}`, "out of range"},
		{"trailing data", `{"v":1,"type":"detach",` + at + `,"detach":{}} {}`, "trailing data"},
		{"wrong field type", `{"v":1,"type":"set-isr",` + at + `,"set_isr":{"epoch":"one"}}`, "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCommand([]byte(tc.in))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("DecodeCommand(%s) = %v, want ErrInvalid", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestDecodeCommandNormalizesAtToUTC(t *testing.T) {
	c, err := DecodeCommand([]byte(`{"v":1,"type":"detach","at":"2026-11-23T15:02:11+01:00","detach":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.At != t0 { // == compares location too
		t.Errorf("At = %v, want %v in UTC", c.At, t0)
	}
}

// FuzzDecodeCommand: DecodeCommand never panics, refuses with ErrInvalid,
// and whatever it accepts re-encodes to bytes that decode to the same
// command.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		f.Add(mustEncode(f, c))
	}
	f.Add([]byte(`{"v":1,"type":"detach","at":"2026-11-23T15:02:11.123456789+01:00","detach":{}}`))
	f.Add([]byte(`{"v":1,"type":"upsert_brick","at":"0001-01-01T00:00:01Z","upsert_brick":{"joined_at":"0000-01-01T00:00:00+01:00"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal %v does not wrap ErrInvalid", err)
			}
			return
		}
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("accepted %q but cannot re-encode %+v: %v", data, c, err)
		}
		c2, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("re-encoding %s of accepted %q refused: %v", b, data, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the command:\n%+v\n%+v", c, c2)
		}
		b2, err := EncodeCommand(c2)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("encoding not stable: %s vs %s (%v)", b, b2, err)
		}
		// Applying it must not panic either, on an empty or a populated FSM.
		for _, fsm := range []*FSM{NewFSM(), populatedFSM(t)} {
			fsm.Apply(logEntry(fsm.Index()+1, b))
		}
	})
}

func TestSnapshotDecodeRefuses(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", ``, "EOF"},
		{"garbage", `\x00\x01garbage`, "invalid character"},
		{"no version", `{"state":{}}`, "version 0"},
		{"version 9", `{"v":9,"state":{}}`, "version 9"},
		{"no state", `{"v":1}`, "no state"},
		{"unknown field", `{"v":1,"state":{"colour":"red"}}`, `unknown field "colour"`},
		{"nil brick", `{"v":1,"state":{"bricks":{"b1":null}}}`, `brick entry "b1" holds nothing`},
		{"brick under wrong ID", `{"v":1,"state":{"bricks":{"b1":{"id":"b2"}}}}`, `brick entry "b1" holds brick "b2"`},
		{"nil volume", `{"v":1,"state":{"volumes":{"v1":null}}}`, `volume entry "v1" holds nothing`},
		{"volume under wrong ID", `{"v":1,"state":{"volumes":{"v1":{"id":"v2"}}}}`, `volume entry "v1" holds volume "v2"`},
		{"truncated", `{"v":1,"state":{"cluster_id":"c`, "unexpected EOF"},
		{"trailing", `{"v":1,"state":{}}x`, "trailing data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeSnapshot(strings.NewReader(tc.in))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("DecodeSnapshot(%s) = %v, want ErrInvalid mentioning %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestSnapshotEncodingIsJSONWithVersion(t *testing.T) {
	var buf bytes.Buffer
	if err := EncodeSnapshot(&buf, populatedFSM(t).State()); err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil || string(m["v"]) != "1" || m["state"] == nil {
		t.Errorf("snapshot is not {v:1, state:...}: %s (%v)", buf.Bytes(), err)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed || sink.cancelled {
		t.Fatalf("Persist: %v (closed %v, cancelled %v)", err, sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	f := populatedFSM(t)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := f.State()
	// Applying after Snapshot must not change what Persist writes.
	h := &harness{t: t, f: f}
	h.ok(attachCmd("v2", "b3", 0, false))
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	assertStatesEqual(t, "restored state", g.State(), want)
	// The restored FSM goes on like the original.
	h2 := &harness{t: t, f: g}
	h2.ok(attachCmd("v2", "b3", 0, false))
	assertStatesEqual(t, "state after one more command", g.State(), f.State())
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestRestoreRefusesGarbage(t *testing.T) {
	f := populatedFSM(t)
	before := f.State()
	ch := f.Changed()
	good := snapshotBytes(t, f)
	for _, in := range []string{"", "garbage", string(good[:len(good)/2]), `{"v":2,"state":{}}`, `{"v":1,"state":{"bricks":{"b1":null}}}`} {
		rc := &closeRecorder{Reader: strings.NewReader(in)}
		err := f.Restore(rc)
		if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "restore snapshot: ") {
			t.Errorf("Restore(%.40q) = %v, want ErrInvalid", in, err)
		}
		if !rc.closed {
			t.Error("Restore did not close its reader")
		}
	}
	assertStatesEqual(t, "state after refused restores", f.State(), before)
	select {
	case <-ch:
		t.Error("Changed fired for refused restores")
	default:
	}
}

func TestRestoreMakesNilMapsNonNil(t *testing.T) {
	f := NewFSM()
	if err := f.Restore(io.NopCloser(strings.NewReader(`{"v":1,"state":{"cluster_id":"c-1","index":7}}`))); err != nil {
		t.Fatal(err)
	}
	st := f.State()
	if st.Bricks == nil || st.Volumes == nil || st.Tombstones == nil || st.ClusterID != "c-1" || st.Index != 7 {
		t.Fatalf("restored %+v", st)
	}
	h := &harness{t: t, f: f}
	h.ok(brickCmd("b1", "h1", 1)) // and it is usable
}
