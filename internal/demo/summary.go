package demo

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Summary is what the demo did, as `drover demo --json` prints it.
type Summary struct {
	// OK is whether every stage went as the story says.
	OK bool `json:"ok"`
	// Error says what went wrong, and FailedStage where.
	Error       string `json:"error,omitempty"`
	FailedStage string `json:"failed_stage,omitempty"`
	// DurationSeconds is the whole run, stopping the children included.
	DurationSeconds float64 `json:"duration_seconds"`
	// Dir is the working directory (removed at the end unless Kept).
	Dir  string `json:"dir"`
	Kept bool   `json:"kept"`

	Hub      Process          `json:"hub"`
	Agents   []Process        `json:"agents"`
	Stages   []StageSummary   `json:"stages"`
	Versions []VersionSummary `json:"versions"`
	// Drift is the fleet's verdict on the first version once the
	// customers changed.
	Drift *DriftSummary `json:"drift,omitempty"`
	// Job is the retraining job the drift started.
	Job      *JobSummary      `json:"job,omitempty"`
	Rollouts []RolloutSummary `json:"rollouts"`
	Traffic  TrafficSummary   `json:"traffic"`
}

// StageSummary is how long a stage took.
type StageSummary struct {
	Title   string  `json:"title"`
	Seconds float64 `json:"seconds"`
}

// VersionSummary is one version of the model.
type VersionSummary struct {
	Version uint64 `json:"version"`
	// Origin says where it came from.
	Origin string `json:"origin"`
	// State is ready or rejected (by a rollout's gate).
	State         string `json:"state"`
	ParentVersion uint64 `json:"parent_version,omitempty"`
	RunID         string `json:"run_id,omitempty"`
	// HoldoutAccuracy is its accuracy on its own training data's
	// hold-out, as registered.
	HoldoutAccuracy *float64 `json:"holdout_accuracy,omitempty"`
	// LiveAccuracy is the share of its answers the feedback proved right,
	// on the reference customers and on the drifted ones, with the rows
	// each was measured on.
	LiveAccuracy        *float64 `json:"live_accuracy,omitempty"`
	LiveRows            int      `json:"live_rows"`
	LiveAccuracyDrifted *float64 `json:"live_accuracy_drifted,omitempty"`
	LiveRowsDrifted     int      `json:"live_rows_drifted"`
}

// DriftSummary is the fleet's drift verdict on a version.
type DriftSummary struct {
	Version         uint64   `json:"version"`
	Verdict         string   `json:"verdict"`
	DriftShare      float64  `json:"drift_share"`
	DriftedFeatures []string `json:"drifted_features"`
	Features        int      `json:"features"`
	// MostDrifted is the feature furthest from its reference.
	MostDrifted string   `json:"most_drifted"`
	Rows        uint64   `json:"rows"`
	Agents      []string `json:"agents"`
}

// JobSummary is a retraining job.
type JobSummary struct {
	ID            string `json:"id"`
	Policy        string `json:"policy"`
	Trigger       string `json:"trigger"`
	TriggerDetail string `json:"trigger_detail"`
	State         string `json:"state"`
	Outcome       string `json:"outcome"`
	Message       string `json:"message,omitempty"`
	// Agent ran it; AgentGPUs is how many GPUs it has.
	Agent     string `json:"agent"`
	AgentGPUs int    `json:"agent_gpus"`
	Attempts  int    `json:"attempts"`
	// Dataset is the data set it made and trained on, and its rows.
	Dataset     string `json:"dataset"`
	DatasetRows uint64 `json:"dataset_rows"`
	// Metric compared, the candidate's and champion's scores on the same
	// hold-out, and the margin the candidate had to win by.
	Metric          string  `json:"metric"`
	CandidateScore  float64 `json:"candidate_score"`
	ChampionScore   float64 `json:"champion_score"`
	Margin          float64 `json:"margin"`
	ChampionVersion uint64  `json:"champion_version"`
	// Version is the winner's version, RolloutID its rollout.
	Version   uint64  `json:"version"`
	RolloutID string  `json:"rollout_id"`
	Seconds   float64 `json:"seconds"`
}

