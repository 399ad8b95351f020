package cli

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestAgentTrainerFlag checks --trainer NAME=COMMAND, from the command line
// and from the config file's "trainer" key.
func TestAgentTrainerFlag(t *testing.T) {
	load := func(args ...string) (map[string][]string, error) {
		var f agentFlags
		fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		cfg, err := f.load(fs)
		return cfg.Trainers, err
	}
	got, err := load("--trainer", "sklearn=/usr/bin/python3 /opt/train.py --fast", "--trainer", "torch=torchrun train.py")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !slices.Equal(got["sklearn"], []string{"/usr/bin/python3", "/opt/train.py", "--fast"}) ||
		!slices.Equal(got["torch"], []string{"torchrun", "train.py"}) {
		t.Fatalf("trainers = %q", got)
	}
	file := writeFile(t, t.TempDir(), "agent.yaml", "trainer:\n  - sklearn=python3 train.py\n")
	if got, err = load("--config", file); err != nil || !slices.Equal(got["sklearn"], []string{"python3", "train.py"}) {
		t.Fatalf("from the config file: %q, %v", got, err)
	}
	if got, err = load(); err != nil || got != nil {
		t.Fatalf("none: %q, %v", got, err)
	}
	for _, tc := range []struct{ arg, want string }{
		{"sklearn", `--trainer "sklearn": want key=value`},
		{"sklearn=", "--trainer sklearn: no command"},
		{"native=python3 train.py", "native is the built-in runner"},
	} {
		if _, err := load("--trainer", tc.arg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--trainer %q: %v, want %q", tc.arg, err, tc.want)
		}
	}
}
