package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/agent/plugins"
	"github.com/droverhq/drover/internal/logging"
)

// DefaultPluginDir is where runner plugins are installed.
const DefaultPluginDir = "/usr/lib/drover/plugins"

func (a *app) pluginsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plugins",
		Short: "Runner plugins on this machine",
	}
	cmd.AddCommand(a.pluginsList())
	return cmd
}

func (a *app) pluginsList() *cobra.Command {
	dir := os.Getenv("DROVER_PLUGIN_DIR")
	if dir == "" {
		dir = DefaultPluginDir
	}
	var noLaunch bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the runner plugins in the plugin directory, verified against its SHA256SUMS",
		Long: `List the runner plugins in the plugin directory. Each executable is checked
against the directory's SHA256SUMS file (sha256sum's format); each verified
one is started to ask what it is (name, version, formats, whether it trains
and serves), then stopped. Unlisted or mismatching binaries are never run.

Exits 1 when any plugin would not run (unlisted, mismatching, missing, a bad
line in SHA256SUMS, or one that failed to start): an install check.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(dir); err != nil {
				return usagef("plugin directory: %v", err)
			}
			ps, err := plugins.Scan(dir)
			if err != nil {
				return err
			}
			if !noLaunch {
				plugins.Describe(cmd.Context(), ps, logging.Discard())
			}
			if ps == nil {
				ps = []plugins.Plugin{}
			}
			bad := 0
			for _, p := range ps {
				if !p.OK() {
					bad++
				}
			}
			err = a.emit(map[string]any{"plugin_dir": dir, "plugins": ps}, func(w io.Writer) {
				if len(ps) == 0 {
					fmt.Fprintf(w, "no plugins in %s\n", dir)
					return
				}
				t := newTable(w)
				fmt.Fprintln(t, "FILE\tSTATUS\tNAME\tVERSION\tFORMATS\tTRAINS\tSERVES")
				var notes []string
				for _, p := range ps {
					status := string(p.Status)
					switch {
					case p.LaunchErr != "":
						status = "failed to start"
						notes = append(notes, fmt.Sprintf("%s failed to start: %s", p.File, p.LaunchErr))
					case p.Status == plugins.Mismatch:
						notes = append(notes, fmt.Sprintf("%s: the file's digest is %s; %s lists %s", p.File, p.Actual, plugins.SumsFile, p.SHA256))
					case p.Status == plugins.Invalid:
						notes = append(notes, fmt.Sprintf("%s %s", p.File, p.Problem))
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%v\t%v\n", p.File, status, dash(p.Name), dash(p.Version),
						dash(strings.Join(p.Formats, ",")), p.CanTrain, p.CanServe)
				}
				t.Flush()
				for _, n := range notes {
					fmt.Fprintln(w, "\n"+n)
				}
			})
			if err == nil && bad > 0 {
				err = fmt.Errorf("%d of %d plugins would not run", bad, len(ps))
			}
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "plugin-dir", dir, "the plugin directory (env DROVER_PLUGIN_DIR)")
	cmd.Flags().BoolVar(&noLaunch, "no-launch", false, "only verify checksums; do not start the plugins")
	return cmd
}