// RolloutSummary is a rollout and how it ended.
type RolloutSummary struct {
	ID          string `json:"id"`
	FromVersion uint64 `json:"from_version"`
	ToVersion   uint64 `json:"to_version"`
	// StartedBy says who started it: the retraining job, or the demo by
	// hand.
	StartedBy string `json:"started_by"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
	// FailedGate is the gate that rolled it back, if one did.
	FailedGate string `json:"failed_gate,omitempty"`
	// Verdicts are each gate's last judgement.
	Verdicts []string `json:"verdicts"`
	Seconds  float64  `json:"seconds"`
}

// TrafficSummary is what the traffic generator sent.
type TrafficSummary struct {
	Requests       int    `json:"requests"`
	Rows           int    `json:"rows"`
	Failed         int    `json:"failed"`
	FeedbackJoined int    `json:"feedback_joined"`
	LastError      string `json:"last_error,omitempty"`
}

// summarize fills in the versions.
func (d *run) summarize(ctx context.Context) error {
	cctx, cancel := callCtx(ctx)
	defer cancel()
	resp, err := d.hub.Models.GetModel(cctx, &droverv1.GetModelRequest{Name: model})
	if err != nil {
		return err
	}
	for _, mv := range resp.GetVersions() {
		vs := VersionSummary{Version: mv.GetVersion(), State: enumName(mv.GetState().String(), "VERSION_STATE_"),
			ParentVersion: mv.GetLineage().GetParentVersion(), RunID: mv.GetLineage().GetRunId()}
		switch mv.GetVersion() {
		case d.v1:
			vs.Origin = fmt.Sprintf("trained by the demo on %d customers, l2=%s", v1Rows, v1L2)
		case d.v2:
			vs.Origin = "retrained by job " + d.sum.Job.ID + " on " + d.sum.Job.Agent
		case d.v3:
			vs.Origin = fmt.Sprintf("trained by the demo on %s customers with flipped labels", Thousands(v3Rows))
		default:
			vs.Origin = mv.GetDescription()
		}
		if acc, ok := mv.GetMetrics()["accuracy"]; ok {
			vs.HoldoutAccuracy = &acc
		}
		if acc, rows, ok := d.traffic.accuracy(mv.GetVersion(), false); ok {
			vs.LiveAccuracy, vs.LiveRows = &acc, rows
		}
		if acc, rows, ok := d.traffic.accuracy(mv.GetVersion(), true); ok {
			vs.LiveAccuracyDrifted, vs.LiveRowsDrifted = &acc, rows
		}
		d.sum.Versions = append(d.sum.Versions, vs)
	}
	return nil
}

// jobSummary summarises a job.
func (d *run) jobSummary(j *droverv1.RetrainJob, took time.Duration) *JobSummary {
	js := &JobSummary{ID: j.GetId(), Policy: j.GetPolicy(), Trigger: j.GetTrigger(), TriggerDetail: j.GetTriggerDetail(),
		State: enumName(j.GetState().String(), "RETRAIN_JOB_STATE_"), Outcome: enumName(j.GetOutcome().String(), "RETRAIN_OUTCOME_"),
		Message: j.GetMessage(), Agent: j.GetAgentName(), Attempts: len(j.GetAttempts()), DatasetRows: j.GetValidation().GetRows(),
		Metric: j.GetMetric(), CandidateScore: j.GetCandidateScore(), ChampionScore: j.GetChampionScore(), Margin: j.GetMargin(),
		ChampionVersion: j.GetChampionVersion(), Version: j.GetVersion(), RolloutID: j.GetRolloutId(), Seconds: seconds(took)}
	if j.GetDataset() != "" {
		js.Dataset = fmt.Sprintf("%s:%d", j.GetDataset(), j.GetDatasetVersion())
	}
	for _, a := range d.cluster.Agents {
		if a.Name == js.Agent {
			js.AgentGPUs = a.GPUs
		}
	}
	return js
}

// rolloutSummary summarises a rollout that ended.
func rolloutSummary(r *droverv1.Rollout, startedBy string, took time.Duration) RolloutSummary {
	rs := RolloutSummary{ID: r.GetId(), FromVersion: r.GetFromVersion(), ToVersion: r.GetToVersion(), StartedBy: startedBy,
		State: enumName(r.GetState().String(), "ROLLOUT_STATE_"), Reason: r.GetReason(), Seconds: seconds(took), Verdicts: []string{}}
	last := map[string]*droverv1.Judgement{}
	var order []string
	for _, j := range r.GetJudgements() {
		key := fmt.Sprintf("step %d, %s", j.GetStep()+1, j.GetGate())
		if last[key] == nil {
			order = append(order, key)
		}
		last[key] = j
		if j.GetResult() == "fail" && r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK {
			rs.FailedGate = j.GetGate()
		}
	}
	for _, k := range order {
		rs.Verdicts = append(rs.Verdicts, fmt.Sprintf("%s: %s — %s", k, last[k].GetResult(), last[k].GetDetail()))
	}
	return rs
}

// driftLine is a drift view's verdict in a line.
func driftLine(v *droverv1.GetDriftResponse) string {
	ds := v.GetDataset()
	verdict := "no drift"
	if ds.GetDrifted() {
		verdict = "DRIFT"
	}
	return fmt.Sprintf("%s, %d of %d features drifted (%.0f%%), %s rows from %d agents",
		verdict, ds.GetDriftedFeatures(), ds.GetFeatures(), 100*ds.GetDriftShare(), Thousands(v.GetRows()), len(v.GetAgents()))
}

// severity is how far a feature is from its reference: its
// Jensen–Shannon distance, which every kind of feature has, computed
// exactly from the frozen bins; failing that, how far past its threshold
// it is (above 1 when it drifted), for p-values (drift when below) and
// distances (drift when at or above) alike.
func severity(f *droverv1.FeatureDrift) float64 {
	if f.JensenShannon != nil {
		return f.GetJensenShannon()
	}
	switch f.GetMethod() {
	case "ks", "chi2", "z":
		p := math.Max(f.GetScore(), 1e-300)
		t := f.GetThreshold()
		if t <= 0 || t >= 1 {
			return 0
		}
		return math.Log(p) / math.Log(t)
	default:
		if f.GetThreshold() <= 0 {
			return f.GetScore()
		}
		return f.GetScore() / f.GetThreshold()
	}
}

// mostDrifted names the drifted feature furthest from its reference (the
// furthest of all when none drifted).
func mostDrifted(v *droverv1.GetDriftResponse) string {
	best, bestScore, bestDrifted := "", -1.0, false
	for _, f := range v.GetFeatures() {
		if f.GetVerdict() == "insufficient_data" {
			continue
		}
		s := severity(f)
		if f.GetDrifted() && !bestDrifted || f.GetDrifted() == bestDrifted && s > bestScore {
			best, bestScore, bestDrifted = f.GetName(), s, f.GetDrifted()
		}
	}
	return best
}

// Tidy shortens a gate's verdict as the hub words it, where the failed
// check is said twice ("accuracy 0.2 < min 0.6 failed: accuracy 0.2 <
// min 0.6"), to one saying.
func Tidy(s string) string {
	before, after, ok := strings.Cut(s, " failed: ")
	if !ok {
		return s
	}
	first, rest, _ := strings.Cut(after, "; ")
	if !strings.HasSuffix(before, first) {
		return s
	}
	if rest != "" {
		return before + "; " + rest
	}
	return before
}

func driftSummaryOf(v *droverv1.GetDriftResponse, feature string) *DriftSummary {
	ds := &DriftSummary{Version: v.GetVersion(), Verdict: "no_drift", DriftShare: v.GetDataset().GetDriftShare(),
		Features: int(v.GetDataset().GetFeatures()), MostDrifted: feature, Rows: v.GetRows(),
		Agents: slices.Clone(v.GetAgents()), DriftedFeatures: []string{}}
	if v.GetDataset().GetDrifted() {
		ds.Verdict = "drift"
	}
	for _, f := range v.GetFeatures() {
		if f.GetDrifted() {
			ds.DriftedFeatures = append(ds.DriftedFeatures, f.GetName())
		}
	}
	return ds
}

// Thousands writes n with thousands separators, as the demo tells counts.
func Thousands[T ~int | ~uint64](n T) string {
	s := strconv.FormatUint(uint64(n), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
