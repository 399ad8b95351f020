package agent

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/internal/logging"
)

// TestFeedback keeps sampled predictions by request id, joins labels sent
// to POST /v1/feedback to them, and counts accuracy, F1, log loss (and
// for a regression MAE and RMSE) in the answering version's window;
// labels for unknown, already-labelled or mismatched requests are counted
// and named, not lost.
func TestFeedback(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := newSampler(st, 1, 100, logging.Discard())
	s.classes = func(model, version string) []string {
		if model == "churn" {
			return []string{"no", "yes"}
		}
		return nil
	}
	classify := func(id string, labels []string, probs ...float64) {
		n := int64(len(labels))
		s.record(oip.Observation{Model: "churn", Version: "3", Status: 200, Rows: len(labels),
			Request: &oip.InferRequest{ID: id, Inputs: []*oip.Tensor{{Name: "x", Datatype: oip.FP64, Shape: []int64{n}, Numbers: make([]float64, n)}}},
			Response: &oip.InferResponse{Outputs: []*oip.Tensor{
				{Name: outputLabel, Datatype: oip.Bytes, Shape: []int64{n}, Strings: labels},
				{Name: outputProbabilities, Datatype: oip.FP64, Shape: []int64{n, 2}, Numbers: probs},
			}}})
	}
	classify("r1", []string{"yes", "no"}, 0.2, 0.8, 0.9, 0.1)
	classify("r2", []string{"yes"}, 0.4, 0.6)
	classify("r4", []string{"no"}, 0.7, 0.3)
	classify("", []string{"no"}, 0.7, 0.3) // no id: nothing to join labels to
	s.record(oip.Observation{Model: "eta", Version: "1", Status: 200, Rows: 2,
		Request:  &oip.InferRequest{ID: "e1", Inputs: []*oip.Tensor{{Name: "x", Datatype: oip.FP64, Shape: []int64{2}, Numbers: []float64{0, 0}}}},
		Response: &oip.InferResponse{Outputs: []*oip.Tensor{{Name: outputPrediction, Datatype: oip.FP64, Shape: []int64{2}, Numbers: []float64{10, 20}}}}})
	// Not flushed: labels that follow their answers at once are joined
	// all the same.

	a := &Agent{samples: s, store: st, windows: newMetricWindows(st, 10, 0, logging.Discard()), feedback: newFeedbackCounter(), logger: logging.Discard()}
	srv := httptest.NewServer(http.HandlerFunc(a.handleFeedback))
	defer srv.Close()
	send := func(body string) (int, FeedbackResponse) {
		t.Helper()
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out FeedbackResponse
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, out := send(`{"model": "churn", "items": [
	  {"id": "r1", "labels": ["yes", "yes"]}, {"id": "r2", "label": "no"},
	  {"id": "r3", "label": "no"}, {"id": "r4", "labels": ["no", "yes"]}, {"label": "no"}]}`)
	if code != 200 || out.Joined != 2 || len(out.Unknown) != 1 || out.Unknown[0] != "r3" || out.Invalid["r4"] == "" || out.Invalid["items[4]"] == "" {
		t.Fatalf("%d %+v", code, out)
	}
	// A second label for a request already labelled finds nothing.
	if _, out := send(`{"model": "churn", "items": [{"id": "r1", "labels": ["no", "no"]}]}`); out.Joined != 0 || len(out.Unknown) != 1 {
		t.Fatalf("a second label: %+v", out)
	}
	if code, _ := send(`{"items": []}`); code != 400 {
		t.Errorf("an empty request: %d", code)
	}
	if _, out := send(`{"model": "eta", "items": [{"id": "e1", "values": [12, 17]}]}`); out.Joined != 1 {
		t.Fatalf("regression feedback: %+v", out)
	}

	var churn, eta *Window
	for _, w := range a.windows.Current() {
		switch w.Model {
		case "churn":
			churn = w
		case "eta":
			eta = w
		}
	}
	if churn == nil || eta == nil {
		t.Fatal("no windows")
	}
	f := churn.Feedback
	// r1: yes/yes right, no/yes wrong (a false negative); r2: yes/no wrong
	// (a false positive).
	wantLL := (-math.Log(0.8) - math.Log(0.1) - math.Log(0.4)) / 3
	if f.Labeled != 3 || f.Correct != 1 || f.TP != 1 || f.FN != 1 || f.FP != 1 ||
		math.Abs(*f.Accuracy-1.0/3) > 1e-12 || math.Abs(*f.F1-0.5) > 1e-12 || math.Abs(*f.LogLoss-wantLL) > 1e-12 {
		t.Errorf("churn feedback: %+v", f)
	}
	if e := eta.Feedback; e.Labeled != 2 || math.Abs(*e.MAE-2.5) > 1e-12 || math.Abs(*e.RMSE-math.Sqrt((4+9)/2.0)) > 1e-12 {
		t.Errorf("eta feedback: %+v", e)
	}
	if p := churn.proto(); p.GetLabeledRows() != 3 || p.GetCorrectRows() != 1 || p.GetTruePositives() != 1 {
		t.Errorf("the window the hub gets: %v", p)
	}

	// The joined rows make a labelled data set: GET /v1/labelled.
	rec := httptest.NewRecorder()
	a.handleLabelled(rec, httptest.NewRequest("GET", "/v1/labelled?model=churn", nil))
	if want := "id,version,x,label\nr1,3,0,yes\nr1,3,0,yes\nr2,3,0,no\n"; rec.Code != 200 || rec.Body.String() != want {
		t.Errorf("labelled rows: %d\n%s\nwant\n%s", rec.Code, rec.Body, want)
	}
	rec = httptest.NewRecorder()
	a.handleLabelled(rec, httptest.NewRequest("GET", "/v1/labelled?model=eta", nil))
	if want := "id,version,x,value\ne1,1,0,12\ne1,1,0,17\n"; rec.Body.String() != want {
		t.Errorf("labelled values:\n%s\nwant\n%s", rec.Body, want)
	}
}

// TestFeedbackNotStored refuses a feedback request whose labelled rows
// cannot be stored (here, more than the agent keeps at once), whole: its
// predictions stay, so the labels sent again in smaller requests are
// joined, and counted once.
func TestFeedbackNotStored(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := newSampler(st, 1, 100, logging.Discard())
	for id, n := range map[string]int64{"r1": 2, "r2": 1} {
		s.record(oip.Observation{Model: "eta", Version: "1", Status: 200, Rows: int(n),
			Request:  &oip.InferRequest{ID: id, Inputs: []*oip.Tensor{{Name: "x", Datatype: oip.FP64, Shape: []int64{n}, Numbers: make([]float64, n)}}},
			Response: &oip.InferResponse{Outputs: []*oip.Tensor{{Name: outputPrediction, Datatype: oip.FP64, Shape: []int64{n}, Numbers: make([]float64, n)}}}})
	}
	a := &Agent{cfg: Config{SampleKeep: 2}, samples: s, store: st, windows: newMetricWindows(st, 10, 0, logging.Discard()), feedback: newFeedbackCounter(), logger: logging.Discard()}
	srv := httptest.NewServer(http.HandlerFunc(a.handleFeedback))
	defer srv.Close()
	send := func(body string) (int, FeedbackResponse) {
		t.Helper()
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out FeedbackResponse
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if code, out := send(`{"model": "eta", "items": [{"id": "r1", "values": [1, 2]}, {"id": "r2", "value": 3}]}`); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("three rows where two are kept: %d %+v", code, out)
	}
	for _, body := range []string{`{"model": "eta", "items": [{"id": "r1", "values": [1, 2]}]}`, `{"model": "eta", "items": [{"id": "r2", "value": 3}]}`} {
		if code, out := send(body); code != 200 || out.Joined != 1 {
			t.Fatalf("sent again: %d %+v", code, out)
		}
	}
	if w := a.windows.Current(); len(w) != 1 || w[0].Feedback.Labeled != 3 {
		t.Fatalf("windows %+v", w)
	}
	rec := httptest.NewRecorder()
	a.handleLabelled(rec, httptest.NewRequest("GET", "/v1/labelled?model=eta", nil))
	if want := "id,version,x,value\nr1,1,0,2\nr2,1,0,3\n"; rec.Body.String() != want {
		t.Errorf("labelled rows:\n%s\nwant\n%s", rec.Body, want)
	}
}
