package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/memberlist"
)

const (
	// DefaultPort is the gossip port, TCP and UDP.
	DefaultPort = 7401
	// KeySize is the length of Config.SecretKey (AES-256).
	KeySize = 32
	// MaxMetaSize is the largest encoded Meta memberlist can gossip.
	MaxMetaSize = memberlist.MetaMaxSize
	// MaxNameLen is the longest node name accepted.
	MaxNameLen = 128

	// ProfileLAN uses memberlist's LAN timings (probe every 1 s, 500 ms
	// probe timeout). It is the default.
	ProfileLAN = "lan"
	// ProfileLocal uses memberlist's local timings (200 ms probe timeout,
	// faster gossip) and reclaims a dead member's name after 1 s. For tests.
	ProfileLocal = "local"

	defaultJoinRetry     = time.Second
	maxJoinRetry         = 10 * time.Second
	defaultDeadRetention = 24 * time.Hour
)

var (
	// ErrInvalidConfig is wrapped by every error Config.Validate returns.
	ErrInvalidConfig = errors.New("invalid membership config")
	// ErrMetaTooLarge means an encoded Meta does not fit memberlist's node
	// metadata (MaxMetaSize bytes).
	ErrMetaTooLarge = errors.New("node metadata too large")
)

// Config configures a Membership. Build it with DefaultConfig and check it
// with Validate (New does too). New copies it; later changes have no effect.
type Config struct {
	// Name is the unique node name (the daemon's --name). Printable, no
	// spaces, at most MaxNameLen bytes.
	Name string
	// BindAddr is the IP address gossip binds to, e.g. "127.0.0.2" or
	// "0.0.0.0".
	BindAddr string
	// BindPort is the gossip port (TCP and UDP). 0 lets the kernel choose a
	// free port (tests), which is then advertised.
	BindPort int
	// AdvertiseAddr is the IP other members reach us on. Empty means
	// BindAddr, or, when BindAddr is unspecified (0.0.0.0 or ::), an address
	// memberlist picks from this host's private addresses.
	AdvertiseAddr string
	// Peers are existing members to join, "host[:port]" with the port
	// defaulting to DefaultPort. An entry naming ourselves is ignored, so
	// every daemon of a cluster may be given the same list.
	Peers []string
	// SecretKey is the KeySize-byte gossip encryption key derived from the
	// cluster key. Required. Never logged.
	SecretKey []byte
	// Meta is our metadata, gossiped to every member.
	Meta Meta
	// Logger receives our records and memberlist's, parsed into levels. Nil
	// discards them.
	Logger *slog.Logger
	// JoinRetry is the first interval between join attempts while no peer
	// answers; it doubles after each failure up to 10 s (or JoinRetry if that
	// is longer). It is also the period of the housekeeping loop. 0 means 1 s.
	JoinRetry time.Duration
	// Profile is ProfileLAN (default when empty) or ProfileLocal.
	Profile string
	// DeadRetention is how long dead and left members stay in Members().
	// 0 means 24 h.
	DeadRetention time.Duration
}

// DefaultConfig returns a Config with every default filled in. Name and
// SecretKey must still be set.
func DefaultConfig() Config {
	return Config{
		BindAddr:      "0.0.0.0",
		BindPort:      DefaultPort,
		JoinRetry:     defaultJoinRetry,
		Profile:       ProfileLAN,
		DeadRetention: defaultDeadRetention,
	}
}

// String describes c without the key, so that %v never leaks it.
func (c Config) String() string {
	return fmt.Sprintf("{Name:%q BindAddr:%q BindPort:%d AdvertiseAddr:%q Peers:%q SecretKey:%s Profile:%q JoinRetry:%s DeadRetention:%s Meta:%+v}",
		c.Name, c.BindAddr, c.BindPort, c.AdvertiseAddr, c.Peers, redacted(c.SecretKey),
		c.Profile, c.JoinRetry, c.DeadRetention, c.Meta)
}

// GoString is String, so that %#v never leaks the key either.
func (c Config) GoString() string { return "membership.Config" + c.String() }

// LogValue describes c for slog without the key.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.String("bind", net.JoinHostPort(c.BindAddr, strconv.Itoa(c.BindPort))),
		slog.String("advertise", c.AdvertiseAddr),
		slog.Any("peers", c.Peers),
		slog.String("key", redacted(c.SecretKey)),
		slog.String("profile", c.Profile),
	)
}

func redacted(key []byte) string {
	if len(key) == 0 {
		return "<none>"
	}
	return fmt.Sprintf("<redacted %d bytes>", len(key))
}

