package main

import (
	"bytes"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Bad flags and bad BRICK_* values are refused before anything starts.
func TestBadInputRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--bind", "not-an-ip", "--name", "n"}, nil, "--bind"},
		{[]string{"--name", "n"}, map[string]string{"BRICK_BOOTSTRAP_EXPECT": "three"}, "BRICK_BOOTSTRAP_EXPECT"},
		{[]string{"--name", "n"}, map[string]string{"BRICK_DEAD_VOTER_TIMEOUT": "5"}, "BRICK_DEAD_VOTER_TIMEOUT"},
		{[]string{"--name", "n"}, map[string]string{"BRICK_NO_DISK": "maybe"}, "BRICK_NO_DISK"},
		{[]string{"--name", "n", "--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--name", "n", "--peers", "h:x"}, nil, "--peers"},
		{[]string{"--name", "n", "--replication-stream", "udp"}, nil, "--replication-stream"},
		{[]string{"--name", "n"}, map[string]string{"BRICK_REPLICATION_STREAM": "quic"}, "--replication-stream"},
		{[]string{"--name", "n", "extra"}, nil, "unexpected argument"},
		{[]string{"--no-such-flag"}, nil, "no-such-flag"},
	} {
		var out bytes.Buffer
		if code := run(tc.args, &out, env(tc.env)); code != 2 {
			t.Errorf("%v %v: exit %d, want 2; output %q", tc.args, tc.env, code, out.String())
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v %v: output %q does not mention %q", tc.args, tc.env, out.String(), tc.want)
		}
	}
}

func TestHelpListsEnvTwins(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, &out, env(nil)); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, want := range []string{"BRICK_NAME", "BRICK_BIND", "BRICK_DATA_DIR", "BRICK_PEERS", "BRICK_BOOTSTRAP_EXPECT", "BRICK_CLUSTER_KEY", "BRICK_SOCKET"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}
