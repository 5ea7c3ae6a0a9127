// Command brick is the command line of a brick cluster: it asks any brickd
// (over its local unix socket, or over TCP with the cluster key) about peers
// and volumes, and creates and removes volumes.
//
// brick owns no state. Every command is one or a few Control RPCs; input is
// validated with volspec before anything is sent, so bad input never reaches
// a daemon (design.md promise 6), and the daemon validates again.
//
// Exit codes: 0 success; 1 the daemon could not be reached or refused the
// request; 2 the command line is wrong (nothing was sent). Errors go to stderr
// as one line "brick: <message>", also with --json, whose output on stdout is
// only ever a complete JSON document.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Environment twins of the global flags. A set variable is the flag's default.
const (
	envServer     = "BRICK_SERVER"
	envClusterKey = "BRICK_CLUSTER_KEY"
	envSocket     = "BRICK_SOCKET"
	envJSON       = "BRICK_JSON"
	envTimeout    = "BRICK_TIMEOUT"
)

const (
	defaultSocket  = "/run/brick/brick.sock"
	defaultPort    = "7400"
	defaultTimeout = 15 * time.Second
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run executes one brick command line and returns the process exit code.
// env looks up environment variables (os.Getenv in production).
func run(args []string, stdout, stderr io.Writer, env func(string) string) int {
	a := &app{
		stdout: stdout,
		stderr: stderr,
		env:    env,
		now:    time.Now,
		loc:    time.Local,
	}
	return a.run(context.Background(), args)
}

// app is one invocation of the CLI: its output streams, environment, clock
// and the global options once flags are parsed.
type app struct {
	stdout, stderr io.Writer
	env            func(string) string
	now            func() time.Time
	loc            *time.Location // for timestamps shown to people

	opts globalOptions
	// envErrs are malformed BRICK_* values, reported only when a command
	// runs (so --help still works) and only if the flag did not override them.
	envErrs map[string]error
}

type globalOptions struct {
	server     string
	clusterKey string // from the flag only; see app.clusterKey
	socket     string
	json       bool
	timeout    time.Duration
}

// usageError is a wrong command line: exit code 2, nothing was sent.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(a.stderr, "brick: %s\n", oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return 2
	}
	return 1
}

// oneLine keeps an error to one line: gRPC and cobra messages sometimes end
// in newlines or carry them inside.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "brick",
		Short: "Manage a brick cluster: peers and replicated volumes",
		Long: `brick talks to a brickd daemon (any member of the cluster answers) to show the
cluster's peers and to create, inspect and remove replicated volumes.

By default it uses the local daemon's unix socket. To manage a cluster from
another machine, set --server (or BRICK_SERVER) to any daemon's address and
BRICK_CLUSTER_KEY to the cluster key; the connection is then TLS, authenticated
with that key.

Exit codes: 0 success, 1 the daemon was unreachable or refused the request,
2 the command line is wrong (nothing was sent to the daemon).`,
		Example: `  brick status
  brick volume create gocd-db --size 20G --replicas 3
  BRICK_SERVER=10.0.0.5 BRICK_CLUSTER_KEY=... brick volume ls --json`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		Args:              cobra.ArbitraryArgs,
		RunE:              groupRunE,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.checkGlobals(cmd) },
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	a.bindGlobalFlags(root)
	root.AddCommand(a.statusCommand(), a.peerCommand(), a.volumeCommand(), a.versionCommand())
	return root
}

// groupRunE runs a command that only groups subcommands: alone it shows its
// help; with an argument that names no subcommand it is a usage error.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return usageError{errors.New(msg)}
}

func (a *app) bindGlobalFlags(root *cobra.Command) {
	a.envErrs = map[string]error{}
	f := root.PersistentFlags()

	f.StringVar(&a.opts.server, "server", a.env(envServer),
		"address `IP[:PORT]` of any brickd, port "+defaultPort+" if omitted; uses TLS with the cluster key. Empty: the local socket [$"+envServer+"]")
	// The key's value is never shown as a default in --help.
	f.StringVar(&a.opts.clusterKey, "cluster-key", "",
		"cluster `KEY` for --server (prefer the env var: flags show in ps). Default: the insecure development key [$"+envClusterKey+"]")
	socket := a.env(envSocket)
	if socket == "" {
		socket = defaultSocket
	}
	f.StringVar(&a.opts.socket, "socket", socket, "`PATH` of the local brickd's unix socket, used when --server is empty [$"+envSocket+"]")

	jsonDefault := false
	if v := a.env(envJSON); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			a.envErrs["json"] = fmt.Errorf("%s=%q: want true or false", envJSON, v)
		}
		jsonDefault = b
	}
	f.BoolVar(&a.opts.json, "json", jsonDefault, "print machine-readable JSON instead of tables [$"+envJSON+"]")

	timeout := defaultTimeout
	if v := a.env(envTimeout); v != "" {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			a.envErrs["timeout"] = fmt.Errorf("%s=%q: want a duration such as 15s or 1m", envTimeout, v)
		case d <= 0:
			a.envErrs["timeout"] = fmt.Errorf("%s=%q: want a positive duration", envTimeout, v)
		default:
			timeout = d
		}
	}
	f.DurationVar(&a.opts.timeout, "timeout", timeout, "how long to wait for the daemon's answer [$"+envTimeout+"]")
}

// checkGlobals reports malformed environment values that no flag overrode,
// and invalid flag values.
func (a *app) checkGlobals(cmd *cobra.Command) error {
	for _, name := range []string{"json", "timeout"} {
		if err := a.envErrs[name]; err != nil && !cmd.Flags().Changed(name) {
			return usageError{err}
		}
	}
	if a.opts.timeout <= 0 {
		return usagef("--timeout %s: want a positive duration", a.opts.timeout)
	}
	return nil
}
