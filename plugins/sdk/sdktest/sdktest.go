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
	return build(filepath.Join(dir, "centroid"))
}

// BuildExampleProtocol builds the example plugin into dir as
// "centroid-v<version>", announcing another protocol version than the
// SDK's: a plugin the agent must refuse.
func BuildExampleProtocol(dir string, version int) (path, sha256 string, err error) {
	return build(filepath.Join(dir, fmt.Sprintf("centroid-v%d", version)),
		"-ldflags", fmt.Sprintf("-X github.com/droverhq/drover/plugins/sdk.servedProtocol=%d", version))
}

// TestPluginPackage is the import path of a plugin that misbehaves on
// request, for tests of what the agent makes of it: its environment's
// DROVER_TEST_PLUGIN_MODE=exit makes it exit before serving, saying why;
// otherwise it serves the format "test", logs by every route when it
// loads, panics predicting with a model loaded as "panic", echoes its
// inputs with one loaded as "echo" and never answers with one loaded as
// "hang".
const TestPluginPackage = "github.com/droverhq/drover/plugins/sdk/internal/testplugin"

// BuildTestPlugin builds the misbehaving test plugin into dir as name and
// returns the binary's path and hex SHA-256.
func BuildTestPlugin(dir, name string) (path, sha256 string, err error) {
	return buildPackage(filepath.Join(dir, name), TestPluginPackage)
}

func build(path string, flags ...string) (string, string, error) {
	return buildPackage(path, ExamplePackage, flags...)
}

func buildPackage(path, pkg string, flags ...string) (string, string, error) {
	args := append(append([]string{"build", "-o", path}, flags...), pkg)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building %s: %v\n%s", pkg, err, out)
	}
	sha256, err := sdk.FileSHA256(path)
	return path, sha256, err
}
