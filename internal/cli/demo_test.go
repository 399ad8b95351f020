package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/demo"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// TestDemoConsole draws a few of the demo's events where the output is
// not a terminal: stages and what happened as lines, no status line, the
// drifted feature's histogram without the bins empty on both sides.
func TestDemoConsole(t *testing.T) {
	var b bytes.Buffer
	c := newDemoConsole(&b)
	at := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	drift := &droverv1.GetDriftResponse{
		Model: "churn", Version: 1,
		Features: []*droverv1.FeatureDrift{{Name: "contract", Type: "categorical", Method: "chi2", Score: 1e-6, Threshold: 0.05, Drifted: true,
			Verdict: "drift", CurrentRows: 300, ReferenceRows: 150}},
		Reference: &droverv1.ReferenceProfile{Features: []*droverv1.FeatureProfile{{Name: "contract",
			Categorical: &droverv1.CategoricalCounts{Counts: map[string]uint64{"month-to-month": 75, "one-year": 45, "two-year": 30}}}}},
		Current: &droverv1.DriftWindow{Features: []*droverv1.FeatureProfile{{Name: "contract",
			Categorical: &droverv1.CategoricalCounts{Counts: map[string]uint64{"month-to-month": 240, "one-year": 40, "two-year": 20}}}}},
	}
	for _, e := range []demo.Event{
		{Kind: demo.StageStart, Elapsed: at(5.4), Stage: 5, Stages: 8, Title: "Injecting drift: the customers change"},
		{Kind: demo.Status, Elapsed: at(6), Stage: 5, Text: "waiting"},
		{Kind: demo.DriftView, Elapsed: at(7.5), Stage: 5, Text: "the fleet's drift verdict on churn:1: DRIFT", Drift: drift, Feature: "contract"},
		{Kind: demo.StageEnd, Elapsed: at(7.5), Stage: 5, Took: at(2.1)},
		{Kind: demo.Judged, Elapsed: at(18.9), Stage: 8, Judgement: &droverv1.Judgement{Result: "fail"}, Text: "gate accuracy, step 1: fail — accuracy 0.23 < min 0.6"},
		{Kind: demo.Note, Elapsed: at(21), Text: "removed /tmp/drover-demo-1"},
	} {
		c.event(e)
	}
	out := b.String()
	for _, want := range []string{
		"[  5.4s] ━━ 5/8 Injecting drift: the customers change\n",
		"[  7.5s]    the fleet's drift verdict on churn:1: DRIFT\n",
		"the most drifted feature, contract (chi2 p-value 1e-06, threshold 0.05; 300 rows against 150 in the reference):",
		"month-to-month ref  50.0%",
		"cur  80.0%",
		"[  7.5s]    ✓ done in 2.1s\n",
		"[ 18.9s]      ✗ gate accuracy, step 1: fail — accuracy 0.23 < min 0.6\n",
		"[ 21.0s] removed /tmp/drover-demo-1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	for _, not := range []string{"waiting", "(other)", "(unseen)", "\r"} {
		if strings.Contains(out, not) {
			t.Errorf("%q drawn where it should not be:\n%s", not, out)
		}
	}
}

func TestPrintDemoSummary(t *testing.T) {
	acc := func(v float64) *float64 { return &v }
	s := demo.Summary{OK: true, DurationSeconds: 20,
		Versions: []demo.VersionSummary{
			{Version: 1, State: "ready", Origin: "first", HoldoutAccuracy: acc(0.8), LiveAccuracy: acc(0.74), LiveRows: 5320, LiveAccuracyDrifted: acc(0.488), LiveRowsDrifted: 10360},
			{Version: 3, State: "rejected", Origin: "flipped", LiveAccuracyDrifted: acc(0.225), LiveRowsDrifted: 800},
		},
		Job: &demo.JobSummary{ID: "job-1", Policy: "on-drift", Trigger: "drift", Agent: "gpu-1", AgentGPUs: 8, State: "succeeded", Outcome: "won",
			Dataset: "churn-retrain:1", DatasetRows: 10320, Metric: "accuracy", CandidateScore: 0.8, ChampionScore: 0.703, ChampionVersion: 1, Margin: 0.01, Version: 2},
		Rollouts: []demo.RolloutSummary{
			{ID: "r-1", FromVersion: 1, ToVersion: 2, StartedBy: "by job job-1", State: "succeeded", Seconds: 5.8},
			{ID: "r-2", FromVersion: 2, ToVersion: 3, StartedBy: "by hand", State: "rolled_back", Seconds: 3.8,
				Reason: "gate accuracy: accuracy 0.23 < min 0.6 failed: accuracy 0.23 < min 0.6"},
		},
		Traffic: demo.TrafficSummary{Requests: 558, Rows: 22320, FeedbackJoined: 511},
	}
	var b bytes.Buffer
	printDemoSummary(&b, s)
	out := b.String()
	for _, want := range []string{
		"Summary — the whole loop in 20.0s",
		"0.740 (5,320) / 0.488 (10,360)",
		"- / 0.225 (800)",
		"ran on gpu-1 (8 GPUs)",
		"on churn-retrain:1 (10,320 rows): accuracy 0.800 against churn:1's 0.703 on the same hold-out, margin 0.01 → churn:2",
		"r-1 churn:1 → 2 (by job job-1): succeeded in 5.8s",
		"r-2 churn:2 → 3 (by hand): rolled back in 3.8s — gate accuracy: accuracy 0.23 < min 0.6\n",
		"558 requests for 22,320 customers, 0 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
