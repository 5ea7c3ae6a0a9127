package volspec

import (
	"unicode/utf8"
)

// MaxNameLen is the longest volume name, in characters (names are ASCII, so
// also in bytes).
const MaxNameLen = 64

const nameRule = "use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"

// ValidateName checks a volume name: 1 to MaxNameLen ASCII letters, digits,
// '-', '_' or '.', starting with a letter or digit, and without "..". These
// are Docker's volume name rules plus a length limit and the ".." ban, so a
// name is always a safe single path element. The error names the problem and
// the offending character and its position (1-based, in characters), e.g.
//
//	volume name "a b": character ' ' at position 2 is not allowed (use letters, digits, '-', '_' or '.')
func ValidateName(name string) error {
	if name == "" {
		return errorf("name", "volume name is empty (%s)", nameRule)
	}
	pos := 0
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		pos++
		switch {
		case r == utf8.RuneError && size <= 1:
			return errorf("name", "volume name %s: byte 0x%02x at position %d is not valid UTF-8 (%s)",
				quote(name), name[i], pos, nameRule)
		case r >= utf8.RuneSelf:
			return errorf("name", "volume name %s: non-ASCII character %q at position %d is not allowed (use letters, digits, '-', '_' or '.')",
				quote(name), r, pos)
		case isAlnum(byte(r)):
		case r == '-' || r == '_' || r == '.':
			if pos == 1 {
				return errorf("name", "volume name %s: must start with a letter or digit, not %q", quote(name), r)
			}
			if r == '.' && i+1 < len(name) && name[i+1] == '.' {
				return errorf("name", "volume name %s: \"..\" at position %d is not allowed", quote(name), pos)
			}
		default:
			return errorf("name", "volume name %s: character %q at position %d is not allowed (use letters, digits, '-', '_' or '.')",
				quote(name), r, pos)
		}
		i += size
	}
	if len(name) > MaxNameLen {
		return errorf("name", "volume name %s: %d characters is too long (at most %d)", quote(name), len(name), MaxNameLen)
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
