package volspec

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// refused asserts err is a volspec error for field whose message contains
// every part of want.
func refused(t *testing.T, what string, err error, field string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted, want refusal", what)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("%s: error %q does not wrap ErrInvalid", what, err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Field != field {
		t.Errorf("%s: error %q: field %v, want %q", what, err, e, field)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not mention %q", what, err, w)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "gocd-db", "A.b_c-1", "0", strings.Repeat("x", MaxNameLen), "pvc-6f1c0e1a-8f4e-4b4a-9d0b-0c7c2b9d8a11"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"", []string{"empty"}},
		{strings.Repeat("x", MaxNameLen+1), []string{"65 characters", "at most 64"}},
		{"a b", []string{`volume name "a b": character ' ' at position 2 is not allowed (use letters, digits, '-', '_' or '.')`}},
		{"a/b", []string{`'/' at position 2`}},
		{"/", []string{`'/' at position 1`}},
		{"..", []string{"must start with a letter or digit", `'.'`}},
		{"a..b", []string{`".." at position 2`}},
		{"a\x00", []string{`'\x00' at position 2`}},
		{"a\n", []string{`'\n' at position 2`}},
		{"\ta", []string{`'\t' at position 1`}},
		{"-a", []string{"must start with a letter or digit"}},
		{"_a", []string{"must start with a letter or digit"}},
		{"é", []string{"non-ASCII", "position 1"}},
		{"aé", []string{"non-ASCII", "position 2"}},
		{"a\xff", []string{"0xff", "position 2", "UTF-8"}},
		{"a:b", []string{`':' at position 2`}},
	} {
		refused(t, "ValidateName("+quote(tc.name)+")", ValidateName(tc.name), "name", tc.want...)
	}
	// Long input is not repeated whole in the message.
	err := ValidateName(strings.Repeat("y", 10000) + " ")
	if err == nil || len(err.Error()) > 400 {
		t.Errorf("long name: error %q", err)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"1", 1},
		{"1048576", 1 << 20},
		{"10G", 10 << 30},
		{"10g", 10 << 30},
		{"10Gi", 10 << 30},
		{"10GiB", 10 << 30},
		{"10GB", 10 << 30},
		{"10gib", 10 << 30},
		{"10 GiB", 10 << 30},
		{"512M", 512 << 20},
		{"1T", 1 << 40},
		{"2P", 2 << 50},
		{"4E", 4 << 60},
		{"1K", 1024},
		{"512B", 512},
		{"512 B", 512},
		{"1.5G", 3 << 29},
		{"1.5 GiB", 3 << 29},
		{"0.5K", 512},
		{"1.1K", 1127}, // 1126.4 rounded up
		{"0.001K", 2},  // 1.024 rounded up
		{"007", 7},
		{"9223372036854775807", MaxSize},
		{"7.99999E", 9223360507639729740}, // ceil(7.99999 × 2^60)
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"", "empty"},
		{"-1", "must be positive"},
		{"0", "must be positive"},
		{"0G", "must be positive"},
		{"0.0K", "must be positive"},
		{"10Q", `unknown unit "Q"`},
		{"1e99", "exponents"},
		{"1E+9", "exponents"},
		{"1.5", "fraction of a byte"},
		{"1.5B", "fraction of a byte"},
		{" 10G", "leading or trailing space"},
		{"10G ", "leading or trailing space"},
		{"10G\n", "leading or trailing space"},
		{"10  G", "unknown unit"},
		{"+10", "sign"},
		{"G", "must start with a number"},
		{".5G", "must start with a number"},
		{"1.G", "decimal point"},
		{"10GiBB", "unknown unit"},
		{"10iB", "unknown unit"},
		{"10KB5", "unknown unit"},
		{"8E", "too large"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999999P", "too large"},
		{"1,5G", "unknown unit"},
		{strings.Repeat("1", 100), "too long"},
	} {
		_, err := ParseSize(tc.in)
		refused(t, "ParseSize("+quote(tc.in)+")", err, "size", tc.want)
	}
}

