package sdk_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/droverhq/drover/plugins/sdk"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

var centroidBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "drover-plugins-")
	if err != nil {
		panic(err)
	}
	if centroidBin, _, err = sdktest.BuildExample(dir); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func launch(t *testing.T) *sdk.Client {
	t.Helper()
	sum, err := sdk.FileSHA256(centroidBin)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sdk.Launch(context.Background(), sdk.LaunchConfig{Path: centroidBin, SHA256: sum})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestProtocolVersionMismatch builds the example plugin announcing
// protocol version 2 and sees Launch refuse it, naming both versions.
func TestProtocolVersionMismatch(t *testing.T) {
	bin, sum, err := sdktest.BuildExampleProtocol(t.TempDir(), sdk.ProtocolVersion+1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sdk.Launch(context.Background(), sdk.LaunchConfig{Path: bin, SHA256: sum})
	if err == nil {
		c.Close()
		t.Fatal("a plugin speaking another protocol version was launched")
	}
	t.Log(err)
	for _, want := range []string{"another runner protocol than this agent's (version 1)", "Plugin version: 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error %q does not say %q", err, want)
		}
	}
}

// train runs the example's training on a small CSV and returns the
// artifact's path.
func train(t *testing.T, c *sdk.Client) string {
	t.Helper()
	dir := t.TempDir()
	data := "x,y,class\n0,0,a\n1,0,a\n0,1,a\n10,10,b\n11,10,b\n10,11,b\n"
	if err := os.WriteFile(filepath.Join(dir, "data.csv"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	var events []string
	var result *runnerv1.TrainResult
	err := c.Train(context.Background(), &runnerv1.TrainRequest{DatasetPath: filepath.Join(dir, "data.csv"), OutputDir: dir, Target: "class"},
		func(ev *runnerv1.TrainResponse) error {
			switch e := ev.GetEvent().(type) {
			case *runnerv1.TrainResponse_Progress:
				events = append(events, e.Progress.GetStage())
			case *runnerv1.TrainResponse_LogLine:
				events = append(events, "log: "+e.LogLine)
			case *runnerv1.TrainResponse_Result:
				result = e.Result
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	// Every 5th row is held out: here the 5th, "11,10,b".
	want := map[string]float64{"accuracy": 1, "train_accuracy": 1, "train_rows": 5, "holdout_rows": 1}
	if strings.Join(events, ", ") != "read, log: 6 rows (5 trained on, 1 held out), 2 classes, written" ||
		!maps.Equal(result.GetMetrics(), want) || result.GetFormat() != "centroid-json" {
		t.Fatalf("events %q, result %v", events, result)
	}
	return result.GetArtifactPath()
}

func predict(c *sdk.Client, id string, xs, ys []float64) (*runnerv1.PredictResponse, error) {
	return c.Predict(context.Background(), &runnerv1.PredictRequest{Id: id, Rows: int64(len(xs)), Inputs: []*runnerv1.Tensor{
		{Name: "x", Datatype: "FP64", Shape: []int64{int64(len(xs))}, Numbers: xs},
		{Name: "y", Datatype: "FP64", Shape: []int64{int64(len(ys))}, Numbers: ys},
	}})
}

func TestExamplePluginTrainsAndServes(t *testing.T) {
	c := launch(t)
	d := c.Describe()
	if d.GetName() != "centroid" || !d.GetCanServe() || !d.GetCanTrain() || d.GetFormats()[0] != "centroid-json" {
		t.Fatalf("describe: %v", d)
	}
	path := train(t, c)
	lr, err := c.Load(context.Background(), &runnerv1.LoadRequest{Id: "m1", ArtifactPath: path, Format: "centroid-json"})
	if err != nil || lr.GetOutputs()[0].GetName() != "label" {
		t.Fatalf("load: %v %v", lr, err)
	}
	// A batch of rows in one round trip.
	resp, err := predict(c, "m1", []float64{0.5, 9, 2}, []float64{0.2, 12, 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(resp.GetOutputs()[0].GetStrings(), ","); got != "a,b,a" {
		t.Fatalf("labels %s", got)
	}
	if err := c.Unload(context.Background(), "m1"); err != nil {
		t.Fatal(err)
	}
	if _, err := predict(c, "m1", []float64{1}, []float64{1}); err == nil || !strings.Contains(err.Error(), "not loaded") {
		t.Fatalf("predict after unload: %v", err)
	}
	if _, err := c.Load(context.Background(), &runnerv1.LoadRequest{Id: "bad", ArtifactPath: path + ".missing"}); err == nil {
		t.Fatal("loading a missing artifact succeeded")
	}
}

func TestChecksumMismatchRefused(t *testing.T) {
	_, err := sdk.Launch(context.Background(), sdk.LaunchConfig{Path: centroidBin, SHA256: strings.Repeat("ab", 32)})
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a binary with the wrong checksum launched: %v", err)
	}
	if _, err := sdk.Launch(context.Background(), sdk.LaunchConfig{Path: centroidBin, SHA256: "nope"}); err == nil {
		t.Fatal("a malformed checksum was accepted")
	}
}

func TestPluginKilledMidRequest(t *testing.T) {
	c := launch(t)
	path := train(t, c)
	if _, err := c.Load(context.Background(), &runnerv1.LoadRequest{Id: "slow", ArtifactPath: path, Params: map[string]string{"predict_delay": "5s"}}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := predict(c, "slow", []float64{1}, []float64{1})
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(c.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("the request in flight ended with %v, want Unavailable", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("the request in flight did not end when the plugin died")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !c.Exited() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !c.Exited() {
		t.Fatal("the client did not notice the plugin exited")
	}
	// A fresh launch works.
	c2 := launch(t)
	if _, err := c2.Load(context.Background(), &runnerv1.LoadRequest{Id: "m", ArtifactPath: path}); err != nil {
		t.Fatal(err)
	}
}
