package config

import (
	"os"
	"path/filepath"
	"testing"

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
