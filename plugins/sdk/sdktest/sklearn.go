package sdktest

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

// Python is Debian's interpreter, which python3-sklearn installs into; a
// python3 earlier on PATH (pyenv, a virtualenv) may lack scikit-learn.
const Python = "/usr/bin/python3"

// RequireSklearn skips the test when Python cannot import scikit-learn and
// numpy, unless DROVER_REQUIRE_SKLEARN=1 (CI sets it, having installed
// python3-sklearn), where it fails instead: in CI those tests must run.
func RequireSklearn(t testing.TB) {
	t.Helper()
	out, err := exec.Command(Python, "-c", "import numpy, sklearn").CombinedOutput()
	if err == nil {
		return
	}
	msg := Python + " cannot import scikit-learn (apt-get install python3-sklearn): " + string(bytes.TrimSpace(out))
	if os.Getenv("DROVER_REQUIRE_SKLEARN") == "1" {
		t.Fatalf("%s; DROVER_REQUIRE_SKLEARN=1 requires it", msg)
	}
	t.Skip(msg)
}
