package plugins

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
)

func TestScanAndDescribe(t *testing.T) {
	dir := t.TempDir()
	bin, sum, err := sdktest.BuildExample(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A copy that was tampered with after it was listed, one never listed,
	// and one listed but gone.
	tampered, _ := os.ReadFile(bin)
	_ = os.WriteFile(filepath.Join(dir, "tampered"), append(tampered, 0), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "stray"), []byte("#!/bin/sh\n"), 0o755)
	sums := fmt.Sprintf("%s  centroid\n%s *tampered\n%s  gone\n", sum, sum, strings.Repeat("0", 64))
	if err := os.WriteFile(filepath.Join(dir, SumsFile), []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
	ps, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.File+":"+string(p.Status))
	}
	if strings.Join(got, " ") != "centroid:verified gone:missing stray:unlisted tampered:mismatch" {
		t.Fatalf("scan: %v", got)
	}
	Describe(context.Background(), ps, logging.Discard())
	if ps[0].Name != "centroid" || !ps[0].CanServe || ps[0].Formats[0] != "centroid-json" || ps[0].LaunchErr != "" {
		t.Fatalf("described %+v", ps[0])
	}
	if ps[3].Name != "" || ps[3].Actual == "" || ps[3].Actual == ps[3].SHA256 {
		t.Fatalf("a tampered plugin: %+v", ps[3])
	}

	// Bad lines are reported, and do not stop the good ones.
	bad := fmt.Sprintf("garbage\n%s  centroid\n%s  /opt/plugins/stray\n", sum, sum)
	if err := os.WriteFile(filepath.Join(dir, SumsFile), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	ps, err = Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	for _, p := range ps {
		if p.Status == Invalid {
			problems = append(problems, p.Problem)
		}
	}
	if ps[0].File != "SHA256SUMS" || len(problems) != 2 || !strings.Contains(problems[0], "line 1") || !strings.Contains(problems[1], "names a path") {
		t.Fatalf("a SHA256SUMS with bad lines: %+v", ps)
	}
	if i := slices.IndexFunc(ps, func(p Plugin) bool { return p.File == "centroid" }); i < 0 || ps[i].Status != Verified {
		t.Fatalf("the good line's plugin: %+v", ps)
	}
	if ps, err := Scan(filepath.Join(dir, "nope")); err != nil || len(ps) != 0 {
		t.Fatalf("a missing directory: %v %v", ps, err)
	}
}
