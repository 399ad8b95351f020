package config

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestPrecedence(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	dataDir := fs.String("data-dir", "/default", "")
	httpAddr := fs.String("http-addr", ":1", "")
	raftAddr := fs.String("raft-addr", ":2", "")
	join := fs.StringSlice("join", nil, "")
	boot := fs.Bool("bootstrap", false, "")
	if err := fs.Parse([]string{"--data-dir", "/flag"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DROVER_DATA_DIR", "/env-loses-to-flag")
	t.Setenv("DROVER_HTTP_ADDR", ":8420")
	path := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(path, []byte("http_addr: ':9999'\nraft-addr: ':8421'\njoin: [a:1, b:2]\nbootstrap: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, file); err != nil {
		t.Fatal(err)
	}
	if *dataDir != "/flag" || *httpAddr != ":8420" || *raftAddr != ":8421" || !*boot {
		t.Fatalf("data-dir %q http-addr %q raft-addr %q bootstrap %v", *dataDir, *httpAddr, *raftAddr, *boot)
	}
	if len(*join) != 2 || (*join)[1] != "b:2" {
		t.Fatalf("join = %v", *join)
	}
}

func TestUnknownFileKey(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("data-dir", "", "")
	if err := Apply(fs, map[string]any{"data-dri": "/x"}); err == nil {
		t.Fatal("a misspelt key was accepted")
	}
}

func TestEnvList(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	join := fs.StringSlice("join", []string{"default"}, "")
	t.Setenv("DROVER_JOIN", "a:1,b:2")
	if err := Apply(fs, nil); err != nil {
		t.Fatal(err)
	}
	if len(*join) != 2 || (*join)[0] != "a:1" {
		t.Fatalf("join = %v", *join)
	}
}

// TestReset re-reads a file from which settings were taken out: they go
// back to their defaults, while the command line's stay.
func TestReset(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	dataDir := fs.String("data-dir", "/default", "")
	name := fs.String("name", "", "")
	labels := fs.StringArray("label", nil, "")
	hubs := fs.StringSlice("hub", []string{"a:1", "b:2"}, "")
	every := fs.Duration("heartbeat-interval", 5*time.Second, "")
	if err := fs.Parse([]string{"--data-dir", "/flag"}); err != nil {
		t.Fatal(err)
	}
	fromCLI := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { fromCLI[f.Name] = true })
	file := map[string]any{"data-dir": "/file", "name": "gpu-1", "label": []any{"site=lab", "rack=4"}, "hub": []any{"c:3"}, "heartbeat-interval": "1s"}
	if err := Apply(fs, file); err != nil {
		t.Fatal(err)
	}
	if *dataDir != "/flag" || *name != "gpu-1" || len(*labels) != 2 || fmt.Sprint(*hubs) != "[c:3]" || *every != time.Second {
		t.Fatalf("applied: %q %q %q %q %v", *dataDir, *name, *labels, *hubs, *every)
	}
	if err := Reset(fs, func(f *pflag.Flag) bool { return fromCLI[f.Name] }); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, map[string]any{"label": []any{"site=lab"}}); err != nil {
		t.Fatal(err)
	}
	if *dataDir != "/flag" || *name != "" || fmt.Sprint(*labels) != "[site=lab]" || fmt.Sprint(*hubs) != "[a:1 b:2]" || *every != 5*time.Second {
		t.Fatalf("reloaded: %q %q %q %q %v", *dataDir, *name, *labels, *hubs, *every)
	}
	if err := Reset(fs, func(f *pflag.Flag) bool { return fromCLI[f.Name] }); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, nil); err != nil || len(*labels) != 0 {
		t.Fatalf("labels taken out of the file: %q, %v", *labels, err)
	}
}
