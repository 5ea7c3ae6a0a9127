package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// These tests run real memberlist instances on loopback addresses
// 127.0.50.x, distinct per test. A seed that others name before it exists
// listens on the fixed DefaultPort of its own address; every other member
// uses port 0 (the kernel's choice, which memberlist then advertises).

var testKey = bytes.Repeat([]byte{0x42}, KeySize)

type node struct {
	*Membership
	name   string
	logs   *recorder
	events <-chan Event
}

func testConfig(name, ip string, port int, peers ...string) Config {
	c := DefaultConfig()
	c.Name = name
	c.BindAddr = ip
	c.BindPort = port
	c.Peers = peers
	c.SecretKey = testKey
	c.Profile = ProfileLocal
	c.JoinRetry = 100 * time.Millisecond
	c.Meta = testMeta(name, ip)
	return c
}

func testMeta(name, ip string) Meta {
	return Meta{BrickID: "b-" + name, GRPCAddr: ip + ":7402", RaftAddr: ip + ":7403", Capacity: 100 << 30, Free: 40 << 30, Version: "test"}
}

// start starts a member, subscribed from its first moment, and shuts it
// down when the test ends.
func start(t *testing.T, cfg Config) *node {
	t.Helper()
	logs := newRecorder(t, cfg.Name)
	cfg.Logger = slog.New(recHandler{r: logs})
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	events, _ := m.Subscribe(256)
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", cfg.Name, err)
		}
	})
	return &node{Membership: m, name: cfg.Name, logs: logs, events: events}
}

// waitMembers waits, event by event, until pred holds for n's member list.
func (n *node) waitMembers(t *testing.T, timeout time.Duration, what string, pred func(map[string]Member) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		byName := map[string]Member{}
		for _, m := range n.Members() {
			byName[m.Name] = m
		}
		if pred(byName) {
			return
		}
		select {
		case _, ok := <-n.events:
			if !ok {
				t.Fatalf("%s: event channel closed while waiting for %s", n.name, what)
			}
		case <-deadline.C:
			t.Fatalf("%s: timed out after %s waiting for %s; members: %s", n.name, timeout, what, describe(n.Members()))
		}
	}
}

// waitEvent consumes n's events until one matches pred.
func (n *node) waitEvent(t *testing.T, timeout time.Duration, what string, pred func(Event) bool) Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var seen []string
	for {
		select {
		case ev, ok := <-n.events:
			if !ok {
				t.Fatalf("%s: event channel closed while waiting for %s", n.name, what)
			}
			if pred(ev) {
				return ev
			}
			seen = append(seen, fmt.Sprintf("%s:%s→%s", ev.Member.Name, ev.Prev, ev.Member.State))
		case <-deadline.C:
			t.Fatalf("%s: timed out after %s waiting for %s; events seen meanwhile: %v; members: %s",
				n.name, timeout, what, seen, describe(n.Members()))
		}
	}
}

func describe(ms []Member) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%s@%s=%s", m.Name, m.Addr, m.State))
	}
	return strings.Join(parts, " ")
}

func allAlive(names ...string) func(map[string]Member) bool {
	return func(ms map[string]Member) bool {
		for _, n := range names {
			if ms[n].State != StateAlive {
				return false
			}
		}
		return true
	}
}

func stateIs(name string, st State) func(Event) bool {
	return func(ev Event) bool { return ev.Member.Name == name && ev.Member.State == st }
}

func waitJoined(t *testing.T, n *node, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := n.WaitJoined(ctx); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
}

// 1. Members started before the peer they name exist join it once it comes
// up, and all see all with the right metadata.
func TestJoinInAnyOrder(t *testing.T) {
	const seedIP = "127.0.50.1"
	seed := net.JoinHostPort(seedIP, "7401")
	b := start(t, testConfig("b", "127.0.50.2", 0, seed))
	c := start(t, testConfig("c", "127.0.50.3", 0, seed))

	// Both have tried and failed before the seed exists.
	for _, n := range []*node{b, c} {
		r := n.logs.wait(t, 5*time.Second, "about a failed join", func(r record) bool { return r.Msg == "gossip join failed; retrying" })
		if r.Level != slog.LevelWarn {
			t.Errorf("%s: first join failure logged at %v, want WARN", n.name, r.Level)
		}
		if n.Joined() {
			t.Fatalf("%s: Joined before any peer exists", n.name)
		}
	}

	// The seed names itself, as every daemon may be given the same list:
	// that entry is ignored and it is a cluster of one at once.
	a := start(t, testConfig("a", seedIP, 7401, seed))
	if !a.Joined() {
		t.Fatal("a: a member whose only peer is itself must be Joined at once")
	}
	nodes := []*node{a, b, c}
	for _, n := range nodes {
		waitJoined(t, n, 10*time.Second)
	}
	for _, n := range nodes {
		n.waitMembers(t, 10*time.Second, "a, b and c alive", allAlive("a", "b", "c"))
		ms := n.Members()
		if len(ms) != 3 || ms[0].Name != "a" || ms[1].Name != "b" || ms[2].Name != "c" {
			t.Fatalf("%s: Members() = %s, want a, b, c sorted", n.name, describe(ms))
		}
		for _, other := range nodes {
			m, _ := n.Member(other.name)
			if m.Meta != other.Local().Meta || m.Addr != other.Local().Addr {
				t.Errorf("%s sees %s as %+v at %s, want %+v at %s", n.name, other.name, m.Meta, m.Addr, other.Local().Meta, other.Local().Addr)
			}
			if m.Since.IsZero() {
				t.Errorf("%s sees %s with zero Since", n.name, other.name)
			}
		}
	}
	if l := b.Local(); l.Meta != testMeta("b", "127.0.50.2") || strings.HasSuffix(l.Addr, ":0") || !strings.HasPrefix(l.Addr, "127.0.50.2:") {
		t.Errorf("b.Local() = %+v, want its meta and the kernel-chosen port", l)
	}
}

