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
			return config.Apply(cmd.Root().PersistentFlags(), nil)
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
	return root
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
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		code, msg = ce.Code().String(), ce.Message()
		if msg == "" {
			msg = ce.Error()
		}
	}
	if a.json {
		enc := json.NewEncoder(a.stderr)
		_ = enc.Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
		return
	}
	if code != "" {
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
