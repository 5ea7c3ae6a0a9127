package main

import (
	"strings"
	"testing"
)

// TestBadInputNeverReachesDaemon runs every kind of bad command line against
// a live fake daemon and checks that each is refused with a clear message
// and exit code 2, and that the daemon saw no call at all.
func TestBadInputNeverReachesDaemon(t *testing.T) {
	long := strings.Repeat("a", 65)
	cases := []struct {
		name string
		env  map[string]string // added to the socket's
		args []string
		want string // in stderr
	}{
		// Names.
		{"empty name", nil, []string{"volume", "create", ""}, "volume name is empty"},
		{"65 chars", nil, []string{"volume", "create", long}, "65 characters is too long (at most 64)"},
		{"slash", nil, []string{"volume", "create", "a/b"}, `character '/' at position 2 is not allowed`},
		{"dotdot", nil, []string{"volume", "create", ".."}, `must start with a letter or digit`},
		{"dotdot inside", nil, []string{"volume", "create", "a..b"}, `volume name "a..b"`},
		{"space", nil, []string{"volume", "create", "a b"}, `character ' ' at position 2 is not allowed`},
		{"control char", nil, []string{"volume", "create", "a\x01b"}, `character '\x01' at position 2`},
		{"tab", nil, []string{"volume", "create", "a\tb"}, `character '\t' at position 2`},
		{"no name", nil, []string{"volume", "create"}, "takes exactly one volume NAME, got 0"},
		{"two names", nil, []string{"volume", "create", "a", "b"}, "takes exactly one volume NAME, got 2"},
		{"inspect bad name", nil, []string{"volume", "inspect", "a/b"}, `character '/'`},
		{"status bad name", nil, []string{"volume", "status", ""}, "volume name is empty"},
		{"rm bad name", nil, []string{"volume", "rm", ".."}, `volume name ".."`},
		{"rm no name", nil, []string{"volume", "rm"}, "takes exactly one volume NAME"},

		// Sizes.
		{"size -1", nil, []string{"volume", "create", "v", "--size", "-1"}, `size "-1": must be positive`},
		{"size=-1", nil, []string{"volume", "create", "v", "--size=-1"}, `size "-1": must be positive`},
		{"size 0", nil, []string{"volume", "create", "v", "--size", "0"}, `size "0": must be positive`},
		{"size 10Q", nil, []string{"volume", "create", "v", "--size", "10Q"}, `size "10Q": unknown unit "Q"`},
		{"size 1e99", nil, []string{"volume", "create", "v", "--size", "1e99"}, `size "1e99": exponents are not allowed`},
		{"size empty", nil, []string{"volume", "create", "v", "--size", ""}, `size is empty`},

		// Layouts.
		{"replicas 0", nil, []string{"volume", "create", "v", "--replicas", "0"}, `replicas "0": must be between 1 and 16`},
		{"replicas x", nil, []string{"volume", "create", "v", "--replicas", "x"}, `replicas "x" is not a whole number`},
		{"ec 4+", nil, []string{"volume", "create", "v", "--ec", "4+"}, `ec "4+": expected the form K+M`},
		{"ec a+b", nil, []string{"volume", "create", "v", "--ec", "a+b"}, `ec "a+b": expected the form K+M`},
		{"replicas and ec", nil, []string{"volume", "create", "v", "--replicas", "3", "--ec", "4+2"}, `are both set`},
		{"empty replicas and ec", nil, []string{"volume", "create", "v", "--replicas=", "--ec", "4+2"}, `--replicas and --ec are both set`},

		// Access, min-isr, labels.
		{"access", nil, []string{"volume", "create", "v", "--access", "multi"}, `access "multi": use "single"`},
		{"min-isr above default width", nil, []string{"volume", "create", "v", "--min-isr", "4"}, `min-isr 4: must be between 1 and 3`},
		{"min-isr above replicas", nil, []string{"volume", "create", "v", "--replicas", "1", "--min-isr", "2"}, `min-isr 2: must be between 1 and 1`},
		{"min-isr above ec width", nil, []string{"volume", "create", "v", "--ec", "2+1", "--min-isr", "4"}, `min-isr 4: must be between 1 and 3`},
		{"min-isr 0", nil, []string{"volume", "create", "v", "--min-isr", "0"}, `min-isr 0: must be between 1`},
		{"min-isr abc", nil, []string{"volume", "create", "v", "--min-isr", "abc"}, `min-isr "abc" is not a whole number`},
		{"label without =", nil, []string{"volume", "create", "v", "--label", "noeq"}, `label "noeq": expected key=value`},
		{"label empty key", nil, []string{"volume", "create", "v", "--label", "=v"}, `label key ""`},
		{"label twice", nil, []string{"volume", "create", "v", "--label", "a=1", "--label", "a=2"}, `label "a" is given twice`},

		// Command line shape.
		{"unknown flag", nil, []string{"volume", "create", "v", "--bogus"}, "unknown flag: --bogus"},
		{"unknown global flag", nil, []string{"--bogus", "status"}, "unknown flag: --bogus"},
		{"unknown command", nil, []string{"volum"}, `unknown command "volum" for "brick" (did you mean "volume"?)`},
		{"unknown subcommand", nil, []string{"volume", "lss"}, `unknown command "lss" for "brick volume" (did you mean "ls"?)`},
		{"ls with args", nil, []string{"volume", "ls", "x"}, `brick volume ls takes no arguments, got "x"`},
		{"peer ls with args", nil, []string{"peer", "ls", "x"}, `takes no arguments`},

		// Global options.
		{"bad port", nil, []string{"--server", "127.0.0.1:99999", "status"}, `port "99999" is not a number from 1 to 65535`},
		{"empty port", nil, []string{"--server", "127.0.0.1:", "status"}, `port "" is not a number`},
		{"bad server", map[string]string{envServer: "a:b:c"}, []string{"status"}, `--server "a:b:c": want IP[:PORT]`},
		{"short key", map[string]string{envServer: "127.0.0.1", envClusterKey: "short"}, []string{"status"}, envClusterKey + ": cluster key is 5 characters long"},
		{"bad timeout env", map[string]string{envTimeout: "soon"}, []string{"status"}, `BRICK_TIMEOUT="soon": want a duration`},
		{"negative timeout env", map[string]string{envTimeout: "-1s"}, []string{"status"}, `BRICK_TIMEOUT="-1s": want a positive duration`},
		{"zero timeout flag", nil, []string{"--timeout", "0s", "status"}, `--timeout 0s: want a positive duration`},
		{"bad json env", map[string]string{envJSON: "maybe"}, []string{"status"}, `BRICK_JSON="maybe": want true or false`},
		{"no socket", map[string]string{}, []string{"--socket", "", "status"}, "no daemon to talk to"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, sock := startFake(t)
			env := onSocket(sock)
			for k, v := range tc.env {
				env[k] = v
			}
			r := runCLI(t, env, tc.args...)
			if r.code != 2 {
				t.Errorf("exit code %d, want 2; stderr:\n%s", r.code, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "brick: ") || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tc.want)
			}
			if !strings.Contains(r.stderr, "--help' for usage.") {
				t.Errorf("stderr %q does not point at --help", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty: %q", r.stdout)
			}
			if calls := f.callNames(); len(calls) != 0 {
				t.Errorf("daemon was called: %v", calls)
			}
		})
	}
}