func TestFormatSize(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{10 << 30, "10 GiB"},
		{512 << 20, "512 MiB"},
		{3 << 29, "1.5 GiB"},
		{5 << 28, "1.25 GiB"},
		{(1 << 30) + 1, "1 GiB"},
		{(1 << 30) - 1, "1023.99 MiB"}, // cut, not rounded up
		{(1 << 20) * 1023, "1023 MiB"},
		{1<<30 + 1<<30/3, "1.33 GiB"},
		{MaxSize, "7.99 EiB"},
		{1<<64 - 1, "15.99 EiB"},
	} {
		if got := FormatSize(tc.in); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseLayout(t *testing.T) {
	for _, tc := range []struct {
		replicas, ec string
		want         Layout
		str          string
	}{
		{"", "", Layout{}, "unset"},
		{"1", "", Layout{Replicas: 1}, "replicas=1"},
		{"3", "", Layout{Replicas: 3}, "replicas=3"},
		{"16", "", Layout{Replicas: 16}, "replicas=16"},
		{"", "4+2", Layout{ECData: 4, ECParity: 2}, "ec=4+2"},
		{"", "1+1", Layout{ECData: 1, ECParity: 1}, "ec=1+1"},
		{"", "16+16", Layout{ECData: 16, ECParity: 16}, "ec=16+16"},
	} {
		got, err := ParseLayout(tc.replicas, tc.ec)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseLayout(%q, %q) = %v (%s), %v; want %v (%s)", tc.replicas, tc.ec, got, got, err, tc.want, tc.str)
		}
		if !got.IsZero() {
			if err := got.Validate(); err != nil {
				t.Errorf("%v.Validate() = %v", got, err)
			}
		}
	}
	for _, tc := range []struct {
		replicas, ec, field, want string
	}{
		{"0", "", "replicas", "between 1 and 16"},
		{"-1", "", "replicas", "not a whole number"},
		{"x", "", "replicas", "not a whole number"},
		{"17", "", "replicas", "between 1 and 16"},
		{"99999999999999", "", "replicas", "between 1 and 16"},
		{" 3", "", "replicas", "not a whole number"},
		{"+3", "", "replicas", "not a whole number"},
		{"", "4+", "ec", `expected the form K+M, e.g. "4+2"`},
		{"", "+2", "ec", "expected the form K+M"},
		{"", "0+2", "ec", "K data fragments >= 1"},
		{"", "2+0", "ec", "M parity fragments >= 1"},
		{"", "4-2", "ec", "expected the form K+M"},
		{"", "a+b", "ec", "expected the form K+M"},
		{"", "30+5", "ec", "K+M <= 32"},
		{"", "4+2+1", "ec", "expected the form K+M"},
		{"", "4 + 2", "ec", "expected the form K+M"},
		{"3", "4+2", "layout", "both set"},
	} {
		_, err := ParseLayout(tc.replicas, tc.ec)
		refused(t, "ParseLayout("+quote(tc.replicas)+", "+quote(tc.ec)+")", err, tc.field, tc.want)
	}
	for _, l := range []Layout{{}, {Replicas: -1}, {Replicas: 3, ECData: 2}, {Replicas: 17}, {ECData: 4}, {ECParity: 2}, {ECData: 20, ECParity: 13}, {ECData: -1, ECParity: 3}} {
		if err := l.Validate(); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("%#v.Validate() = %v, want ErrInvalid", l, err)
		}
	}
}

