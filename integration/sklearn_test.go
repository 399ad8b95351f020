package integration

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/churn"
	"github.com/droverhq/drover/plugins/exectrain"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// churnSchema is the bundled churn data set's feature schema.
func churnSchema() *droverv1.FeatureSchema {
	fs := &droverv1.FeatureSchema{}
	for _, f := range churn.Features() {
		in := &droverv1.Feature{Name: f.Name, Datatype: "FP64", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC}
		if f.Categorical {
			in.Datatype, in.Kind, in.Categories = "BYTES", droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, f.Categories
		}
		fs.Inputs = append(fs.Inputs, in)
	}
	return fs
}

// TestScikitLearnThroughTheAgent is the path a scikit-learn shop takes
// with no plugin to write: the exec trainer runs the example's train.py
// (a random forest) on the bundled churn data; the pickle is pushed to a
// hub process as a version of format sklearn-pickle; an agent process
// configured with serve.py as that format's process server loads it and
// answers the Open Inference Protocol, its answers matching the hold-out
// labels as often as the trainer said.
func TestScikitLearnThroughTheAgent(t *testing.T) {
	sdktest.RequireSklearn(t)
	examples, err := filepath.Abs(filepath.Join("..", "plugins", "examples", "sklearn"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dataset := filepath.Join(dir, "churn_train.csv")
	if err := os.WriteFile(dataset, churn.TrainCSV(), 0o644); err != nil {
		t.Fatal(err)
	}
	schema := churnSchema()
	tr := exectrain.New(exectrain.Config{Command: []string{sdktest.Python, filepath.Join(examples, "train.py")}, Timeout: 5 * time.Minute}, nil)
	var result *runnerv1.TrainResult
	err = tr.Train(t.Context(), &runnerv1.TrainRequest{DatasetPath: dataset, OutputDir: filepath.Join(dir, "out"), Target: churn.Target,
		Schema: schema, Params: map[string]string{"n_estimators": "50"}}, func(ev *runnerv1.TrainResponse) error {
		if r := ev.GetResult(); r != nil {
			result = r
		}
		return nil
	})
	if err != nil || result == nil {
		t.Fatalf("training: %v", err)
	}
	if acc := result.GetMetrics()["accuracy"]; acc < 0.75 {
		t.Fatalf("hold-out accuracy %.3f", acc)
	}

	c := startCluster(t, 1)
	schemaFile := filepath.Join(dir, "schema.json")
	b, _ := protojson.Marshal(schema)
	_ = os.WriteFile(schemaFile, b, 0o644)
	var v struct {
		Version uint64 `json:"version"`
	}
	c.cli(t, &v, "models", "push", "churn-rf", "--create", "--file", result.GetArtifactPath(), "--format", result.GetFormat(), "--schema", schemaFile)
	var tok struct {
		Token string `json:"token"`
	}
	c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "edge")
	serve := fmt.Sprintf("%s=%s %s --port={port} --artifact={artifact} --name={name}", result.GetFormat(), sdktest.Python, filepath.Join(examples, "serve.py"))
	a := newAgent(t, t.TempDir(), "edge-1", "--hub", c.hubs[0].httpAddr, "--join-token", tok.Token,
		"--heartbeat-interval", "300ms", "--plugin-dir", "", "--process-server", serve)
	a.start()
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if l := c.agents(t); len(l.Agents) != 1 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	c.cli(t, nil, "agents", "assign", "edge-1", fmt.Sprintf("churn-rf:%d", v.Version))
	c.waitRunning(t, "edge-1", "churn-rf", v.Version, 60*time.Second)

	// The bundled test split, 1,000 rows in one request.
	rows, err := csv.NewReader(bytes.NewReader(churn.TestCSV())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header, rows := rows[0], rows[1:]
	var inputs []string
	for _, f := range schema.GetInputs() {
		col := -1
		for i, h := range header {
			if h == f.GetName() {
				col = i
			}
		}
		var data []string
		for _, r := range rows {
			if f.GetDatatype() == "BYTES" {
				data = append(data, strconv.Quote(r[col]))
			} else {
				data = append(data, r[col])
			}
		}
		inputs = append(inputs, fmt.Sprintf(`{"name":%q,"datatype":%q,"shape":[%d],"data":[%s]}`, f.GetName(), f.GetDatatype(), len(rows), strings.Join(data, ",")))
	}
	resp, err := http.Post("http://"+a.serveAddr+"/v2/models/churn-rf/infer", "application/json",
		strings.NewReader(`{"id":"batch-1","inputs":[`+strings.Join(inputs, ",")+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var out struct {
		ID      string `json:"id"`
		Version string `json:"model_version"`
		Outputs []struct {
			Name  string `json:"name"`
			Shape []int  `json:"shape"`
			Data  []any  `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if out.ID != "batch-1" || out.Version != fmt.Sprint(v.Version) || len(out.Outputs) == 0 || out.Outputs[0].Name != "label" || len(out.Outputs[0].Data) != len(rows) {
		t.Fatalf("answer: %s", body)
	}
	right := 0
	target := len(header) - 1
	for i, r := range rows {
		if out.Outputs[0].Data[i] == r[target] {
			right++
		}
	}
	if acc := float64(right) / float64(len(rows)); acc < 0.78 {
		t.Errorf("the served forest got %.3f of the test rows right", acc)
	} else {
		t.Logf("the served forest got %d of %d test rows right (hold-out accuracy %.3f)", right, len(rows), result.GetMetrics()["accuracy"])
	}
	// A request the server refuses is the caller's fault: 400, not 500.
	resp, err = http.Post("http://"+a.serveAddr+"/v2/models/churn-rf/infer", "application/json",
		strings.NewReader(`{"inputs":[{"name":"tenure_months","datatype":"FP64","shape":[1],"data":[1]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("a request missing features: %d, want 400", resp.StatusCode)
	}
}
