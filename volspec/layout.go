package volspec

import (
	"fmt"
	"strconv"
	"strings"
)

const (
	// DefaultReplicas is the layout of a volume created without one. It is
	// never lowered to fit a small cluster: with fewer bricks the create
	// fails and says so.
	DefaultReplicas = 3
	// MaxReplicas bounds replicas=N.
	MaxReplicas = 16
	// MaxECWidth bounds K+M of ec=K+M.
	MaxECWidth = 32
)

// Layout is replicas=N (Replicas > 0) or ec=K+M (ECData, ECParity > 0),
// never both; the zero Layout means "not chosen" and Spec.Defaults fills it.
// Its fields mirror control.Layout in name, type and order, so the daemon
// converts with control.Layout(l) without this package importing control.
type Layout struct {
	Replicas int
	ECData   int
	ECParity int
}

// IsZero reports whether no layout was chosen.
func (l Layout) IsZero() bool { return l == Layout{} }

// Width is the number of bricks the layout needs: N, or K+M.
func (l Layout) Width() int {
	if l.Replicas > 0 {
		return l.Replicas
	}
	return l.ECData + l.ECParity
}

// String renders the layout as the user would write it: "replicas=3",
// "ec=4+2"; "unset" for the zero Layout.
func (l Layout) String() string {
	switch {
	case l.IsZero():
		return "unset"
	case l.ECData == 0 && l.ECParity == 0:
		return "replicas=" + strconv.Itoa(l.Replicas)
	case l.Replicas == 0:
		return fmt.Sprintf("ec=%d+%d", l.ECData, l.ECParity)
	}
	return fmt.Sprintf("replicas=%d,ec=%d+%d", l.Replicas, l.ECData, l.ECParity)
}

const ecHint = `expected the form K+M, e.g. "4+2" (K data fragments >= 1, M parity fragments >= 1, K+M <= 32)`

// Validate checks a chosen layout: exactly one of replicas=1..MaxReplicas or
// ec=K+M with K, M >= 1 and K+M <= MaxECWidth. The zero Layout is refused.
func (l Layout) Validate() error {
	switch {
	case l.IsZero():
		return errorf("layout", "no layout: set replicas (e.g. 3) or ec (e.g. 4+2)")
	case l.Replicas < 0 || l.ECData < 0 || l.ECParity < 0:
		return errorf("layout", "layout %s: negative counts are not allowed", l)
	case l.Replicas > 0 && (l.ECData != 0 || l.ECParity != 0):
		return errorf("layout", "layout %s: replicas and ec are both set; a volume has one layout", l)
	case l.Replicas > MaxReplicas:
		return errorf("replicas", "replicas=%d: must be between 1 and %d", l.Replicas, MaxReplicas)
	case l.Replicas > 0:
		return nil
	case l.ECData < 1 || l.ECParity < 1 || l.ECData+l.ECParity > MaxECWidth:
		return errorf("ec", "ec=%d+%d: %s", l.ECData, l.ECParity, ecHint)
	}
	return nil
}

// ParseLayout parses the replicas and ec options (either may be ""). Neither
// set gives the zero Layout (Spec.Defaults fills it); both set is refused.
// replicas is a whole number 1..MaxReplicas; ec is "K+M" as in ecHint.
func ParseLayout(replicas, ec string) (Layout, error) {
	switch {
	case replicas == "" && ec == "":
		return Layout{}, nil
	case replicas != "" && ec != "":
		return Layout{}, errorf("layout", "replicas %s and ec %s are both set; a volume has one layout: choose replicas=N or ec=K+M",
			quote(replicas), quote(ec))
	case replicas != "":
		n, ok := atoi(replicas)
		if !ok {
			return Layout{}, errorf("replicas", "replicas %s is not a whole number (use 1 to %d, e.g. \"3\")", quote(replicas), MaxReplicas)
		}
		if n < 1 || n > MaxReplicas {
			return Layout{}, errorf("replicas", "replicas %s: must be between 1 and %d", quote(replicas), MaxReplicas)
		}
		return Layout{Replicas: n}, nil
	}
	ks, ms, found := strings.Cut(ec, "+")
	k, okK := atoi(ks)
	m, okM := atoi(ms)
	if !found || !okK || !okM {
		return Layout{}, errorf("ec", "ec %s: %s", quote(ec), ecHint)
	}
	if k < 1 || m < 1 || k+m > MaxECWidth {
		return Layout{}, errorf("ec", "ec %s: %s", quote(ec), ecHint)
	}
	return Layout{ECData: k, ECParity: m}, nil
}

// atoi parses a non-negative decimal: digits only, no sign or space. Values
// past 9 digits come back as 1<<30, which every range check refuses.
func atoi(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		if i < 9 {
			n = n*10 + int(s[i]-'0')
		} else {
			n = 1 << 30
		}
	}
	return n, true
}
