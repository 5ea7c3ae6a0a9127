package volspec

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"10G", "512M", "1T", "1048576", "10GiB", "10GB", "1.5 GiB", "0.001K", "7.99999E",
		"", "-1", "0", "10Q", "1e99", "1.5", " 10G", "8E", "512 B", "1.25 TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseSize(%q): error %v does not wrap ErrInvalid", s, err)
			}
			if len(err.Error()) > 600 {
				t.Fatalf("ParseSize(%q): error is %d bytes long", s, len(err.Error()))
			}
			return
		}
		if n == 0 || n > MaxSize {
			t.Fatalf("ParseSize(%q) = %d, outside 1..MaxSize", s, n)
		}
		// Bytes written out read back exactly.
		if m, err := ParseSize(strconv.FormatUint(n, 10)); err != nil || m != n {
			t.Fatalf("ParseSize(%d) = %d, %v", n, m, err)
		}
		// FormatSize always reads back, exactly when it can be exact and
		// otherwise to less than a hundredth of the unit below n.
		text := FormatSize(n)
		m, err := ParseSize(text)
		if err != nil {
			t.Fatalf("ParseSize(FormatSize(%d) = %q): %v", n, text, err)
		}
		unit := uint64(1)
		if n >= 1024 {
			unit = uint64(1) << (10 * ((63 - leadingZeros(n)) / 10))
		}
		if hundredthsExact(n, unit) && m != n {
			t.Fatalf("FormatSize(%d) = %q reads back as %d", n, text, m)
		}
		if m > n || n-m > unit/100 {
			t.Fatalf("FormatSize(%d) = %q reads back as %d", n, text, m)
		}
		if FormatSize(m) != text {
			t.Fatalf("FormatSize not stable: %q -> %d -> %q", text, m, FormatSize(m))
		}
	})
}

func leadingZeros(n uint64) int {
	z := 0
	for i := 63; i >= 0 && n&(1<<uint(i)) == 0; i-- {
		z++
	}
	return z
}

// hundredthsExact reports whether n is a whole number of hundredths of unit.
func hundredthsExact(n, unit uint64) bool {
	r := n % unit
	// r*100 % unit == 0 without overflow: unit is a power of two 2^k, and
	// 100 = 4×25, so r must be a multiple of 2^k/4 (or unit <= 4).
	if unit <= 4 {
		return true
	}
	return r%(unit/4) == 0
}

// nameRef is the dumb reference for ValidateName.
var nameRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"", "a", "a b", "a/b", "..", "a..b", "\x00", "a\n", "é", strings.Repeat("x", 64), strings.Repeat("x", 65), "-a", "a.b_c-d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateName(s)
		want := nameRef.MatchString(s) && !strings.Contains(s, "..")
		if (err == nil) != want {
			t.Fatalf("ValidateName(%q) = %v, reference says valid=%v", s, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateName(%q): %v does not wrap ErrInvalid", s, err)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Fatalf("ValidateName(%q): error is %d bytes long", s, len(err.Error()))
		}
	})
}

func FuzzParseOptions(f *testing.F) {
	f.Add("10G", "3", "", "single", "2", "team=ci", "", "")
	f.Add("", "", "4+2", "shared", "", "a=b,c=d", "minIsr", "5")
	f.Add("1.5T", "17", "4-2", "x", "0", "a=b,", "sise", "1")
	f.Add("", "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, size, replicas, ec, access, minISR, label, extraKey, extraVal string) {
		opts := map[string]string{}
		for k, v := range map[string]string{"size": size, "replicas": replicas, "ec": ec, "access": access, "min-isr": minISR, "label": label} {
			if v != "" {
				opts[k] = v
			}
		}
		if extraKey != "" {
			opts[extraKey] = extraVal
		}
		s, err := ParseOptions(opts)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseOptions(%v): %v does not wrap ErrInvalid", opts, err)
			}
			return
		}
		s.Name = "v"
		s.Defaults()
		if err := s.Validate(); err != nil {
			// Only min-isr against the default layout is left to Validate.
			var e *Error
			if !errors.As(err, &e) || e.Field != "min-isr" || opts["replicas"] != "" || opts["ec"] != "" {
				t.Fatalf("ParseOptions(%v) accepted %+v, Validate refuses: %v", opts, s, err)
			}
		}
	})
}

func TestQuoteBounded(t *testing.T) {
	for _, s := range []string{"", "abc", strings.Repeat("a", 80), strings.Repeat("a", 81), strings.Repeat("\x95", 19),
		strings.Repeat("\x95", 100), strings.Repeat("é", 100), strings.Repeat("\x00", 30)} {
		q := quote(s)
		if len(q) > maxQuoted {
			t.Errorf("quote(%d bytes) is %d bytes: %s", len(s), len(q), q)
		}
		if full := strconv.Quote(s); len(full) <= maxQuoted && q != full {
			t.Errorf("quote(%q) = %s, want %s", s, q, full)
		}
	}
}