func TestParseAccess(t *testing.T) {
	for in, want := range map[string]string{"": "single", "single": "single", "shared": "shared"} {
		if got, err := ParseAccess(in); err != nil || got != want {
			t.Errorf("ParseAccess(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"Single", "multi", " single", "rwx"} {
		_, err := ParseAccess(in)
		refused(t, "ParseAccess("+quote(in)+")", err, "access", `"single"`, `"shared"`)
	}
}

func TestParseLabel(t *testing.T) {
	for _, tc := range []struct{ in, k, v string }{
		{"team=ci", "team", "ci"},
		{"team=", "team", ""},
		{"example.com/tier=gold", "example.com/tier", "gold"},
		{"a.b_c-d=E.f_g-H", "a.b_c-d", "E.f_g-H"},
		{"k=" + strings.Repeat("v", 63), "k", strings.Repeat("v", 63)},
		{"x=a=b", "", ""}, // value "a=b": '=' not allowed
	} {
		k, v, err := ParseLabel(tc.in)
		if tc.k == "" {
			refused(t, "ParseLabel("+quote(tc.in)+")", err, "label", "'='")
			continue
		}
		if err != nil || k != tc.k || v != tc.v {
			t.Errorf("ParseLabel(%q) = %q, %q, %v", tc.in, k, v, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"team", "expected key=value"},
		{"=ci", "name is empty"},
		{"-team=ci", "begin and end"},
		{"team-=ci", "begin and end"},
		{"te am=ci", "' ' at position 3"},
		{"team=c i", "' ' at position 2"},
		{"team=-ci", "begin and end"},
		{strings.Repeat("k", 64) + "=v", "longer than 63"},
		{"k=" + strings.Repeat("v", 64), "longer than 63"},
		{"Example.com/tier=gold", "'E' is not allowed"},
		{"/tier=gold", "DNS subdomain"},
		{"a..b/tier=gold", "DNS subdomain"},
		{"-a.b/tier=gold", "begin and end"},
		{"example.com/=gold", "name is empty"},
		{"a/b/c=d", "'/' at position 2"},
		{"k=\x00", "byte 0x00"},
	} {
		_, _, err := ParseLabel(tc.in)
		refused(t, "ParseLabel("+quote(tc.in)+")", err, "label", tc.want)
	}
}

func TestSpecDefaultsAndValidate(t *testing.T) {
	s := Spec{Name: "db"}
	s.Defaults()
	want := Spec{Name: "db", SizeBytes: 10 << 30, Layout: Layout{Replicas: 3}, Access: "single", MinISR: 2}
	if s.Name != want.Name || s.SizeBytes != want.SizeBytes || s.Layout != want.Layout || s.Access != want.Access || s.MinISR != want.MinISR {
		t.Fatalf("Defaults() = %+v, want %+v", s, want)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	// Given values are never changed.
	g := Spec{Name: "x", SizeBytes: 1, Layout: Layout{Replicas: 1}, Access: "shared", MinISR: 1}
	g2 := g
	g2.Defaults()
	if g2.SizeBytes != 1 || g2.Layout != g.Layout || g2.Access != "shared" || g2.MinISR != 1 {
		t.Errorf("Defaults changed given values: %+v", g2)
	}
	for l, want := range map[Layout]int{
		{Replicas: 1}: 1, {Replicas: 2}: 2, {Replicas: 3}: 2, {Replicas: 5}: 2,
		{ECData: 4, ECParity: 2}: 5, {ECData: 2, ECParity: 1}: 3, {ECData: 1, ECParity: 1}: 2,
	} {
		if got := DefaultMinISR(l); got != want {
			t.Errorf("DefaultMinISR(%v) = %d, want %d", l, got, want)
		}
	}

	base := func() Spec {
		s := Spec{Name: "db", Labels: map[string]string{"team": "ci"}}
		s.Defaults()
		return s
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Spec)
		field  string
		want   string
	}{
		{"bad name", func(s *Spec) { s.Name = "a b" }, "name", "position 2"},
		{"zero size", func(s *Spec) { s.SizeBytes = 0 }, "size", "positive"},
		{"huge size", func(s *Spec) { s.SizeBytes = 1 << 63 }, "size", "too large"},
		{"no layout", func(s *Spec) { s.Layout = Layout{} }, "layout", "no layout"},
		{"both layouts", func(s *Spec) { s.Layout = Layout{Replicas: 2, ECData: 2, ECParity: 1} }, "layout", "both set"},
		{"no access", func(s *Spec) { s.Access = "" }, "access", "not set"},
		{"bad access", func(s *Spec) { s.Access = "many" }, "access", `"many"`},
		{"min-isr 0", func(s *Spec) { s.MinISR = 0 }, "min-isr", "between 1 and 3"},
		{"min-isr > width", func(s *Spec) { s.MinISR = 4 }, "min-isr", "between 1 and 3, the width of replicas=3"},
		{"bad label", func(s *Spec) { s.Labels["b@d"] = "x" }, "label", "'@'"},
		{"too many labels", func(s *Spec) {
			for i := range MaxLabels {
				s.Labels[strings.Repeat("k", i+1)] = "v"
			}
		}, "label", "too many"},
	} {
		s := base()
		tc.mutate(&s)
		refused(t, tc.name, s.Validate(), tc.field, tc.want)
	}
}

func TestParseOptions(t *testing.T) {
	s, err := ParseOptions(map[string]string{"size": "20G", "replicas": "2", "access": "shared", "min-isr": "1", "label": "team=ci,tier=gold"})
	if err != nil {
		t.Fatal(err)
	}
	if s.SizeBytes != 20<<30 || s.Layout != (Layout{Replicas: 2}) || s.Access != "shared" || s.MinISR != 1 ||
		len(s.Labels) != 2 || s.Labels["team"] != "ci" || s.Labels["tier"] != "gold" || s.Name != "" {
		t.Errorf("ParseOptions = %+v", s)
	}
	s, err = ParseOptions(map[string]string{"ec": "4+2", "minIsr": "6"})
	if err != nil || s.Layout != (Layout{ECData: 4, ECParity: 2}) || s.MinISR != 6 {
		t.Errorf("ParseOptions(ec, minIsr) = %+v, %v", s, err)
	}
	s, err = ParseOptions(nil)
	if err != nil || !s.Layout.IsZero() || s.SizeBytes != 0 || s.Access != "" || s.MinISR != 0 || s.Labels != nil {
		t.Errorf("ParseOptions(nil) = %+v, %v", s, err)
	}
	// min-isr without a layout is checked later, against the default layout.
	s, err = ParseOptions(map[string]string{"min-isr": "4"})
	if err != nil {
		t.Fatal(err)
	}
	s.Name = "x"
	s.Defaults()
	refused(t, "min-isr 4 with default layout", s.Validate(), "min-isr", "between 1 and 3")

	for _, tc := range []struct {
		opts  map[string]string
		field string
		want  []string
	}{
		{map[string]string{"sise": "1G"}, "option", []string{`unknown option "sise"`, "access, ec, label, min-isr, replicas, size"}},
		{map[string]string{"replicas": "3", "ec": "4+2"}, "layout", []string{"both set"}},
		{map[string]string{"size": "10Q"}, "size", []string{"10Q"}},
		{map[string]string{"size": ""}, "option", []string{`option "size" is empty`}},
		{map[string]string{"replicas": ""}, "option", []string{`option "replicas" is empty`}},
		{map[string]string{"label": ""}, "option", []string{`option "label" is empty`}},
		{map[string]string{"replicas": "0"}, "replicas", []string{"between 1 and 16"}},
		{map[string]string{"ec": "4-2"}, "ec", []string{"K+M"}},
		{map[string]string{"access": "all"}, "access", []string{`"all"`}},
		{map[string]string{"min-isr": "0"}, "min-isr", []string{"at least 1"}},
		{map[string]string{"min-isr": "x"}, "min-isr", []string{"at least 1"}},
		{map[string]string{"min-isr": "4", "replicas": "3"}, "min-isr", []string{"between 1 and 3"}},
		{map[string]string{"min-isr": "2", "minIsr": "2"}, "min-isr", []string{"same option"}},
		{map[string]string{"label": "team"}, "label", []string{"key=value"}},
		{map[string]string{"label": "a=b,"}, "label", []string{"item 2 is empty"}},
		{map[string]string{"label": "a=b,a=c"}, "label", []string{`"a" is given twice`}},
	} {
		_, err := ParseOptions(tc.opts)
		refused(t, fmt.Sprintf("ParseOptions(%v)", tc.opts), err, tc.field, tc.want...)
	}
}
