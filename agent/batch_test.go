package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/agent/oip"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// TestBatcherBlamesTheBadRequest batches a request the runner refuses
// (InvalidArgument, a RequestError here) with good ones: only the bad one
// fails, with the runner's 400, and the others are answered.
func TestBatcherBlamesTheBadRequest(t *testing.T) {
	release := make(chan struct{})
	send := func(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
		<-release
		in := req.GetInputs()[0]
		for _, x := range in.GetNumbers() {
			if x < 0 {
				return nil, &oip.RequestError{Msg: "x must not be negative"}
			}
		}
		return &runnerv1.PredictResponse{Outputs: []*runnerv1.Tensor{{Name: "y", Datatype: "FP64", Shape: in.GetShape(), Numbers: in.GetNumbers()}}}, nil
	}
	b := newBatcher("t", send, ServingOptions{BatchMaxRows: 8, BatchInFlight: 1})
	defer b.close()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, x := range []float64{1, 2, -3, 4} {
		// The first holds the runner; the other three queue into one batch.
		wg.Go(func() {
			in := []*runnerv1.Tensor{{Name: "x", Datatype: "FP64", Shape: []int64{1}, Numbers: []float64{x}}}
			_, errs[i] = b.predict(context.Background(), in, 1)
		})
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		var re *oip.RequestError
		switch {
		case i == 2 && (!errors.As(err, &re) || !strings.Contains(err.Error(), "negative")):
			t.Errorf("the bad request got %v, want the runner's refusal", err)
		case i != 2 && err != nil:
			t.Errorf("request %d, batched with a bad one, failed: %v", i, err)
		}
	}
}

// TestBatcherChecksRows refuses a runner's answer with the wrong number of
// rows, for a request alone as in a batch.
func TestBatcherChecksRows(t *testing.T) {
	send := func(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
		return &runnerv1.PredictResponse{Outputs: []*runnerv1.Tensor{{Name: "y", Datatype: "FP64", Shape: []int64{1}, Numbers: []float64{42}}}}, nil
	}
	b := newBatcher("t", send, ServingOptions{BatchMaxRows: 8, BatchInFlight: 1})
	defer b.close()
	in := []*runnerv1.Tensor{{Name: "x", Datatype: "FP64", Shape: []int64{2}, Numbers: []float64{1, 2}}}
	if _, err := b.predict(context.Background(), in, 2); err == nil || !strings.Contains(err.Error(), "for 2 rows") {
		t.Fatalf("an answer of 1 row for 2: %v", err)
	}
}
