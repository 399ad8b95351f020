package hub

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/gates"
	"github.com/droverhq/drover/hub/state"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func f64(v float64) *float64 { return &v }

// TestDecideTrigger covers every automatic trigger: drift for N
// consecutive windows (and not N-1, nor N with a gap), accuracy below a
// threshold and down from the registered accuracy (only with enough
// labelled rows), and a cron schedule (due, not yet due, missed times
// firing once).
func TestDecideTrigger(t *testing.T) {
	created := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	policy := func(tr *droverv1.RetrainTriggers) *droverv1.RetrainPolicy {
		return &droverv1.RetrainPolicy{Name: "p", Model: "churn", Triggers: tr, CreateTime: timestamppb.New(created)}
	}
	drift3 := &droverv1.RetrainTriggers{Drift: &droverv1.DriftTrigger{ConsecutiveWindows: 3}}
	acc := &droverv1.RetrainTriggers{Accuracy: &droverv1.AccuracyTrigger{Below: f64(0.7), Drop: f64(0.05), MinRows: 100, Window: durationpb.New(5 * time.Minute)}}
	live := func(a float64, rows uint64) gates.Sample { return gates.Sample{Accuracy: &a, AccuracyRows: rows} }
	now := time.Date(2026, 11, 27, 3, 30, 0, 0, time.UTC)

	for _, c := range []struct {
		name    string
		p       *droverv1.RetrainPolicy
		in      triggerInputs
		now     time.Time
		want    string
		detail  string
		wantFor time.Time
	}{
		{name: "drift 3 of 3", p: policy(drift3), in: triggerInputs{champion: 1, drift: []string{"drift", "drift", "drift"}}, want: "drift", detail: "churn:1 was drift for 3 consecutive windows"},
		{name: "drift 3 of 5", p: policy(drift3), in: triggerInputs{champion: 1, drift: []string{"drift", "drift", "drift", "no_drift", "drift"}}, want: "drift"},
		{name: "drift 2 only", p: policy(drift3), in: triggerInputs{champion: 1, drift: []string{"drift", "drift"}}},
		{name: "drift with a gap", p: policy(drift3), in: triggerInputs{champion: 1, drift: []string{"drift", "no_drift", "drift"}}},
		{name: "drift newest insufficient", p: policy(drift3), in: triggerInputs{champion: 1, drift: []string{"insufficient_data", "drift", "drift", "drift"}}},
		{name: "drift default 3", p: policy(&droverv1.RetrainTriggers{Drift: &droverv1.DriftTrigger{}}), in: triggerInputs{champion: 1, drift: []string{"drift", "drift"}}},
		{name: "drift without champion", p: policy(drift3), in: triggerInputs{drift: []string{"drift", "drift", "drift"}}},

		{name: "accuracy below", p: policy(acc), in: triggerInputs{champion: 2, live: live(0.65, 150)}, want: "accuracy", detail: "0.65 on 150 labelled rows, below 0.7"},
		{name: "accuracy too few rows", p: policy(acc), in: triggerInputs{champion: 2, live: live(0.5, 99)}},
		{name: "accuracy dropped", p: policy(acc), in: triggerInputs{champion: 2, live: live(0.74, 500), registered: f64(0.8)}, want: "accuracy", detail: "down 0.06 from the 0.8"},
		{name: "accuracy dropped within", p: policy(acc), in: triggerInputs{champion: 2, live: live(0.76, 500), registered: f64(0.8)}},
		{name: "accuracy no labels", p: policy(acc), in: triggerInputs{champion: 2}},

		{name: "schedule due", p: policy(&droverv1.RetrainTriggers{Schedule: "0 3 * * *"}), want: "schedule", wantFor: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)},
		{name: "schedule not yet", p: func() *droverv1.RetrainPolicy {
			p := policy(&droverv1.RetrainTriggers{Schedule: "0 3 * * *"})
			p.Status = &droverv1.RetrainPolicyStatus{LastScheduleTime: timestamppb.New(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))}
			return p
		}()},
		{name: "schedule missed fires once for the newest", p: func() *droverv1.RetrainPolicy {
			p := policy(&droverv1.RetrainTriggers{Schedule: "@hourly"})
			p.Status = &droverv1.RetrainPolicyStatus{LastScheduleTime: timestamppb.New(time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC))}
			return p
		}(), want: "schedule", wantFor: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)},
		{name: "schedule after creation only", p: func() *droverv1.RetrainPolicy {
			p := policy(&droverv1.RetrainTriggers{Schedule: "0 3 * * *"})
			p.CreateTime = timestamppb.New(time.Date(2026, 11, 27, 3, 10, 0, 0, time.UTC))
			return p
		}()},
		{name: "none", p: policy(nil), in: triggerInputs{champion: 1, drift: []string{"drift", "drift", "drift"}, live: live(0.1, 1000)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			at := now
			if !c.now.IsZero() {
				at = c.now
			}
			got, detail, sched := decideTrigger(c.p, c.in, at)
			if got != c.want || !strings.Contains(detail, c.detail) || !sched.Equal(c.wantFor) {
				t.Fatalf("got %q (%s) for %v, want %q (…%s…) for %v", got, detail, sched, c.want, c.detail, c.wantFor)
			}
		})
	}
}

