package membership

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

var (
	// ErrShutdown is returned by calls made after Shutdown.
	ErrShutdown = errors.New("membership is shut down")
	// ErrLeft is returned by UpdateMeta after Leave: re-gossiping would
	// make us alive again in everyone's eyes.
	ErrLeft = errors.New("membership has left the cluster")
	// ErrKeyMismatch is wrapped by a join error when the peer and we do not
	// share the cluster key.
	ErrKeyMismatch = errors.New("peer does not have this cluster's key (check BRICK_CLUSTER_KEY on every daemon)")
	// ErrNoAnswer is wrapped by a join error when a peer was contacted but
	// we still know no other member.
	ErrNoAnswer = errors.New("no other member answered")
)

const (
	// DefaultLeaveTimeout is used by Leave when given no positive timeout.
	DefaultLeaveTimeout = 5 * time.Second
	// updateTimeout bounds how long UpdateMeta waits for its broadcast.
	updateTimeout = 3 * time.Second
	// warnFailures is how many consecutive join failures are logged at
	// WARN before the rest go to DEBUG.
	warnFailures = 3
	// resolveTimeout bounds one DNS lookup of a peer.
	resolveTimeout = 2 * time.Second
	// leavePropagateDelay is how long Leave keeps gossip running after
	// memberlist's Leave returns. memberlist reports the leave broadcast
	// done when it hands out the last transmission, before the packet is
	// sent; shutting down at once can drop it (serf waits 1 s likewise).
	leavePropagateDelay = time.Second
)

