package agent

import (
	"encoding/json"
	"testing"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/internal/logging"
)

func TestSamplerKeepsPredictions(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := newSampler(st, 1, 3, logging.Discard())
	req, err := oip.DecodeInferRequest([]byte(`{"id":"r","inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[2.5]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp := &oip.InferResponse{ModelName: "m", ModelVersion: "4", Outputs: []*oip.Tensor{{Name: "y", Datatype: oip.FP64, Shape: []int64{1}, Numbers: []float64{0.7}}}}
	for range 5 {
		s.record(oip.Observation{Model: "m", Version: "4", Status: 200, Request: req, Response: resp})
	}
	s.record(oip.Observation{Model: "m", Version: "4", Status: 400, Request: req}) // failures are not samples
	s.flush()
	j, _ := st.Journal("samples/m", 3)
	if stats := j.Stats(); stats.Len != 3 {
		t.Fatalf("journal %+v, want the last 3 of 5", stats)
	}
	var got []Sample
	_ = j.Scan(0, 0, func(_ uint64, rec []byte) error {
		var smp Sample
		if err := json.Unmarshal(rec, &smp); err != nil {
			t.Fatal(err)
		}
		got = append(got, smp)
		return nil
	})
	if len(got) != 3 || got[0].Version != "4" || got[0].ID != "r" || got[0].Inputs[0].Numbers[0] != 2.5 || got[0].Outputs[0].Numbers[0] != 0.7 {
		t.Fatalf("samples %+v", got)
	}

	// A rate of zero keeps nothing; a nil sampler is a no-op.
	none := newSampler(st, 0, 3, logging.Discard())
	none.record(oip.Observation{Model: "z", Status: 200, Request: req, Response: resp})
	none.flush()
	if j, _ := st.Journal("samples/z", 3); j.Stats().Len != 0 {
		t.Fatal("a zero rate kept a sample")
	}
	var nilSampler *sampler
	nilSampler.record(oip.Observation{Status: 200})
}
