package agent

import (
	"context"
	"fmt"
	"testing"

	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/internal/logging"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// TestRetuneCanaryWeight changes a loaded canary's weight in place, as a
// rollout's next step does (the same version, another weight): the share
// of requests it takes follows without a reload. It stayed at the weight
// it was loaded with.
func TestRetuneCanaryWeight(t *testing.T) {
	path, _ := trainChurn(t)
	rt := newServingRuntime(nil, logging.Discard(), ServingOptions{})
	ctx := context.Background()
	primary, canary := droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY
	if err := rt.Load(ctx, &droverv1.DesiredAssignment{Model: "churn", Version: 1, Role: primary, Format: NativeFormat}, path); err != nil {
		t.Fatal(err)
	}
	want := &droverv1.DesiredAssignment{Model: "churn", Version: 2, Role: canary, Weight: 10, Format: NativeFormat}
	if err := rt.Load(ctx, want, path); err != nil {
		t.Fatal(err)
	}
	share := func() int {
		route := (*rt.routes.Load())["churn"]
		n := 0
		for i := range 1000 {
			if route.pick(fmt.Sprint("req-", i)).version == 2 {
				n++
			}
		}
		return n / 10
	}
	if s := share(); s < 5 || s > 15 {
		t.Fatalf("the canary takes %d%% at weight 10", s)
	}
	var _ reconcile.Retuner = rt
	want.Weight = 100
	rt.Retune(reconcile.Key{Model: "churn", Role: canary}, want)
	if s := share(); s != 100 {
		t.Fatalf("the canary takes %d%% after its weight went to 100", s)
	}
}
