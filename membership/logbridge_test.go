package membership

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseMemberlistLine(t *testing.T) {
	cases := []struct {
		line  string
		level slog.Level
		msg   string
		from  string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:41234\n", slog.LevelDebug, "Stream connection", "127.0.0.1:41234"},
		{"[INFO] memberlist: Suspect b has failed, no acks received\n", slog.LevelInfo, "Suspect b has failed, no acks received", ""},
		{"[WARN] memberlist: Refuting a dead message (from: c)\n", slog.LevelWarn, "Refuting a dead message (from: c)", ""},
		{"[ERR] memberlist: failed to receive: no installed keys could decrypt the message from=127.0.0.1:5555\n", slog.LevelError, "failed to receive: no installed keys could decrypt the message", "127.0.0.1:5555"},
		{"[ERROR] memberlist: Failed to encrypt local state: x\n", slog.LevelError, "Failed to encrypt local state: x", ""},
		{"[ERR] Failed to shutdown transport: boom\n", slog.LevelError, "Failed to shutdown transport: boom", ""},
		{"Err: Could not set the deadline: x\n", slog.LevelError, "Could not set the deadline: x", ""},
		{"[DEBUG] memberlist: Failed to join 127.0.0.1:7401: 1 error occurred:\n\t* dial tcp: refused\n\n", slog.LevelDebug, "Failed to join 127.0.0.1:7401: 1 error occurred: * dial tcp: refused", ""},
		{"plain line\n", slog.LevelInfo, "plain line", ""},
		{"[ERR] memberlist: Failed fallback TCP ping: from=<unknown address>\n", slog.LevelError, "Failed fallback TCP ping: from=<unknown address>", ""},
	}
	for _, c := range cases {
		level, msg, from := parseMemberlistLine(c.line)
		if level != c.level || msg != c.msg || from != c.from {
			t.Errorf("parse %q\n got  %v %q from=%q\n want %v %q from=%q", c.line, level, msg, from, c.level, c.msg, c.from)
		}
	}
}

// TestBridgeRefusalRateLimit drives the bridge through a real *log.Logger,
// as memberlist does, with a fake clock.
func TestBridgeRefusalRateLimit(t *testing.T) {
	rec := &recorder{}
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	var suspects []string
	b := newLogBridge(slog.New(recHandler{r: rec}), func() time.Time { return now }, func(n string) { suspects = append(suspects, n) })
	ml := log.New(b, "", 0)

	// Exact texts of memberlist v0.5.4 (net.go): a stream and a packet from a
	// sender with another key, and a sender with no key at all.
	ml.Printf("[ERR] memberlist: failed to receive: %s %s", "no installed keys could decrypt the message", "from=127.0.0.9:40001")
	ml.Printf("[ERR] memberlist: failed to receive: %s %s", "no installed keys could decrypt the message", "from=127.0.0.9:40002")
	ml.Printf("[ERR] memberlist: Decrypt packet failed: %v %s", "no installed keys could decrypt the message", "from=127.0.0.9:7401")
	ml.Printf("[ERR] memberlist: failed to receive: %s %s", "encryption is configured but remote state is not encrypted", "from=127.0.0.8:40003")
	now = now.Add(refusedEvery - time.Millisecond)
	ml.Printf("[ERR] memberlist: failed to receive: %s %s", "no installed keys could decrypt the message", "from=127.0.0.9:40004")
	now = now.Add(time.Millisecond)
	ml.Printf("[ERR] memberlist: failed to receive: %s %s", "no installed keys could decrypt the message", "from=127.0.0.9:40005")
	ml.Printf("[INFO] memberlist: Suspect %s has failed, no acks received", "node-7")
	// Our own failed join names no sender: it is not a refusal of anyone.
	ml.Printf("[DEBUG] memberlist: %v", "Failed to join 127.0.0.9:7401: no installed keys could decrypt the message")

	var got []string
	for _, r := range rec.all() {
		if r.Msg == MsgGossipRefused {
			if r.Level != slog.LevelWarn {
				t.Errorf("refusal logged at %v, want WARN", r.Level)
			}
			got = append(got, r.Attrs["from"]+" suppressed="+r.Attrs["suppressed"])
		}
	}
	want := []string{
		"127.0.0.9:40001 suppressed=",
		"127.0.0.8:40003 suppressed=",
		"127.0.0.9:40005 suppressed=3",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("refusal records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(suspects) != 1 || suspects[0] != "node-7" {
		t.Fatalf("suspects = %q, want [node-7]", suspects)
	}
	for _, r := range rec.all() {
		if strings.Contains(r.Msg, "no installed keys") && r.Level != slog.LevelDebug {
			t.Fatalf("raw memberlist refusal leaked through: %+v", r)
		}
	}
}

// debugLogs forwards DEBUG records to t.Log too (BRICK_TEST_DEBUG=1).
var debugLogs = os.Getenv("BRICK_TEST_DEBUG") == "1"

// record is one captured slog record.
type record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (r record) String() string {
	var b bytes.Buffer
	b.WriteString(r.Level.String() + " " + r.Msg)
	for k, v := range r.Attrs {
		b.WriteString(" " + k + "=" + v)
	}
	return b.String()
}

// recorder captures slog records, forwards INFO and above to t.Log while
// the test runs, and wakes waiters on every record.
type recorder struct {
	mu      sync.Mutex
	t       testing.TB
	prefix  string
	done    bool
	recs    []record
	changed chan struct{}
}

func newRecorder(t testing.TB, prefix string) *recorder {
	r := &recorder{t: t, prefix: prefix, changed: make(chan struct{})}
	t.Cleanup(func() {
		r.mu.Lock()
		r.done = true
		r.mu.Unlock()
	})
	return r
}

func (r *recorder) add(rec record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	if r.t != nil && !r.done && (rec.Level >= slog.LevelInfo || debugLogs) {
		r.t.Logf("%s: %s", r.prefix, rec)
	}
	if r.changed != nil {
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

func (r *recorder) all() []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]record(nil), r.recs...)
}

// wait returns the first record matching pred, waiting up to timeout.
func (r *recorder) wait(t testing.TB, timeout time.Duration, what string, pred func(record) bool) record {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, rec := range r.recs {
			if pred(rec) {
				r.mu.Unlock()
				return rec
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: no log record %s within %s", r.prefix, what, timeout)
		}
	}
}

type recHandler struct {
	r     *recorder
	attrs []slog.Attr
}

func (h recHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recHandler) Handle(_ context.Context, rec slog.Record) error {
	attrs := make(map[string]string, len(h.attrs)+rec.NumAttrs())
	for _, a := range h.attrs {
		attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	h.r.add(record{Level: rec.Level, Msg: rec.Message, Attrs: attrs})
	return nil
}

func (h recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h recHandler) WithGroup(string) slog.Handler { return h }
