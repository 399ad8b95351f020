package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// writeSums writes a plugin directory's SHA256SUMS.
func writeSums(t *testing.T, dir string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// settleHost runs the host's supervision once its plugins' back-off has
// passed: what supervise does every few seconds.
func settleHost(h *pluginHost) {
	time.Sleep(pluginBackoffMin + 100*time.Millisecond)
	for _, hp := range h.all {
		hp.check(context.Background())
		h.register(hp)
	}
}

// TestPluginThatFailsItsFirstStart starts a plugin that exits at once:
// the agent starts without it, and serves its format once it starts — a
// version loaded meanwhile (answering 503) included.
func TestPluginThatFailsItsFirstStart(t *testing.T) {
	dir := t.TempDir()
	_, sum, err := sdktest.BuildTestPlugin(dir, "flaky")
	if err != nil {
		t.Fatal(err)
	}
	writeSums(t, dir, sum+"  flaky")
	t.Setenv("DROVER_TEST_PLUGIN_MODE", "exit")
	h, err := newPluginHost(context.Background(), dir, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	if h.forFormat("test") != nil {
		t.Fatal("a plugin that did not start serves its format")
	}
	if hl := h.all[0].health(""); hl.ok || !strings.Contains(hl.why, "cannot open /dev/nvidia0") {
		t.Fatalf("health of a plugin that did not start: %+v", hl)
	}
	rt := newServingRuntime(h, logging.Discard(), ServingOptions{})
	art := filepath.Join(t.TempDir(), "model")
	_ = os.WriteFile(art, []byte("weights"), 0o644)
	k := reconcile.Key{Model: "m", Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}
	if err := rt.Load(context.Background(), &droverv1.DesiredAssignment{Model: "m", Version: 1, Role: k.Role, Format: "test"}, art); err != nil {
		t.Fatal(err)
	}
	if hl := rt.health(k, 1); hl.ok {
		t.Fatal("a version no runner serves is healthy")
	}
	os.Unsetenv("DROVER_TEST_PLUGIN_MODE") // the cause is gone
	settleHost(h)
	if h.forFormat("test") == nil {
		t.Fatal("the plugin started on a later try but does not serve its format")
	}
	if hl := rt.health(k, 1); !hl.ok {
		t.Fatalf("the version loaded while its runner was down, once it is up: %+v", hl)
	}
}

// TestPluginUpgradedInPlace replaces a running plugin's binary and its
// SHA256SUMS line, and kills the old process: the new one starts (the
// digest read at start-up pinned the old binary for good). A binary
// replaced without its line is refused, naming both digests.
func TestPluginUpgradedInPlace(t *testing.T) {
	dir := t.TempDir()
	_, sum, err := sdktest.BuildExample(dir)
	if err != nil {
		t.Fatal(err)
	}
	writeSums(t, dir, sum+"  centroid")
	h, err := newPluginHost(context.Background(), dir, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	hp := h.forFormat("centroid-json")
	if hp == nil {
		t.Fatal("the example plugin did not start")
	}
	kill := func() {
		hp.mu.Lock()
		pid := hp.client.Pid()
		hp.mu.Unlock()
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for deadline := time.Now().Add(5 * time.Second); hp.alive() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The new build: the test plugin under the old name.
	_, newSum, err := sdktest.BuildTestPlugin(dir, "centroid")
	if err != nil {
		t.Fatal(err)
	}
	kill()
	settleHost(h)
	if hl := hp.health(""); hl.ok || !strings.Contains(hl.why, newSum) || !strings.Contains(hl.why, sum) {
		t.Fatalf("a binary replaced without its line: %+v", hl)
	}
	writeSums(t, dir, newSum+"  centroid")
	settleHost(h)
	if hl := hp.health(""); !hl.ok {
		t.Fatalf("after its line was updated: %+v", hl)
	}
	hp.mu.Lock()
	runner := hp.client.Describe().GetName()
	hp.mu.Unlock()
	if runner != "testplugin" {
		t.Fatalf("the plugin running is %q, want the new build", runner)
	}
}

// TestPluginDirectoryProblems: a relative plugin directory, and a bad
// SHA256SUMS line, which is reported without stopping the plugins the
// other lines list.
func TestPluginDirectoryProblems(t *testing.T) {
	dir := t.TempDir()
	_, sum, err := sdktest.BuildExample(dir)
	if err != nil {
		t.Fatal(err)
	}
	writeSums(t, dir, sum+"  centroid", sum+"  /abs/path/centroid", "not a line")
	t.Chdir(dir)
	h, err := newPluginHost(context.Background(), ".", logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	if h.forFormat("centroid-json") == nil {
		t.Fatal(`the plugin in "." did not start`)
	}
}

// TestPluginStuckInPredict: a batch the runner sits on for the whole batch
// timeout makes the plugin unhealthy (its ping, answered by the SDK, looks
// fine) and the request a 503; a batch answered makes it healthy again. A
// caller's own shorter deadline is not held against the runner.
func TestPluginStuckInPredict(t *testing.T) {
	dir := t.TempDir()
	_, sum, err := sdktest.BuildTestPlugin(dir, "testplugin")
	if err != nil {
		t.Fatal(err)
	}
	writeSums(t, dir, sum+"  testplugin")
	h, err := newPluginHost(context.Background(), dir, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	hp := h.forFormat("test")
	hp.stuckAfter = 300 * time.Millisecond
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := hp.predict(short, &runnerv1.PredictRequest{Id: "hang"}); !errors.Is(err, context.DeadlineExceeded) || !hp.health("").ok {
		t.Fatalf("a caller's deadline: %v, health %+v", err, hp.health(""))
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), hp.stuckAfter)
	defer cancel2()
	_, err = hp.predict(ctx, &runnerv1.PredictRequest{Id: "hang"})
	if !errors.Is(err, oip.ErrModelNotReady) {
		t.Fatalf("a batch the runner sat on: %v", err)
	}
	if hl := hp.health(""); hl.ok || !strings.Contains(hl.why, "did not answer a batch") {
		t.Fatalf("health after a stuck batch: %+v", hl)
	}
	if _, err := hp.predict(context.Background(), &runnerv1.PredictRequest{Id: "echo"}); err != nil || !hp.health("").ok {
		t.Fatalf("after a batch answered: %v, %+v", err, hp.health(""))
	}
}
