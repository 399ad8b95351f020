package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/droverhq/drover/plugins/sdk/sdktest"
)

// TestPluginsList installs the example plugin in a plugin directory with
// its checksum, plus one tampered copy, and lists them with the CLI.
func TestPluginsList(t *testing.T) {
	dir := t.TempDir()
	bin, sum, err := sdktest.BuildExample(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(bin)
	_ = os.WriteFile(filepath.Join(dir, "evil"), append(b, 1), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sum+"  centroid\n"+sum+"  evil\n"), 0o644)

	out, err := exec.Command(droverBin, "plugins", "list", "--plugin-dir", dir, "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		Plugins []struct {
			File, Status, Name, Version string
			Formats                     []string
			CanServe                    bool `json:"can_serve"`
		}
	}
	if err := json.Unmarshal(out, &l); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(l.Plugins) != 2 {
		t.Fatalf("%s", out)
	}
	c, e := l.Plugins[0], l.Plugins[1]
	if c.Status != "verified" || c.Name != "centroid" || c.Version != "1.0.0" || !c.CanServe || c.Formats[0] != "centroid-json" {
		t.Errorf("centroid: %+v", c)
	}
	if e.Status != "mismatch" || e.Name != "" {
		t.Errorf("the tampered copy: %+v", e)
	}
}