// Membership is this daemon's view of the cluster. Its methods are safe for
// concurrent use.
type Membership struct {
	cfg    Config
	log    *slog.Logger
	ml     *memberlist.Memberlist
	peers  []string // "host:port", literal self entries removed
	selfIP []net.IP // addresses that are us (advertise, bind, or every local one)
	port   int      // our actual gossip port

	meta     atomic.Pointer[[]byte] // encoded wireMeta, read by NodeMeta
	updateMu sync.Mutex             // serialises UpdateMeta and Leave
	left     atomic.Bool

	mu      sync.Mutex // guards table, subs, closed, claims
	table   *table
	subs    map[*subscriber]struct{}
	closed  bool
	claims  map[string]*claim // refused claims to a name, by name (reclaim.go)
	dropped atomic.Uint64

	reclaim time.Duration // memberlist's DeadNodeReclaimTime
	bridge  *logBridge

	joined     atomic.Bool
	joinedCh   chan struct{}
	joinedOnce sync.Once
	lastErr    atomic.Pointer[error] // last join error, for WaitJoined

	lifeMu sync.RWMutex // Leave holds it shared, Shutdown exclusively
	shut   bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type subscriber struct {
	ch      chan Event
	dropped uint64 // guarded by Membership.mu
}

// New validates cfg, starts gossip on BindAddr:BindPort and returns at once.
// If Peers (minus ourselves) is not empty, a background loop joins them,
// retrying until one answers (see WaitJoined); otherwise we are a cluster of
// one and Joined is true at once.
func New(cfg Config) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Membership{
		cfg:      cfg,
		log:      cfg.Logger,
		table:    newTable(cfg.Name, cfg.DeadRetention),
		subs:     make(map[*subscriber]struct{}),
		claims:   make(map[string]*claim),
		joinedCh: make(chan struct{}),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	enc, err := encodeMeta(cfg.Meta, false)
	if err != nil {
		return nil, err // unreachable: Validate checked
	}
	m.meta.Store(&enc)

	m.bridge = newLogBridge(m.log, time.Now, m.onSuspect)
	mc := m.memberlistConfig(m.bridge)
	m.reclaim = mc.DeadNodeReclaimTime
	ml, err := memberlist.Create(mc)
	if err != nil {
		m.cancel()
		return nil, fmt.Errorf("membership: start gossip on %s: %w",
			net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	m.ml = ml
	local := ml.LocalNode()
	m.port = int(local.Port)
	m.selfIP = selfAddrs(local.Addr, cfg.BindAddr)
	for _, p := range cfg.Peers {
		host, port, _ := parsePeer(p) // Validate checked
		if ip := net.ParseIP(host); ip != nil && m.isSelf(ip, port) {
			continue
		}
		m.peers = append(m.peers, net.JoinHostPort(host, strconv.Itoa(port)))
	}
	m.log.Info("gossip started", "name", cfg.Name, "addr", local.Address(), "peers", m.peers, "profile", cfg.Profile)
	if len(m.peers) == 0 {
		m.markJoined()
	}
	m.wg.Add(1)
	go m.run()
	return m, nil
}

func (m *Membership) memberlistConfig(bridge *logBridge) *memberlist.Config {
	var mc *memberlist.Config
	if m.cfg.Profile == ProfileLocal {
		mc = memberlist.DefaultLocalConfig()
		mc.DeadNodeReclaimTime = time.Second
		// memberlist's local profile sends each broadcast only twice; in
		// a cluster of three with one dead, a leave then reaches the
		// survivor once. The LAN value costs nothing here.
		mc.RetransmitMult = memberlist.DefaultLANConfig().RetransmitMult
	} else {
		mc = memberlist.DefaultLANConfig()
		mc.DeadNodeReclaimTime = 30 * time.Second
	}
	mc.Name = m.cfg.Name
	mc.BindAddr = m.cfg.BindAddr
	mc.BindPort = m.cfg.BindPort
	mc.AdvertiseAddr = m.cfg.AdvertiseAddr
	if mc.AdvertiseAddr == "" && !net.ParseIP(m.cfg.BindAddr).IsUnspecified() {
		mc.AdvertiseAddr = m.cfg.BindAddr
	}
	mc.AdvertisePort = m.cfg.BindPort // memberlist replaces it when BindPort is 0
	mc.SecretKey = append([]byte(nil), m.cfg.SecretKey...)
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	h := hooks{m}
	mc.Delegate = h
	mc.Events = h
	mc.Ping = h
	mc.Conflict = h
	mc.LogOutput = nil
	mc.Logger = log.New(bridge, "", 0)
	return mc
}

func selfAddrs(advertise net.IP, bind string) []net.IP {
	ips := []net.IP{advertise}
	b := net.ParseIP(bind)
	if !b.IsUnspecified() {
		return append(ips, b)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ips
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	return ips
}

func (m *Membership) isSelf(ip net.IP, port int) bool {
	if port != m.port {
		return false
	}
	for _, s := range m.selfIP {
		if s.Equal(ip) {
			return true
		}
	}
	return false
}

// Members returns every known member, ourselves included, and dead or left
// members until they have been gone for DeadRetention, sorted by name. The
// slice is the caller's.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.table.list(time.Now())
}

// Member returns one member by name.
func (m *Membership) Member(name string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.table.get(name, time.Now())
}

// Local returns ourselves as others see us (Addr is the advertised
// address, with the actual port when BindPort was 0).
func (m *Membership) Local() Member {
	if me, ok := m.Member(m.cfg.Name); ok {
		return me
	}
	return Member{Name: m.cfg.Name, Addr: m.ml.LocalNode().Address(), Meta: m.cfg.Meta, State: StateAlive}
}

// Subscribe returns a channel of Events and a function that cancels the
// subscription and closes the channel. Events arrive in the order they
// were observed. buf is the channel's capacity (at least 1).
//
// Gossip never waits for a subscriber: when the channel is full the event
// is dropped and counted (Dropped), and the first drop is logged.
// Subscribers should treat events as hints and read Members for the truth.
// The channel is also closed by Shutdown. Events before Subscribe are not
// replayed; call Members after Subscribe for the current state.
func (m *Membership) Subscribe(buf int) (<-chan Event, func()) {
	if buf < 1 {
		buf = 1
	}
	s := &subscriber{ch: make(chan Event, buf)}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		close(s.ch)
		return s.ch, func() {}
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	cancel := func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.subs[s]; ok {
			delete(m.subs, s)
			close(s.ch)
		}
	}
	return s.ch, cancel
}

// Dropped returns how many events were dropped because a subscriber's
// channel was full, over all subscribers.
func (m *Membership) Dropped() uint64 { return m.dropped.Load() }

// publish hands ev to every subscriber without blocking. Callers hold m.mu,
// which keeps events in order.
func (m *Membership) publish(ev Event) {
	if m.closed {
		return
	}
	for s := range m.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped++
			m.dropped.Add(1)
			if s.dropped == 1 {
				// slog handlers must not call back into us; this is safe.
				m.log.Warn("membership event subscriber is too slow; dropping events", "member", ev.Member.Name)
			}
		}
	}
}