// 2. A member shut down without leaving is seen suspect, then dead; one that
// leaves is seen left; both may come back under the same name at a new
// address with new metadata.
func TestFailureLeaveAndRestart(t *testing.T) {
	const seedIP = "127.0.50.11"
	seed := net.JoinHostPort(seedIP, "7401")
	a := start(t, testConfig("a", seedIP, 7401))
	b := start(t, testConfig("b", "127.0.50.12", 0, seed))
	c := start(t, testConfig("c", "127.0.50.13", 0, seed))
	for _, n := range []*node{a, b, c} {
		n.waitMembers(t, 10*time.Second, "all alive", allAlive("a", "b", "c"))
	}

	// Kill c.
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, b} {
		n.waitEvent(t, 15*time.Second, "c suspect", stateIs("c", StateSuspect))
		dead := n.waitEvent(t, 20*time.Second, "c dead", stateIs("c", StateDead))
		if dead.Prev != StateSuspect {
			t.Errorf("%s: c dead after %s, want after suspect", n.name, dead.Prev)
		}
		if m, ok := n.Member("c"); !ok || m.State != StateDead || m.Meta.BrickID != "b-c" {
			t.Errorf("%s: Member(c) = %+v, %v; want kept as dead with its meta", n.name, m, ok)
		}
	}

	// b leaves gracefully.
	if err := b.Leave(3 * time.Second); err != nil {
		t.Fatalf("b.Leave: %v", err)
	}
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	left := a.waitEvent(t, 10*time.Second, "b left", stateIs("b", StateLeft))
	if left.Prev != StateAlive {
		t.Errorf("a: b left after %s, want straight from alive", left.Prev)
	}

	// Both come back under their names, at new addresses (new ports) and
	// with new metadata.
	for _, name := range []string{"b", "c"} {
		cfg := testConfig(name, map[string]string{"b": "127.0.50.14", "c": "127.0.50.15"}[name], 0, seed)
		cfg.Meta.Free = 1
		n := start(t, cfg)
		ev := a.waitEvent(t, 20*time.Second, name+" alive again", stateIs(name, StateAlive))
		if ev.Member.Addr != n.Local().Addr || ev.Member.Meta != cfg.Meta {
			t.Errorf("a sees restarted %s at %s with %+v, want %s with %+v", name, ev.Member.Addr, ev.Member.Meta, n.Local().Addr, cfg.Meta)
		}
		waitJoined(t, n, 5*time.Second)
	}
}

// A member that loses every other member goes back to its configured peers,
// so a cluster whose seed restarted re-forms without a human.
func TestRejoinAfterLosingEveryone(t *testing.T) {
	const seedIP = "127.0.50.61"
	seed := net.JoinHostPort(seedIP, "7401")
	a := start(t, testConfig("a", seedIP, 7401))
	b := start(t, testConfig("b", "127.0.50.62", 0, seed))
	b.waitMembers(t, 10*time.Second, "a alive", allAlive("a", "b"))

	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b.waitEvent(t, 15*time.Second, "a dead", stateIs("a", StateDead))
	b.logs.wait(t, 5*time.Second, "about retrying", func(r record) bool { return strings.HasPrefix(r.Msg, "lost contact with every other member") })

	// The seed comes back with no peers of its own: only b's retries can
	// bring the two together again.
	a2 := start(t, testConfig("a", seedIP, 7401))
	b.waitEvent(t, 15*time.Second, "a alive again", stateIs("a", StateAlive))
	a2.waitMembers(t, 10*time.Second, "b alive", allAlive("a", "b"))
	b.logs.wait(t, 5*time.Second, "about contact restored", func(r record) bool { return r.Msg == "contact with the cluster restored" })
}

