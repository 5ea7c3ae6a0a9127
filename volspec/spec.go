package volspec

import (
	"fmt"
	"sort"
	"strings"
)

// Access modes: how many hosts may attach a volume at once.
const (
	AccessSingle = "single"
	AccessShared = "shared"
)

// ParseAccess parses the access option: "single" (also for "") or "shared".
func ParseAccess(s string) (string, error) {
	switch s {
	case "", AccessSingle:
		return AccessSingle, nil
	case AccessShared:
		return AccessShared, nil
	}
	return "", errorf("access", "access %s: use \"single\" (one host at a time) or \"shared\" (many hosts at once)", quote(s))
}

const (
	// MaxLabels bounds how many labels a volume carries.
	MaxLabels = 64
	// maxLabelName bounds a label key's name part and a label value.
	maxLabelName = 63
	// maxLabelPrefix bounds a label key's DNS prefix.
	maxLabelPrefix = 253
)

// ParseLabel parses "key=value" and checks it with ValidateLabel. The value
// may be empty ("key="); the '=' may not be missing.
func ParseLabel(s string) (k, v string, err error) {
	k, v, found := strings.Cut(s, "=")
	if !found {
		return "", "", errorf("label", "label %s: expected key=value, e.g. \"team=ci\"", quote(s))
	}
	if err := ValidateLabel(k, v); err != nil {
		return "", "", err
	}
	return k, v, nil
}

// ValidateLabel checks a label by Kubernetes' rules, so labels pass through
// the CSI driver unchanged. A key is an optional DNS-subdomain prefix and '/'
// ("example.com/tier"), then a name of 1..63 of [A-Za-z0-9._-] beginning and
// ending with a letter or digit. A value is empty or follows the name rule.
func ValidateLabel(k, v string) error {
	name := k
	if prefix, rest, found := strings.Cut(k, "/"); found {
		if msg := dnsPrefix(prefix); msg != "" {
			return errorf("label", "label key %s: prefix %s", quote(k), msg)
		}
		name = rest
	}
	if name == "" {
		return errorf("label", "label key %s: the name is empty (%s)", quote(k), labelRule)
	}
	if msg := labelWord(name); msg != "" {
		return errorf("label", "label key %s: %s (%s)", quote(k), msg, labelRule)
	}
	if v != "" {
		if msg := labelWord(v); msg != "" {
			return errorf("label", "label %s value %s: %s (%s)", quote(k), quote(v), msg, labelRule)
		}
	}
	return nil
}

const labelRule = "use at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"

// labelWord checks a label name or non-empty value; "" means valid.
func labelWord(s string) string {
	if len(s) > maxLabelName {
		return "longer than 63 characters"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Sprintf("%s at position %d is not allowed", describeByte(c), i+1)
		}
	}
	if !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return "must begin and end with a letter or digit"
	}
	return ""
}

// dnsPrefix checks a label key's prefix; "" means valid.
func dnsPrefix(p string) string {
	if p == "" || len(p) > maxLabelPrefix {
		return "must be a DNS subdomain of 1 to 253 characters, e.g. \"example.com\""
	}
	for _, part := range strings.Split(p, ".") {
		if part == "" || len(part) > 63 {
			return quote(p) + " is not a DNS subdomain (dot-separated parts of 1 to 63 characters)"
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c >= 'a' && c <= 'z' || isDigit(c) || c == '-') {
				return fmt.Sprintf("%s: %s is not allowed (use lower-case letters, digits, '-' and '.')", quote(p), describeByte(c))
			}
		}
		if part[0] == '-' || part[len(part)-1] == '-' {
			return quote(p) + ": each part must begin and end with a letter or digit"
		}
	}
	return ""
}

// Spec is a volume as a user asks for it. The zero value of a field means
// "not given"; Defaults fills those, Validate checks everything.
type Spec struct {
	Name      string
	SizeBytes uint64
	Layout    Layout
	Access    string
	MinISR    int
	Labels    map[string]string
}

// DefaultMinISR is the min-isr of a layout when none is given: 2 for
// replicas=N with N >= 2 (an acknowledged write is on two disks before any
// failure can lose it), 1 for replicas=1, and K+1 for ec=K+M (one fragment
// more than decoding needs; K+1 <= K+M always since M >= 1).
func DefaultMinISR(l Layout) int {
	if l.Replicas > 0 {
		return min(2, l.Replicas)
	}
	return min(l.ECData+1, l.ECData+l.ECParity)
}

// Defaults fills every field left at its zero value except Name and Labels:
// SizeBytes = DefaultSize, Layout = replicas=DefaultReplicas, Access =
// single, MinISR = DefaultMinISR(Layout). It never changes a given value.
func (s *Spec) Defaults() {
	if s.SizeBytes == 0 {
		s.SizeBytes = DefaultSize
	}
	if s.Layout.IsZero() {
		s.Layout = Layout{Replicas: DefaultReplicas}
	}
	if s.Access == "" {
		s.Access = AccessSingle
	}
	if s.MinISR == 0 {
		s.MinISR = DefaultMinISR(s.Layout)
	}
}