// UpdateMeta replaces our metadata and gossips it. It waits up to 3 s for
// the update to be broadcast; if that times out the update still spreads
// through periodic state exchange, so that is not an error. Errors:
// ErrMetaTooLarge, ErrLeft, ErrShutdown.
func (m *Membership) UpdateMeta(meta Meta) error {
	enc, err := encodeMeta(meta, false)
	if err != nil {
		return fmt.Errorf("membership: update meta: %w", err)
	}
	m.lifeMu.RLock()
	defer m.lifeMu.RUnlock()
	if m.shut {
		return ErrShutdown
	}
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
	if m.left.Load() {
		return fmt.Errorf("membership: update meta: %w", ErrLeft)
	}
	m.meta.Store(&enc)
	if err := m.ml.UpdateNode(updateTimeout); err != nil {
		m.log.Debug("metadata broadcast not confirmed; it will spread by state exchange", "err", err)
	}
	return nil
}

// Joined reports whether we have had contact with at least one other
// member (or were given no peers but ourselves). It stays true once true;
// losing every peer later makes us retry the peers but does not reset it.
func (m *Membership) Joined() bool { return m.joined.Load() }

// WaitJoined blocks until Joined is true, ctx is done, or Shutdown. On ctx
// expiry the error wraps ctx.Err() and the last join error (for instance
// ErrKeyMismatch).
func (m *Membership) WaitJoined(ctx context.Context) error {
	if m.joined.Load() {
		return nil
	}
	select {
	case <-m.joinedCh:
		return nil
	case <-m.ctx.Done():
		return ErrShutdown
	case <-ctx.Done():
		if last := m.lastErr.Load(); last != nil {
			return fmt.Errorf("membership: not joined: %w (last attempt: %w)", ctx.Err(), *last)
		}
		return fmt.Errorf("membership: not joined: %w", ctx.Err())
	}
}

func (m *Membership) markJoined() {
	m.joinedOnce.Do(func() {
		m.joined.Store(true)
		close(m.joinedCh)
	})
}

// Leave announces that we are leaving, so that others see StateLeft rather
// than StateDead. It returns once the announcement has been gossiped and
// has had up to a second to reach the wire, or after timeout
// (DefaultLeaveTimeout if not positive), whichever is first. Gossip keeps
// running until Shutdown, which should follow; the join loop stops. Calling
// Leave again does nothing.
func (m *Membership) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultLeaveTimeout
	}
	m.lifeMu.RLock()
	defer m.lifeMu.RUnlock()
	if m.shut {
		return ErrShutdown
	}
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
	if m.left.Swap(true) {
		return nil
	}
	deadline := time.Now().Add(timeout)
	// First gossip the leaving flag, then memberlist's leave message: others
	// read the flag from the metadata NotifyLeave carries.
	cur, _, _ := decodeMeta(*m.meta.Load())
	enc, err := encodeMeta(cur, true)
	if err != nil {
		return fmt.Errorf("membership: leave: %w", err) // unreachable: sizes are checked with the flag
	}
	m.meta.Store(&enc)
	if err := m.ml.UpdateNode(timeout / 2); err != nil {
		m.log.Debug("leave announcement not confirmed before leaving", "err", err)
	}
	rest := max(time.Until(deadline), 10*time.Millisecond)
	if err := m.ml.Leave(rest); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	linger := time.NewTimer(min(leavePropagateDelay, max(time.Until(deadline), 0)))
	<-linger.C
	m.log.Info("left the cluster", "name", m.cfg.Name)
	return nil
}

