// Package sdktest builds Drover's example runner plugin for tests that
// need a real plugin process.
package sdktest

import (
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/droverhq/drover/plugins/sdk"
)

// ExamplePackage is the example plugin's import path.
const ExamplePackage = "github.com/droverhq/drover/plugins/examples/centroid"

// BuildExample builds the example plugin into dir as "centroid" and
// returns the binary's path and hex SHA-256. It runs the go command, so it
// works from any package of the module.
func BuildExample(dir string) (path, sha256 string, err error) {
	path = filepath.Join(dir, "centroid")
	if out, err := exec.Command("go", "build", "-o", path, ExamplePackage).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building the example plugin: %v\n%s", err, out)
	}
	sha256, err = sdk.FileSHA256(path)
	return path, sha256, err
}
