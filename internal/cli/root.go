// Package cli is the drover command line: the hub and agent daemons, and
// the operator's commands over the hub's Connect API. Every command prints
// a human-readable answer, or with --json one JSON document on stdout.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/spf13/cobra"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/progress"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// app is the state shared by every command of one invocation.
type app struct {
	stdout, stderr io.Writer

	json    bool
	addrs   []string
	token   string
	stale   bool
	timeout time.Duration

	client *client.Client
}

// Main runs the drover command line with args (without the program name)
// and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	if !a.json && slices.Contains(args, "--json") {
		a.json = true // a mistake stopped the flags being parsed
	}
	a.printError(err)
	var usage usageError
	if errors.As(err, &usage) {
		return 2
	}
	// A command may choose its own status (drift compare --fail-on-drift).
	if ec, ok := errors.AsType[interface {
		error
		ExitCode() int
	}](err); ok {
		return ec.ExitCode()
	}
	return 1
}

// usageError marks a mistake in how a command was called.
type usageError struct{ error }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "drover",
		Short: "Machine-learning operations for fleets of GPU machines",
		Long: `drover runs the hub (a Raft cluster that owns the fleet's state), the agent
on every GPU machine, and the operator's commands over the hub's API.

The commands read the hub's addresses from --addr or DROVER_ADDR (comma-separated;
calls fail over between them) and the API token from --token or DROVER_TOKEN.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// Global flags may come from the environment (DROVER_ADDR, ...).
			if err := config.Apply(cmd.Root().PersistentFlags(), nil); err != nil {
				return usageError{err}
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringSliceVar(&a.addrs, "addr", nil, "hub addresses, host:port (env DROVER_ADDR; default "+client.DefaultAddr+")")
	pf.StringVar(&a.token, "token", "", "API token (env DROVER_TOKEN)")
	pf.BoolVar(&a.json, "json", false, "print the result as JSON")
	pf.BoolVar(&a.stale, "stale", false, "allow a stale read from whichever node answers (works without a leader)")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "how long an API call may take")

	root.AddCommand(
		a.versionCommand(),
		a.hubCommand(),
		a.agentCommand(),
		a.agentsCommand(),
		a.clusterCommand(),
		a.modelsCommand(),
		a.datasetsCommand(),
		a.tokensCommand(),
		a.auditCommand(),
		a.pluginsCommand(),
		a.driftCommand(),
		a.rolloutsCommand(),
		a.feedbackCommand(),
		a.trainCommand(),
		a.runsCommand(),
		a.retrainCommand(),
		a.demoCommand(),
	)
	usageEverywhere(root)
	return root
}

// usageEverywhere makes every mistake in calling a command a usage error
// (exit 2, and a JSON error with --json): cobra's checks of positional
// arguments, and a subcommand that does not exist, which cobra answers
// with the group's help and success.
func usageEverywhere(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.SuggestionsMinimumDistance = 2
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return usagef("%s (see %s --help)", msg, cmd.CommandPath())
		}
	}
	for _, sub := range c.Commands() {
		usageEverywhere(sub)
	}
}

// hub returns the API client, made on first use.
func (a *app) hub() (*client.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	c, err := client.New(client.Config{Addrs: a.addrs, Token: a.token})
	if err != nil {
		return nil, err
	}
	a.client = c
	return c, nil
}

// ctx returns a context for one API call.
func (a *app) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	if a.timeout <= 0 {
		return context.WithCancel(cmd.Context())
	}
	return context.WithTimeout(cmd.Context(), a.timeout)
}

// read returns the read options the global flags ask for.
func (a *app) read() *droverv1.ReadOptions {
	if a.stale {
		return &droverv1.ReadOptions{Consistency: droverv1.ReadConsistency_READ_CONSISTENCY_STALE}
	}
	return nil
}

// upload hashes and uploads a file, with progress bars on a terminal.
func (a *app) upload(cmd *cobra.Command, c *client.Client, file string) (*client.UploadResult, error) {
	hashBar := progress.New(a.stderr, "hashing  ")
	upBar := progress.New(a.stderr, "uploading")
	defer upBar.Done()
	up, err := c.UploadFile(cmd.Context(), file, hashBar.Update, func(done, total int64) {
		hashBar.Done()
		upBar.Update(done, total)
	})
	hashBar.Done()
	return up, err
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printJSONLine prints v as one line of JSON: what a command that follows
// something prints per change, so that a reader can take it line by line.
func (a *app) printJSONLine(v any) error {
	return json.NewEncoder(a.stdout).Encode(v)
}

// emit prints v as JSON with --json, and calls text otherwise.
func (a *app) emit(v any, text func(w io.Writer)) error {
	if a.json {
		return a.printJSON(v)
	}
	text(a.stdout)
	return nil
}

// printError reports a failed command: "error: <code>: <message>", or with
// --json {"error": {"code": ..., "message": ...}} on stderr.
func (a *app) printError(err error) {
	code, msg := "", err.Error()
	if errors.As(err, new(usageError)) {
		code = "usage"
	}
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		code, msg = ce.Code().String(), ce.Message()
		if msg == "" {
			msg = ce.Error()
		}
		if a.client != nil && ce.Code() == connect.CodeUnavailable && strings.Contains(msg, "connection refused") {
			// The hub's address is the likely mistake.
			addrs := a.addrs
			if len(addrs) == 0 {
				addrs = []string{client.DefaultAddr}
			}
			msg += fmt.Sprintf(" (no hub answers at %s: start one, or give its address with --addr or DROVER_ADDR)", strings.Join(addrs, ","))
		}
	}
	if a.json {
		enc := json.NewEncoder(a.stderr)
		_ = enc.Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
		return
	}
	if code != "" && code != "usage" {
		msg = code + ": " + msg
	}
	fmt.Fprintln(a.stderr, "error: "+msg)
}

// parseKV reads repeated k=v flags.
func parseKV(what string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("--%s %q: want key=value", what, p)
		}
		out[k] = v
	}
	return out, nil
}
