package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/droverhq/drover/plugins/sdk"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// buildTestPlugin builds the misbehaving test plugin.
func buildTestPlugin(t *testing.T) (path, sum string) {
	t.Helper()
	path, sum, err := sdktest.BuildTestPlugin(t.TempDir(), "testplugin")
	if err != nil {
		t.Fatal(err)
	}
	return path, sum
}

// syncBuffer is a bytes.Buffer safe for the plugin's log goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// records returns the JSON records logged so far.
func (b *syncBuffer) records() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(b.b.String()) {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// find returns the first record whose message contains s.
func (b *syncBuffer) find(s string) map[string]any {
	for _, r := range b.records() {
		if msg, _ := r["msg"].(string); strings.Contains(msg, s) {
			return r
		}
	}
	return nil
}

// TestPluginOutputReachesTheAgentLog checks every route a plugin author
// might log by — slog, the log package, standard error and output — ends
// in the agent's log at info or above (go-plugin logged most at debug, and
// dropped standard error once the plugin served).
func TestPluginOutputReachesTheAgentLog(t *testing.T) {
	path, sum := buildTestPlugin(t)
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := sdk.Launch(context.Background(), sdk.LaunchConfig{Path: path, SHA256: sum, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Load(context.Background(), &runnerv1.LoadRequest{Id: "m1"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"slog warning": "WARN", "log.Printf line m1": "INFO", "stderr line m1": "INFO", "stdout line m1": "INFO"}
	deadline := time.Now().Add(10 * time.Second)
	for what, level := range want {
		var r map[string]any
		for r = buf.find(what); r == nil && time.Now().Before(deadline); r = buf.find(what) {
			time.Sleep(20 * time.Millisecond)
		}
		if r == nil {
			t.Errorf("%q never reached the agent's log:\n%s", what, buf.b.String())
			continue
		}
		if r["level"] != level || r["plugin"] != path {
			t.Errorf("%q was logged as %v", what, r)
		}
	}
}

// TestPluginThatExitsSaysWhy launches a plugin that exits before serving:
// Launch's error carries what it wrote, not go-plugin's guess.
func TestPluginThatExitsSaysWhy(t *testing.T) {
	path, sum := buildTestPlugin(t)
	_, err := sdk.Launch(context.Background(), sdk.LaunchConfig{Path: path, SHA256: sum, Env: []string{"DROVER_TEST_PLUGIN_MODE=exit"}})
	if err == nil || !strings.Contains(err.Error(), "cannot open /dev/nvidia0") || !strings.Contains(err.Error(), "exited before it served") {
		t.Fatalf("Launch of a plugin that exits: %v", err)
	}
}

// TestPanicFailsTheRequestOnly panics in Predict: the request fails with
// Internal, the panic is logged with its stack, and the plugin serves on.
func TestPanicFailsTheRequestOnly(t *testing.T) {
	path, sum := buildTestPlugin(t)
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	c, err := sdk.Launch(context.Background(), sdk.LaunchConfig{Path: path, SHA256: sum, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Predict(context.Background(), &runnerv1.PredictRequest{Id: "panic"})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "panicked in Predict") {
		t.Fatalf("a panicking Predict: %v", err)
	}
	if _, err := c.Predict(context.Background(), &runnerv1.PredictRequest{Id: "fine"}); err != nil || c.Exited() {
		t.Fatalf("after the panic: %v (exited %v)", err, c.Exited())
	}
	deadline := time.Now().Add(5 * time.Second)
	var r map[string]any
	for r = buf.find("the runner panicked"); r == nil && time.Now().Before(deadline); r = buf.find("the runner panicked") {
		time.Sleep(20 * time.Millisecond)
	}
	if r == nil || r["level"] != "ERROR" || !strings.Contains(r["stack"].(string), "main.server.Predict") {
		t.Fatalf("the panic's record: %v", r)
	}
}

// TestLargeMessages sends a batch far past gRPC's default 4 MiB each way.
func TestLargeMessages(t *testing.T) {
	path, sum := buildTestPlugin(t)
	c, err := sdk.Launch(context.Background(), sdk.LaunchConfig{Path: path, SHA256: sum})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	xs := make([]float64, 2<<20) // 16 MiB
	resp, err := c.Predict(context.Background(), &runnerv1.PredictRequest{Id: "echo", Rows: int64(len(xs)),
		Inputs: []*runnerv1.Tensor{{Name: "x", Datatype: "FP64", Shape: []int64{int64(len(xs))}, Numbers: xs}}})
	if err != nil || len(resp.GetOutputs()) != 1 || len(resp.GetOutputs()[0].GetNumbers()) != len(xs) {
		t.Fatalf("a 16 MiB batch: %v", err)
	}
}
