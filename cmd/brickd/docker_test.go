package main

import (
	"bytes"
	"strings"
	"testing"
)

// The Docker plugin's flags have BRICK_* twins and bad values are refused.
func TestDockerFlags(t *testing.T) {
	var out bytes.Buffer
	run([]string{"--help"}, &out, env(nil))
	for _, want := range []string{"BRICK_DOCKER_SOCKET", "BRICK_DOCKER_MOUNT_ROOT", "BRICK_DOCKER_TIMEOUT", "/run/docker/plugins/brick.sock"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--name", "n", "--docker-socket", "rel.sock"}, nil, "--docker-socket"},
		{[]string{"--name", "n"}, map[string]string{"BRICK_DOCKER_MOUNT_ROOT": "rel"}, "--docker-mount-root"},
		{[]string{"--name", "n"}, map[string]string{"BRICK_DOCKER_TIMEOUT": "soon"}, "BRICK_DOCKER_TIMEOUT"},
	} {
		out.Reset()
		if code := run(tc.args, &out, env(tc.env)); code != 2 || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v %v: exit %d, output %q; want 2 naming %s", tc.args, tc.env, code, out.String(), tc.want)
		}
	}
}