// Validate checks every field of a complete Spec (call Defaults first to
// fill what the user left out): the name, size 1..MaxSize, the layout,
// access, min-isr within 1..width, and at most MaxLabels valid labels. The
// first problem found is returned, in field order.
func (s Spec) Validate() error {
	if err := ValidateName(s.Name); err != nil {
		return err
	}
	if s.SizeBytes == 0 {
		return errorf("size", "volume %q: size must be positive", s.Name)
	}
	if s.SizeBytes > MaxSize {
		return errorf("size", "volume %q: size %d is too large (at most %s)", s.Name, s.SizeBytes, FormatSize(MaxSize))
	}
	if err := s.Layout.Validate(); err != nil {
		return err
	}
	if s.Access != AccessSingle && s.Access != AccessShared {
		_, err := ParseAccess(s.Access)
		if err == nil { // "": Defaults was not called
			err = errorf("access", "volume %q: access is not set (use \"single\" or \"shared\")", s.Name)
		}
		return err
	}
	if err := ValidateMinISR(s.MinISR, s.Layout); err != nil {
		return err
	}
	return ValidateLabels(s.Labels)
}

// ValidateMinISR checks that min-isr is within 1..l.Width().
func ValidateMinISR(minISR int, l Layout) error {
	if minISR < 1 || minISR > l.Width() {
		return errorf("min-isr", "min-isr %d: must be between 1 and %d, the width of %s", minISR, l.Width(), l)
	}
	return nil
}

// ValidateLabels checks a label set: at most MaxLabels labels, each valid
// by ValidateLabel; with several bad ones, the first key in sorted order is
// reported.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return errorf("label", "%d labels is too many (at most %d)", len(labels), MaxLabels)
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := ValidateLabel(k, labels[k]); err != nil {
			return err
		}
	}
	return nil
}

// Option keys ParseOptions knows. OptMinISRCamel is the same as OptMinISR,
// spelled as Kubernetes StorageClass parameters usually are.
const (
	OptSize        = "size"
	OptReplicas    = "replicas"
	OptEC          = "ec"
	OptAccess      = "access"
	OptMinISR      = "min-isr"
	OptMinISRCamel = "minIsr"
	OptLabel       = "label"
)

var knownOptions = []string{OptAccess, OptEC, OptLabel, OptMinISR, OptReplicas, OptSize}

// ParseOptions parses a Docker- or CSI-style option map (docker volume
// create -o, StorageClass parameters): size, replicas, ec, access, min-isr
// (or minIsr) and label (a comma-separated list of key=value). Every value
// is checked, and so is what can be checked across them: replicas and ec are
// exclusive, min-isr fits the layout when one is given. An unknown key is
// refused with the list of known ones, and so is an empty value; callers
// strip keys their transport reserves (e.g. "csi.storage.k8s.io/...") first.
//
// The result has no Name and keeps given-or-zero values: set Name, call
// Defaults, then Validate.
func ParseOptions(opts map[string]string) (Spec, error) {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch k {
		case OptSize, OptReplicas, OptEC, OptAccess, OptMinISR, OptMinISRCamel, OptLabel:
		default:
			return Spec{}, errorf("option", "unknown option %s (known options: %s)", quote(k), strings.Join(knownOptions, ", "))
		}
		if opts[k] == "" {
			return Spec{}, errorf("option", "option %s is empty (give a value or leave the option out)", quote(k))
		}
	}
	var s Spec
	var err error
	if v, ok := opts[OptSize]; ok {
		if s.SizeBytes, err = ParseSize(v); err != nil {
			return Spec{}, err
		}
	}
	if s.Layout, err = ParseLayout(opts[OptReplicas], opts[OptEC]); err != nil {
		return Spec{}, err
	}
	if v, ok := opts[OptAccess]; ok {
		if s.Access, err = ParseAccess(v); err != nil {
			return Spec{}, err
		}
	}
	minISR, hasMin := opts[OptMinISR]
	if camel, ok := opts[OptMinISRCamel]; ok {
		if hasMin {
			return Spec{}, errorf("min-isr", "options min-isr and minIsr are the same option; give one")
		}
		minISR, hasMin = camel, true
	}
	if hasMin {
		n, ok := atoi(minISR)
		if !ok || n < 1 {
			return Spec{}, errorf("min-isr", "min-isr %s: expected a whole number of at least 1, e.g. \"2\"", quote(minISR))
		}
		if !s.Layout.IsZero() {
			if err := ValidateMinISR(n, s.Layout); err != nil {
				return Spec{}, err
			}
		}
		s.MinISR = n
	}
	if v, ok := opts[OptLabel]; ok {
		if s.Labels, err = parseLabelList(v); err != nil {
			return Spec{}, err
		}
	}
	return s, nil
}

// parseLabelList parses "k=v,k2=v2"; empty items and repeated keys are refused.
func parseLabelList(list string) (map[string]string, error) {
	if list == "" {
		return nil, nil
	}
	items := strings.Split(list, ",")
	if len(items) > MaxLabels {
		return nil, errorf("label", "%d labels is too many (at most %d)", len(items), MaxLabels)
	}
	labels := make(map[string]string, len(items))
	for i, item := range items {
		if item == "" {
			return nil, errorf("label", "label list %s: item %d is empty (expected key=value,key=value)", quote(list), i+1)
		}
		k, v, err := ParseLabel(item)
		if err != nil {
			return nil, err
		}
		if _, dup := labels[k]; dup {
			return nil, errorf("label", "label list %s: key %s is given twice", quote(list), quote(k))
		}
		labels[k] = v
	}
	return labels, nil
}

// describeByte names a refused byte: "character 'x'" or "byte 0x00".
func describeByte(c byte) string {
	if c < 0x20 || c >= 0x7f {
		return fmt.Sprintf("byte 0x%02x", c)
	}
	return fmt.Sprintf("character %q", rune(c))
}