// The key's value never appears in an error.
func TestClusterKeyNotPrinted(t *testing.T) {
	secret := "tooshort-secret"
	r := runCLI(t, map[string]string{envServer: "127.0.0.1", envClusterKey: secret}, "status")
	if r.code != 2 || strings.Contains(r.stderr, secret) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	r = runCLI(t, nil, "--help")
	if r.code != 0 || strings.Contains(r.stdout, secret) || !strings.Contains(r.stdout, "[$BRICK_CLUSTER_KEY]") {
		t.Errorf("exit %d, help:\n%s", r.code, r.stdout)
	}
}

// A flag given on the command line overrides a malformed env value.
func TestFlagOverridesBadEnv(t *testing.T) {
	f, sock := startFake(t)
	env := onSocket(sock)
	env[envTimeout] = "soon"
	env[envJSON] = "maybe"
	r := runCLI(t, env, "--timeout", "5s", "--json=false", "volume", "ls")
	if r.code != 0 || r.stdout != strings.TrimPrefix(wantVolumesTable, "\n") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if got := f.callNames(); len(got) != 1 {
		t.Errorf("calls %v", got)
	}
}

func TestServerAddress(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5":        "10.0.0.5:7400",
		"10.0.0.5:7401":   "10.0.0.5:7401",
		"ci-1":            "ci-1:7400",
		"::1":             "[::1]:7400",
		"[::1]":           "[::1]:7400",
		"[fe80::1]:7402":  "[fe80::1]:7402",
		"127.0.0.1:65535": "127.0.0.1:65535",
	} {
		got, err := serverAddress(in)
		if err != nil || got != want {
			t.Errorf("serverAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{":7400", "10.0.0.5:0", "10.0.0.5:x", "a:b:c", "[]", "a b", "10.0.0.5:-1"} {
		if got, err := serverAddress(in); err == nil {
			t.Errorf("serverAddress(%q) = %q, want an error", in, got)
		}
	}
}