// 3. A member with another key cannot join; the members it tries say why.
func TestWrongKeyCannotJoin(t *testing.T) {
	const seedIP = "127.0.50.21"
	seed := net.JoinHostPort(seedIP, "7401")
	a := start(t, testConfig("a", seedIP, 7401))
	b := start(t, testConfig("b", "127.0.50.22", 0, seed))
	a.waitMembers(t, 10*time.Second, "b alive", allAlive("a", "b"))

	cfg := testConfig("intruder", "127.0.50.23", 0, seed)
	cfg.SecretKey = bytes.Repeat([]byte{0x17}, KeySize)
	d := start(t, cfg)

	refused := a.logs.wait(t, 10*time.Second, "refusing the intruder", func(r record) bool { return r.Msg == MsgGossipRefused })
	if refused.Level != slog.LevelWarn {
		t.Errorf("refusal logged at %v, want WARN", refused.Level)
	}
	if host, _, err := net.SplitHostPort(refused.Attrs["from"]); err != nil || net.ParseIP(host) == nil {
		t.Errorf("refusal from=%q, want the sender's ip:port", refused.Attrs["from"])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := d.WaitJoined(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("intruder WaitJoined = %v, want deadline exceeded wrapping ErrKeyMismatch", err)
	}
	if d.Joined() {
		t.Fatal("intruder Joined")
	}
	d.logs.wait(t, time.Second, "telling the operator to check the key", func(r record) bool {
		return r.Level == slog.LevelWarn && strings.Contains(r.Msg, "check BRICK_CLUSTER_KEY")
	})

	for _, n := range []*node{a, b} {
		if _, ok := n.Member("intruder"); ok {
			t.Errorf("%s lists the intruder: %s", n.name, describe(n.Members()))
		}
	}
	if ms := d.Members(); len(ms) != 1 {
		t.Errorf("intruder knows %s, want only itself", describe(ms))
	}
	// The intruder retried several times in 2 s; a logged one refusal per
	// sender address per 10 s.
	perSender := map[string]int{}
	for _, r := range a.logs.all() {
		if r.Msg == MsgGossipRefused {
			host, _, _ := net.SplitHostPort(r.Attrs["from"])
			perSender[host]++
		}
		if strings.Contains(r.Msg, "could decrypt") {
			t.Errorf("raw memberlist refusal logged: %s", r)
		}
	}
	for host, n := range perSender {
		if n != 1 {
			t.Errorf("a logged %d refusals from %s within 10 s, want 1", n, host)
		}
	}
	for _, r := range append(a.logs.all(), d.logs.all()...) {
		if strings.Contains(r.String(), string(testKey)) || strings.Contains(r.String(), string(cfg.SecretKey)) {
			t.Fatalf("a key was logged: %s", r)
		}
	}
}

// 4. Metadata updates reach the other members.
func TestUpdateMetaPropagates(t *testing.T) {
	const seedIP = "127.0.50.31"
	a := start(t, testConfig("a", seedIP, 7401))
	b := start(t, testConfig("b", "127.0.50.32", 0, net.JoinHostPort(seedIP, "7401")))
	a.waitMembers(t, 10*time.Second, "b alive", allAlive("a", "b"))

	meta := testMeta("b", "127.0.50.32")
	meta.Free, meta.Version = 1234, "test-2"
	if err := b.UpdateMeta(meta); err != nil {
		t.Fatal(err)
	}
	ev := a.waitEvent(t, 10*time.Second, "b's new meta", func(ev Event) bool { return ev.Member.Name == "b" && ev.Member.Meta == meta })
	if ev.Prev != StateAlive || ev.Member.State != StateAlive {
		t.Errorf("meta update event %s→%s, want alive→alive", ev.Prev, ev.Member.State)
	}
	if got := b.Local().Meta; got != meta {
		t.Errorf("b.Local().Meta = %+v, want %+v", got, meta)
	}

	big := meta
	big.Version = strings.Repeat("v", MaxMetaSize)
	if err := b.UpdateMeta(big); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("UpdateMeta(oversize) = %v, want ErrMetaTooLarge", err)
	}
	if m, _ := a.Member("b"); m.Meta != meta {
		t.Errorf("a sees b's meta %+v after a refused update, want %+v", m.Meta, meta)
	}
}