// TestChooseAgentCapacity: a GPU's free memory is its total less the
// most its last telemetry window saw used; an unhealthy GPU does not
// count; an agent without GPUs has none.
func TestChooseAgentCapacity(t *testing.T) {
	gib := uint64(1 << 30)
	n := &Node{telemetry: newTelemetryStore()}
	agent := func(id string, mem []uint64, health []string) *droverv1.Agent {
		a := &droverv1.Agent{Id: id, Name: id, Inventory: &droverv1.Inventory{Trainers: []string{"native"}}}
		for i, m := range mem {
			a.Inventory.Gpus = append(a.Inventory.Gpus, &droverv1.Gpu{Index: int32(i), MemoryBytes: m})
			if health != nil {
				a.GpuHealth = append(a.GpuHealth, &droverv1.GpuHealth{Index: int32(i), Health: health[i]})
			}
		}
		return a
	}
	n.telemetry.add("busy", 1, &droverv1.TelemetryWindow{Gpus: []*droverv1.GpuWindow{{Index: 0, MemoryUsedBytesMax: float64(75 * gib)}}})
	if c := n.gpuCapacity(agent("busy", []uint64{80 * gib}, nil)); c.healthy != 1 || c.maxFree != 5*gib {
		t.Fatalf("busy: %+v", c)
	}
	if c := n.gpuCapacity(agent("sick", []uint64{80 * gib, 40 * gib}, []string{"unhealthy", "healthy"})); c.healthy != 1 || c.maxFree != 40*gib || !c.anyGPUs {
		t.Fatalf("sick: %+v", c)
	}
	if c := n.gpuCapacity(agent("cpu", nil, nil)); c.anyGPUs || c.healthy != 0 {
		t.Fatalf("cpu: %+v", c)
	}
}

// TestChooseAgentSkipsDiskPressure: an agent whose store refuses writes
// could not keep the data set or the candidate, so a job goes elsewhere,
// or waits, naming why.
func TestChooseAgentSkipsDiskPressure(t *testing.T) {
	gib := uint64(1 << 30)
	st := state.New()
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for i, name := range []string{"full", "roomy"} {
		a := &droverv1.Agent{Id: name, Name: name, Inventory: &droverv1.Inventory{
			Trainers: []string{"native"}, Gpus: []*droverv1.Gpu{{Index: 0, MemoryBytes: 80 * gib}},
		}}
		if _, err := st.EnrollAgent(state.Change{Index: uint64(i + 1), Time: at}, a, nil); err != nil {
			t.Fatal(err)
		}
	}
	report := func(index uint64, agent string, low bool) {
		t.Helper()
		if _, err := st.ApplyAgentReports(state.Change{Index: index, Time: at}, agent, []*droverv1.Report{{Seq: index,
			Body: &droverv1.Report_StoreSpace{StoreSpace: &droverv1.StoreSpaceReport{Low: low}}}}); err != nil {
			t.Fatal(err)
		}
	}
	n := &Node{telemetry: newTelemetryStore()}
	job := &droverv1.RetrainJob{Spec: &droverv1.RetrainPolicy{Model: "churn", Runner: "native", Placement: &droverv1.Placement{Gpus: 1}}}

	report(3, "roomy", true)
	report(4, "full", true)
	if got, why := n.chooseAgent(st.Snapshot(), job); got != "" {
		t.Fatalf("both under disk pressure: chose %q (%s)", got, why)
	}
	report(5, "roomy", false)
	if got, why := n.chooseAgent(st.Snapshot(), job); got != "roomy" {
		t.Fatalf("chose %q (%s), want roomy, the one not under disk pressure", got, why)
	}
}

// TestAwaitChange: a server stream's wait ends on a state change or its
// interval with nil, and with the right error when the caller goes away
// or the node starts shutting down.
func TestAwaitChange(t *testing.T) {
	streams, stop := context.WithCancel(context.Background())
	n := &Node{streams: streams}
	ch := make(chan struct{})
	close(ch)
	if err := n.awaitChange(t.Context(), ch, time.Hour); err != nil {
		t.Fatalf("on a change: %v", err)
	}
	if err := n.awaitChange(t.Context(), nil, time.Millisecond); err != nil {
		t.Fatalf("after the interval: %v", err)
	}
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	if err := n.awaitChange(gone, nil, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller gone: %v", err)
	}
	stop()
	if err := n.awaitChange(t.Context(), nil, time.Hour); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("the node shutting down: %v, want unavailable", err)
	}
}
