// Command drover is the one binary of Drover: the hub, the agent, and the
// operator's command line. Run "drover --help" for the commands.
package main

import (
	"os"

	"github.com/droverhq/drover/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
