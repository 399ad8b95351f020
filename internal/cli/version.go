package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/buildinfo"
)

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print drover's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			info := buildinfo.Get()
			return a.emit(info, func(w io.Writer) {
				fmt.Fprintf(w, "drover %s", info.Version)
				if info.Revision != "" {
					rev := info.Revision
					if len(rev) > 12 {
						rev = rev[:12]
					}
					if info.Modified {
						rev += "+dirty"
					}
					fmt.Fprintf(w, " (%s)", rev)
				}
				fmt.Fprintf(w, " %s %s\n", info.GoVersion, info.Platform)
			})
		},
	}
}