// Shutdown stops gossip and every goroutine of m, and closes subscriber
// channels. Without a prior Leave, others will see us suspect, then dead.
// It may wait for an in-flight join attempt (at most memberlist's TCP
// timeout: 10 s in the LAN profile, 1 s in the local one). Safe to call
// more than once.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	if m.shut {
		m.lifeMu.Unlock()
		return nil
	}
	m.shut = true
	m.cancel()
	m.lifeMu.Unlock()

	// Errors from sockets we are closing are expected: keep them quiet.
	m.bridge.quiet.Store(true)
	err := m.ml.Shutdown()
	m.wg.Wait()
	m.mu.Lock()
	m.closed = true
	for s := range m.subs {
		close(s.ch)
	}
	clear(m.subs)
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	return nil
}

// run is the background loop: it joins the configured peers until one
// answers, re-joins them if we later lose every other member, and forgets
// members gone for longer than DeadRetention.
func (m *Membership) run() {
	defer m.wg.Done()
	var (
		failures int
		lost     bool // we had contact and lost every other member
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		m.mu.Lock()
		m.table.prune(now)
		m.mu.Unlock()
		m.followClaims(now)

		wait := m.cfg.JoinRetry
		switch {
		case m.left.Load() || len(m.peers) == 0:
		case m.ml.NumMembers() > 1:
			m.markJoined()
			if lost {
				m.log.Info("contact with the cluster restored", "members", m.ml.NumMembers())
			}
			failures, lost = 0, false
		default:
			targets := m.joinTargets()
			if len(targets) == 0 {
				// Every peer is a name of ours: we are the first member.
				m.markJoined()
				wait = max(m.cfg.JoinRetry, maxJoinRetry)
				break
			}
			if m.joined.Load() && !lost {
				lost, failures = true, 0
				m.log.Warn("lost contact with every other member; retrying the configured peers", "peers", m.peers)
			}
			err := m.join(targets)
			if err == nil {
				if lost {
					m.log.Info("contact with the cluster restored", "members", m.ml.NumMembers())
				} else {
					m.log.Info("joined the cluster", "via", m.peers, "members", m.ml.NumMembers())
				}
				failures, lost = 0, false
				break
			}
			if m.ctx.Err() != nil {
				return
			}
			failures++
			m.lastErr.Store(&err)
			wait = backoff(m.cfg.JoinRetry, failures)
			m.logJoinFailure(err, failures, wait)
		}
		timer.Reset(wait)
	}
}

