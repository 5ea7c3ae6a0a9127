package volspec

import (
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"strings"
)

// MaxSize is the largest volume size: math.MaxInt64 bytes (8 EiB minus one),
// so every size fits an int64 (off_t, a CSI capacity range).
const MaxSize = math.MaxInt64

// DefaultSize is the size of a volume created without one: 10 GiB.
const DefaultSize = 10 << 30

// maxSizeInput bounds the length of a size string; no valid size is longer.
const maxSizeInput = 64

const sizeHint = `use a whole number of bytes or a number with a binary unit K, M, G, T, P or E (1K = 1024), e.g. "10G" or "512MiB"`

var unitNames = [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// ParseSize parses a volume size; see the package doc for the grammar. All
// units are binary ("10GB" is 10×2³⁰ bytes, not 10⁹). A decimal fraction
// needs a unit and is rounded up to a whole byte. The result is in
// 1..MaxSize; "", "0", "-1", "10Q", "1e9", " 10G" and "1.5" are refused.
func ParseSize(s string) (uint64, error) {
	if s == "" {
		return 0, errorf("size", "size is empty (%s)", sizeHint)
	}
	if len(s) > maxSizeInput {
		return 0, errorf("size", "size %s is too long (%s)", quote(s), sizeHint)
	}
	if isSpace(s[0]) || isSpace(s[len(s)-1]) {
		return 0, errorf("size", "size %s: leading or trailing space is not allowed", quote(s))
	}
	switch s[0] {
	case '-':
		return 0, errorf("size", "size %s: must be positive", quote(s))
	case '+':
		return 0, errorf("size", "size %s: a sign is not allowed (%s)", quote(s), sizeHint)
	}
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart := s[:i]
	if intPart == "" {
		return 0, errorf("size", "size %s: must start with a number (%s)", quote(s), sizeHint)
	}
	frac := ""
	if i < len(s) && s[i] == '.' {
		j := i + 1
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		frac = s[i+1 : j]
		if frac == "" {
			return 0, errorf("size", "size %s: a decimal point must be followed by digits", quote(s))
		}
		i = j
	}
	rest := s[i:]
	if len(rest) > 0 && (rest[0] == 'e' || rest[0] == 'E') && len(rest) > 1 &&
		(isDigit(rest[1]) || rest[1] == '+' || rest[1] == '-') {
		return 0, errorf("size", "size %s: exponents are not allowed (%s)", quote(s), sizeHint)
	}
	shift, ok := parseUnit(rest)
	if !ok {
		return 0, errorf("size", "size %s: unknown unit %s (%s)", quote(s), quote(strings.TrimPrefix(rest, " ")), sizeHint)
	}
	if frac != "" && shift == 0 {
		return 0, errorf("size", "size %s: a fraction of a byte is not allowed; a decimal size needs a unit, e.g. \"1.5G\"", quote(s))
	}

	// bytes = ceil((intPart.frac) × 2^shift), computed exactly.
	n, _ := new(big.Int).SetString(intPart+frac, 10)
	n.Lsh(n, shift)
	if frac != "" {
		den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
		var m big.Int
		n.QuoRem(n, den, &m)
		if m.Sign() != 0 {
			n.Add(n, big.NewInt(1))
		}
	}
	if n.Sign() == 0 {
		return 0, errorf("size", "size %s: must be positive", quote(s))
	}
	if !n.IsUint64() || n.Uint64() > MaxSize {
		return 0, errorf("size", "size %s is too large (at most %s, %d bytes)", quote(s), FormatSize(MaxSize), uint64(MaxSize))
	}
	return n.Uint64(), nil
}

// parseUnit parses what follows the number: nothing, or an optional single
// space and then "B", or a unit letter with an optional "i", "iB" or "B".
// It returns the unit's power of two.
func parseUnit(rest string) (shift uint, ok bool) {
	if rest == "" {
		return 0, true
	}
	rest = strings.TrimPrefix(rest, " ")
	if rest == "" {
		return 0, false
	}
	if rest == "B" || rest == "b" {
		return 0, true
	}
	idx := strings.IndexByte("KMGTPE", upper(rest[0]))
	if idx < 0 {
		return 0, false
	}
	switch strings.ToLower(rest[1:]) {
	case "", "i", "ib", "b":
		return uint(10 * (idx + 1)), true
	}
	return 0, false
}

// FormatSize renders a size with the largest binary unit it reaches and at
// most two decimals, trailing zeros dropped: "512 B", "10 GiB", "1.5 GiB",
// "1.33 GiB". Extra digits are cut, never rounded up, so the text never
// claims more than n. ParseSize reads the result back: exactly when n is a
// whole number of hundredths of its unit, otherwise to less than a hundredth
// of the unit below n.
func FormatSize(n uint64) string {
	if n < 1024 {
		return strconv.FormatUint(n, 10) + " B"
	}
	u := (bits.Len64(n) - 1) / 10 // 1 = KiB … 6 = EiB
	unit := uint64(1) << (10 * u)
	q, r := n/unit, n%unit
	// hundredths = floor(r×100/unit); r < unit, so hi < unit and Div64 is safe.
	hi, lo := bits.Mul64(r, 100)
	h, _ := bits.Div64(hi, lo, unit)
	out := strconv.FormatUint(q, 10)
	if h != 0 {
		d := strconv.FormatUint(100+h, 10)[1:] // two digits
		out += "." + strings.TrimSuffix(d, "0")
	}
	return out + " " + unitNames[u]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}
