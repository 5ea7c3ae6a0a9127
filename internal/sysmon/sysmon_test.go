package sysmon

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestSteady(t *testing.T) {
	for godebug, want := range map[string]bool{
		"":                               false,
		"schedtrace=0":                   false,
		"madvdontneed=1":                 false,
		Setting:                          true,
		"madvdontneed=1, schedtrace=500": true,
		"xschedtrace=5":                  false,
	} {
		if got := Steady(godebug); got != want {
			t.Errorf("Steady(%q) = %v, want %v", godebug, got, want)
		}
	}
}

func TestWithAndStrip(t *testing.T) {
	for _, tc := range []struct {
		env, with, strip []string
	}{
		{[]string{"A=1"}, []string{"A=1", "GODEBUG=" + Setting, marker + "=1"}, []string{"A=1"}},
		{[]string{"GODEBUG=", "A=1"}, []string{"A=1", "GODEBUG=" + Setting, marker + "=1"}, []string{"A=1"}},
		{[]string{"GODEBUG=madvdontneed=1", "A=1"},
			[]string{"A=1", "GODEBUG=madvdontneed=1," + Setting, marker + "=1"},
			[]string{"A=1", "GODEBUG=madvdontneed=1"}},
	} {
		with := With(tc.env)
		if !slices.Equal(with, tc.with) {
			t.Errorf("With(%q) = %q, want %q", tc.env, with, tc.with)
		}
		if strip := Strip(with); !slices.Equal(strip, tc.strip) {
			t.Errorf("Strip(%q) = %q, want %q", with, strip, tc.strip)
		}
	}
	// An operator's own schedtrace reaches children.
	own := []string{"GODEBUG=schedtrace=1000"}
	if got := Strip(own); !slices.Equal(got, own) {
		t.Errorf("Strip(%q) = %q", own, got)
	}
}

// TestReexec runs this test binary as a program that calls Reexec and
// prints its GODEBUG: once re-executed it must have the setting, and
// exactly one exec must have happened (the marker stops a second).
func TestReexec(t *testing.T) {
	if os.Getenv("SYSMON_TEST_CHILD") == "1" {
		if err := Reexec(os.Args, os.Environ()); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(3)
		}
		os.Stdout.WriteString("GODEBUG=" + os.Getenv("GODEBUG") + " marker=" + os.Getenv(marker) + "\n")
		os.Exit(0)
	}
	for _, tc := range []struct{ godebug, want string }{
		{"", "GODEBUG=" + Setting + " marker=1"},
		{"madvdontneed=1", "GODEBUG=madvdontneed=1," + Setting + " marker=1"},
		{"schedtrace=2000000000", "GODEBUG=schedtrace=2000000000 marker="}, // already steady: no exec
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReexec$")
		cmd.Env = append(Strip(os.Environ()), "SYSMON_TEST_CHILD=1", "GODEBUG="+tc.godebug)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("GODEBUG=%q: child failed: %v\n%s", tc.godebug, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("GODEBUG=%q: child says %q, want %q", tc.godebug, got, tc.want)
		}
	}
}