// A slow subscriber loses events instead of blocking gossip; lifecycle
// errors are the documented ones.
func TestSubscribeDropsAndLifecycle(t *testing.T) {
	n := start(t, testConfig("solo", "127.0.50.41", 0))
	if !n.Joined() {
		t.Fatal("a member without peers must be Joined at once")
	}
	slow, cancel := n.Subscribe(1)
	for i := range 3 {
		meta := n.Local().Meta
		meta.Free = uint64(i)
		if err := n.UpdateMeta(meta); err != nil {
			t.Fatal(err)
		}
	}
	if n.Dropped() != 2 {
		t.Errorf("Dropped() = %d, want 2 (3 events, room for 1)", n.Dropped())
	}
	if ev := <-slow; ev.Member.Meta.Free != 0 {
		t.Errorf("kept event has Free=%d, want the first (0)", ev.Member.Meta.Free)
	}
	cancel()
	cancel()
	if _, ok := <-slow; ok {
		t.Error("cancelled subscription still open")
	}

	if err := n.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	if n.Local().State != StateLeft {
		t.Errorf("after Leave we are %s, want left", n.Local().State)
	}
	if err := n.UpdateMeta(n.Local().Meta); !errors.Is(err, ErrLeft) {
		t.Errorf("UpdateMeta after Leave = %v, want ErrLeft", err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := n.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Errorf("Leave after Shutdown = %v, want ErrShutdown", err)
	}
	if err := n.WaitJoined(context.Background()); err != nil {
		t.Errorf("WaitJoined after joining = %v", err)
	}
	for range n.events { // drained, then closed by Shutdown
	}
	late, _ := n.Subscribe(1)
	if _, ok := <-late; ok {
		t.Error("Subscribe after Shutdown returned an open channel")
	}
}

// 5. Validate names the bad field.
func TestValidate(t *testing.T) {
	good := testConfig("n1", "127.0.50.51", 7401, "10.0.0.1", "10.0.0.2:7500", "[::1]:7401", "::1", "peer-1.example.com")
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"empty name", func(c *Config) { c.Name = "" }, "Name"},
		{"name with space", func(c *Config) { c.Name = "a b" }, "Name"},
		{"long name", func(c *Config) { c.Name = strings.Repeat("n", MaxNameLen+1) }, "Name"},
		{"nil key", func(c *Config) { c.SecretKey = nil }, "SecretKey"},
		{"short key", func(c *Config) { c.SecretKey = testKey[:16] }, "SecretKey"},
		{"empty peer", func(c *Config) { c.Peers = []string{"10.0.0.1", ""} }, "Peers[1]"},
		{"port not a number", func(c *Config) { c.Peers = []string{"host:notaport"} }, "Peers[0]"},
		{"port out of range", func(c *Config) { c.Peers = []string{"host:70000"} }, "Peers[0]"},
		{"port zero", func(c *Config) { c.Peers = []string{"host:0"} }, "Peers[0]"},
		{"no host", func(c *Config) { c.Peers = []string{":7401"} }, "Peers[0]"},
		{"garbage host", func(c *Config) { c.Peers = []string{"ho/st"} }, "Peers[0]"},
		{"spaces", func(c *Config) { c.Peers = []string{" host"} }, "Peers[0]"},
		{"oversize meta", func(c *Config) { c.Meta.Version = strings.Repeat("v", MaxMetaSize) }, "Meta"},
		{"bind not ip", func(c *Config) { c.BindAddr = "localhost" }, "BindAddr"},
		{"bind empty", func(c *Config) { c.BindAddr = "" }, "BindAddr"},
		{"bind port", func(c *Config) { c.BindPort = 65536 }, "BindPort"},
		{"advertise", func(c *Config) { c.AdvertiseAddr = "0.0.0.0" }, "AdvertiseAddr"},
		{"profile", func(c *Config) { c.Profile = "wan" }, "Profile"},
		{"join retry", func(c *Config) { c.JoinRetry = -time.Second }, "JoinRetry"},
		{"retention", func(c *Config) { c.DeadRetention = -time.Second }, "DeadRetention"},
	}
	for _, tc := range cases {
		c := good
		c.Peers = append([]string(nil), good.Peers...)
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidConfig naming %s", tc.name, err, tc.field)
		}
		if _, nerr := New(c); nerr == nil {
			t.Errorf("%s: New accepted the config", tc.name)
		}
	}
	// The largest meta that fits, leaving flag included, is accepted.
	c := good
	c.Meta = Meta{}
	for {
		c.Meta.Version += "v"
		if _, err := encodeMeta(c.Meta, true); err != nil {
			c.Meta.Version = c.Meta.Version[1:]
			break
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("largest meta refused: %v", err)
	}
}

func TestConfigNeverPrintsKey(t *testing.T) {
	c := testConfig("n", "127.0.50.52", 0)
	c.SecretKey = []byte("0123456789abcdef0123456789ABCDEF")
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", c)
	for _, s := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), buf.String()} {
		if strings.Contains(s, "0123456789") || strings.Contains(s, fmt.Sprint(c.SecretKey)) {
			t.Fatalf("key printed: %s", s)
		}
	}
}