func backoff(base time.Duration, failures int) time.Duration {
	limit := max(base, maxJoinRetry)
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// join makes one attempt at every target.
func (m *Membership) join(targets []string) error {
	n, err := m.ml.Join(targets)
	if n > 0 && m.ml.NumMembers() > 1 {
		m.markJoined()
		return nil
	}
	if err == nil {
		return fmt.Errorf("join %v: %w", targets, ErrNoAnswer)
	}
	flat := flatten(err)
	// memberlist has no typed error for this; its text is pinned by tests.
	if isKeyRefusal(flat.msg) {
		return fmt.Errorf("join %v: %w: %w", targets, ErrKeyMismatch, flat)
	}
	return fmt.Errorf("join %v: %w", targets, flat)
}

// flatten puts memberlist's multi-line go-multierror on one line.
func flatten(err error) flatError {
	var parts []string
	if multi, ok := err.(interface{ WrappedErrors() []error }); ok {
		for _, e := range multi.WrappedErrors() {
			parts = append(parts, e.Error())
		}
	} else {
		parts = []string{err.Error()}
	}
	return flatError{msg: strings.Join(strings.Fields(strings.Join(parts, "; ")), " "), err: err}
}

// flatError is an error shown on one line.
type flatError struct {
	msg string
	err error
}

func (e flatError) Error() string { return e.msg }
func (e flatError) Unwrap() error { return e.err }

// joinTargets returns the peers to try, without those whose host name
// resolves only to ourselves. Unresolvable names are kept: memberlist
// retries the lookup and reports the failure.
func (m *Membership) joinTargets() []string {
	out := make([]string, 0, len(m.peers))
	for _, p := range m.peers {
		host, port, _ := parsePeer(p)
		if net.ParseIP(host) == nil {
			ctx, cancel := context.WithTimeout(m.ctx, resolveTimeout)
			addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
			cancel()
			if err == nil && len(addrs) > 0 && m.allSelf(addrs, port) {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

func (m *Membership) allSelf(addrs []net.IPAddr, port int) bool {
	for _, a := range addrs {
		if !m.isSelf(a.IP, port) {
			return false
		}
	}
	return true
}

func (m *Membership) logJoinFailure(err error, failures int, retry time.Duration) {
	level := slog.LevelWarn
	if failures > warnFailures {
		level = slog.LevelDebug
	}
	msg := "gossip join failed; retrying"
	if errors.Is(err, ErrKeyMismatch) {
		msg = "gossip join refused: cluster key mismatch, check BRICK_CLUSTER_KEY"
	}
	m.log.Log(context.Background(), level, msg, "peers", m.peers, "attempt", failures, "retry_in", retry, "err", err)
}

// onSuspect is called by the log bridge when memberlist's probe of name
// failed.
func (m *Membership) onSuspect(name string) {
	m.apply(func(t *table, now time.Time) (Event, bool) { return t.suspect(name, now) })
}

// apply runs one table transition and publishes its event, in order.
func (m *Membership) apply(f func(*table, time.Time) (Event, bool)) {
	m.mu.Lock()
	ev, ok := f(m.table, time.Now())
	if ok {
		m.publish(ev)
	}
	m.mu.Unlock()
	if ok {
		m.logEvent(ev)
	}
}

func (m *Membership) logEvent(ev Event) {
	mem := ev.Member
	self := mem.Name == m.cfg.Name
	switch {
	case ev.Prev == StateUnknown && self:
		m.log.Debug("member joined (ourselves)", "member", mem.Name, "addr", mem.Addr)
	case ev.Prev == StateUnknown:
		m.log.Info("member joined", "member", mem.Name, "addr", mem.Addr, "state", mem.State.String(), "brick", mem.Meta.BrickID)
	case ev.Prev == mem.State:
		m.log.Debug("member updated", "member", mem.Name, "addr", mem.Addr, "brick", mem.Meta.BrickID)
	default:
		level := slog.LevelInfo
		if mem.State == StateSuspect || mem.State == StateDead {
			level = slog.LevelWarn
		}
		m.log.Log(context.Background(), level, "member "+mem.State.String(),
			"member", mem.Name, "addr", mem.Addr, "was", ev.Prev.String())
	}
}

// hooks implements memberlist's Delegate, EventDelegate and PingDelegate
// without adding those methods to Membership. memberlist calls the event
// methods with its node lock held: they must not call back into memberlist
// and must not block.
type hooks struct{ m *Membership }

func (h hooks) observe(n *memberlist.Node) observation {
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil && n.Name != h.m.cfg.Name {
		h.m.log.Warn("member metadata unreadable", "member", n.Name, "err", err)
	}
	return observation{Name: n.Name, Addr: n.Address(), Meta: meta, Leaving: leaving}
}

func (h hooks) NotifyJoin(n *memberlist.Node) {
	o := h.observe(n)
	if n.Name != h.m.cfg.Name {
		h.m.markJoined()
	}
	h.m.apply(func(t *table, now time.Time) (Event, bool) { return t.alive(o, now) })
}

func (h hooks) NotifyUpdate(n *memberlist.Node) {
	o := h.observe(n)
	h.m.apply(func(t *table, now time.Time) (Event, bool) { return t.alive(o, now) })
}

func (h hooks) NotifyLeave(n *memberlist.Node) {
	o := h.observe(n)
	h.m.apply(func(t *table, now time.Time) (Event, bool) { return t.gone(o, now) })
}

// NotifyPingComplete: our probe of n was acknowledged.
func (h hooks) NotifyPingComplete(n *memberlist.Node, _ time.Duration, _ []byte) {
	name := n.Name
	h.m.apply(func(t *table, now time.Time) (Event, bool) { return t.acked(name, now) })
}

func (h hooks) AckPayload() []byte { return nil }

func (h hooks) NodeMeta(limit int) []byte {
	b := *h.m.meta.Load()
	if len(b) > limit {
		return nil // unreachable: sizes are checked against MaxMetaSize
	}
	return b
}

func (h hooks) NotifyMsg([]byte)                           {}
func (h hooks) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (h hooks) LocalState(join bool) []byte                { return nil }
func (h hooks) MergeRemoteState(buf []byte, join bool)     {}
