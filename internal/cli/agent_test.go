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

// TestAgentReload re-reads the config file as SIGHUP does: a label taken
// out of the file is gone, and flags given on the command line stay.
func TestAgentReload(t *testing.T) {
	var f agentFlags
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	f.register(fs)
	dir := t.TempDir()
	file := writeFile(t, dir, "agent.yaml", "label:\n  - site=lab\n  - rack=4\nname: gpu-7\nsample-rate: 0.5\n")
	if err := fs.Parse([]string{"--config", file, "--data-dir", dir}); err != nil {
		t.Fatal(err)
	}
	f.fromCLI = map[string]bool{}
	fs.Visit(func(fl *pflag.Flag) { f.fromCLI[fl.Name] = true })
	cfg, err := f.load(fs)
	if err != nil || len(cfg.Labels) != 2 || cfg.Name != "gpu-7" || cfg.SampleRate != 0.5 {
		t.Fatalf("loaded %v %q %v: %v", cfg.Labels, cfg.Name, cfg.SampleRate, err)
	}
	writeFile(t, dir, "agent.yaml", "name: gpu-7\n")
	if cfg, err = f.reload(fs); err != nil || len(cfg.Labels) != 0 || cfg.Name != "gpu-7" || cfg.SampleRate != 0.1 || cfg.DataDir != dir {
		t.Fatalf("reloaded: labels %v, name %q, sample rate %v, data dir %q: %v", cfg.Labels, cfg.Name, cfg.SampleRate, cfg.DataDir, err)
	}
}