// Validate checks c and returns an error wrapping ErrInvalidConfig that
// names the first bad field.
func (c Config) Validate() error {
	if err := validateName(c.Name); err != nil {
		return invalid("Name %q: %v", c.Name, err)
	}
	bind := net.ParseIP(c.BindAddr)
	if c.BindAddr == "" {
		return invalid("BindAddr is empty")
	}
	if bind == nil {
		return invalid("BindAddr %q is not an IP address", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return invalid("BindPort %d is out of range 0-65535", c.BindPort)
	}
	if c.AdvertiseAddr != "" {
		ip := net.ParseIP(c.AdvertiseAddr)
		if ip == nil {
			return invalid("AdvertiseAddr %q is not an IP address", c.AdvertiseAddr)
		}
		if ip.IsUnspecified() {
			return invalid("AdvertiseAddr %q cannot be advertised", c.AdvertiseAddr)
		}
	}
	for i, p := range c.Peers {
		if _, _, err := parsePeer(p); err != nil {
			return invalid("Peers[%d] %q: %v", i, p, err)
		}
	}
	switch {
	case len(c.SecretKey) == 0:
		return invalid("SecretKey is missing (the gossip key derived from BRICK_CLUSTER_KEY)")
	case len(c.SecretKey) != KeySize:
		return invalid("SecretKey is %d bytes, want %d", len(c.SecretKey), KeySize)
	}
	if _, err := encodeMeta(c.Meta, true); err != nil {
		return invalid("Meta: %v", err)
	}
	if c.JoinRetry < 0 {
		return invalid("JoinRetry %s is negative", c.JoinRetry)
	}
	switch c.Profile {
	case "", ProfileLAN, ProfileLocal:
	default:
		return invalid("Profile %q is not %q or %q", c.Profile, ProfileLAN, ProfileLocal)
	}
	if c.DeadRetention < 0 {
		return invalid("DeadRetention %s is negative", c.DeadRetention)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

func validateName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%d bytes long, at most %d allowed", len(name), MaxNameLen)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("contains %q; use printable characters without spaces", r)
		}
	}
	return nil
}

// withDefaults fills the zero durations and profile.
func (c Config) withDefaults() Config {
	if c.JoinRetry == 0 {
		c.JoinRetry = defaultJoinRetry
	}
	if c.DeadRetention == 0 {
		c.DeadRetention = defaultDeadRetention
	}
	if c.Profile == "" {
		c.Profile = ProfileLAN
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Peers = append([]string(nil), c.Peers...)
	c.SecretKey = append([]byte(nil), c.SecretKey...)
	return c
}

// parsePeer splits "host[:port]" and checks both parts.
func parsePeer(s string) (host string, port int, err error) {
	if s == "" {
		return "", 0, errors.New("empty address")
	}
	if strings.TrimSpace(s) != s || strings.ContainsAny(s, " \t\r\n") {
		return "", 0, errors.New("contains spaces")
	}
	host, portStr, splitErr := net.SplitHostPort(s)
	switch {
	case splitErr == nil:
	case net.ParseIP(s) != nil: // bare IPv6 literal
		host, portStr = s, ""
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
		host, portStr = s[1:len(s)-1], ""
	case strings.Contains(splitErr.Error(), "missing port"):
		host, portStr = s, ""
	default:
		return "", 0, errors.New("not host or host:port")
	}
	if host == "" {
		return "", 0, errors.New("host is empty")
	}
	if net.ParseIP(host) == nil {
		if err := validateHostname(host); err != nil {
			return "", 0, err
		}
	}
	port = DefaultPort
	if portStr != "" {
		port, err = strconv.Atoi(portStr)
		if err != nil {
			return "", 0, fmt.Errorf("port %q is not a number", portStr)
		}
		if port < 1 || port > 65535 {
			return "", 0, fmt.Errorf("port %d is out of range 1-65535", port)
		}
	}
	return host, port, nil
}

func validateHostname(h string) error {
	if len(h) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	for _, r := range h {
		ok := r == '-' || r == '.' || r == '_' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("host %q contains %q", h, r)
		}
	}
	return nil
}

// Meta is a member's metadata, gossiped to every member as JSON inside
// memberlist's node metadata (at most MaxMetaSize bytes encoded).
type Meta struct {
	BrickID  string `json:"b"`
	GRPCAddr string `json:"g"`
	RaftAddr string `json:"r"`
	Capacity uint64 `json:"c"`
	Free     uint64 `json:"f"`
	NoDisk   bool   `json:"n,omitempty"`
	Version  string `json:"v,omitempty"`
	// Cluster is the cluster ID from Raft once known, so that daemons of
	// another cluster sharing the key can be told apart.
	Cluster string `json:"cl,omitempty"`
}

// wireMeta is what is gossiped: Meta plus the leaving flag Leave sets so
// that others report StateLeft instead of StateDead.
type wireMeta struct {
	Meta
	Leaving bool `json:"l,omitempty"`
}

// encodeMeta encodes m. The size check always counts the leaving flag, so a
// Meta accepted once can always be re-gossiped by Leave.
func encodeMeta(m Meta, leaving bool) ([]byte, error) {
	worst, err := json.Marshal(wireMeta{Meta: m, Leaving: true})
	if err != nil {
		return nil, err
	}
	if len(worst) > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, at most %d", ErrMetaTooLarge, len(worst), MaxMetaSize)
	}
	if leaving {
		return worst, nil
	}
	return json.Marshal(wireMeta{Meta: m})
}

func decodeMeta(b []byte) (Meta, bool, error) {
	var w wireMeta
	if len(b) == 0 {
		return Meta{}, false, errors.New("no metadata")
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, false, err
	}
	return w.Meta, w.Leaving, nil
}
