package volspec

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrInvalid is what every error of this package wraps: the input was
// refused for its syntax or consistency. Boundaries map it once: gRPC
// InvalidArgument, the Docker plugin's Err string, the CLI's exit code.
var ErrInvalid = errors.New("invalid volume option")

// Error is a refused input. Field names what was refused ("name", "size",
// "replicas", "ec", "layout", "access", "min-isr", "label", "option"); Msg
// says why and what is accepted, and is the whole error text.
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap makes every *Error match ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

func errorf(field, format string, args ...any) error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// maxQuoted bounds how long a quoted input in an error message may be.
const maxQuoted = 80

// quote renders user input for an error message: Go-quoted (so control
// characters and invalid UTF-8 are visible) and cut short, with "…", so the
// quoted form stays within maxQuoted bytes however the input escapes.
func quote(s string) string {
	if len(s) <= maxQuoted/4-2 { // fits even if every byte escapes to \xNN
		return strconv.Quote(s)
	}
	n := min(len(s), maxQuoted)
	q := strconv.Quote(s[:n])
	if n == len(s) && len(q) <= maxQuoted {
		return q
	}
	for len(q) > maxQuoted-3 {
		n--
		q = strconv.Quote(s[:n])
	}
	return q + "…"
}
