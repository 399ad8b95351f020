package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// droverBin is the drover binary the end-to-end tests run, built once by
// TestMain (not under -short, where they are skipped).
var droverBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "drover-demo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	droverBin = filepath.Join(dir, "drover")
	build := exec.Command("go", "build", "-o", droverBin, "github.com/droverhq/drover/cmd/drover")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build drover:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gone reports whether no process has the id any more.
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// TestDemo runs `drover demo --json` as a person would and checks its
// summary: the whole story in under two minutes — the drift verdict
// turned, the policy's job ran on a GPU agent and its candidate won, went
// out as a canary and was promoted; the broken version was rolled back by
// its accuracy gate and rejected; no request failed; and at the end every
// child is stopped and the directory removed.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a hub and three agents for about half a minute")
	}
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, droverBin, "demo", "--json")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var s Summary
	if jerr := json.Unmarshal(stdout.Bytes(), &s); jerr != nil {
		t.Fatalf("drover demo --json: %v (%v)\nstdout:\n%s\nstderr:\n%s", err, jerr, stdout.String(), stderr.String())
	}
	if err != nil || !s.OK {
		t.Fatalf("drover demo --json: %v: %s (stage %q)\nstderr:\n%s", err, s.Error, s.FailedStage, stderr.String())
	}
	t.Logf("the demo took %v (it says %.1fs); stages %+v", took.Round(100*time.Millisecond), s.DurationSeconds, s.Stages)
	if took >= 2*time.Minute || s.DurationSeconds >= 120 {
		t.Errorf("the demo took %v (%.1fs by its summary), not under two minutes", took, s.DurationSeconds)
	}
	if stderr.Len() > 0 {
		t.Errorf("--json wrote to stderr, which is not a terminal:\n%s", stderr.String())
	}

	if d := s.Drift; d == nil || d.Verdict != "drift" || d.Version != 1 || d.MostDrifted == "" || len(d.Agents) != 3 {
		t.Errorf("drift: %+v", s.Drift)
	}
	j := s.Job
	if j == nil {
		t.Fatal("no retraining job in the summary")
	}
	if j.Trigger != "drift" || j.State != "succeeded" || j.Outcome != "won" || j.Policy != "on-drift" {
		t.Errorf("job: %+v", j)
	}
	if j.AgentGPUs == 0 || !strings.HasPrefix(j.Agent, "gpu-") {
		t.Errorf("the job ran on %s (%d GPUs); want a GPU agent", j.Agent, j.AgentGPUs)
	}
	if j.ChampionVersion != 1 || j.Version != 2 || j.CandidateScore < j.ChampionScore+j.Margin || j.Margin != 0.01 {
		t.Errorf("job: champion v%d %.3f, candidate v%d %.3f, margin %g", j.ChampionVersion, j.ChampionScore, j.Version, j.CandidateScore, j.Margin)
	}
	if j.DatasetRows <= 4000 {
		t.Errorf("the job's data set has %d rows: no labelled feedback was added to the base's 4000", j.DatasetRows)
	}

	if len(s.Rollouts) != 2 {
		t.Fatalf("rollouts: %+v", s.Rollouts)
	}
	if r := s.Rollouts[0]; r.ID != j.RolloutID || r.FromVersion != 1 || r.ToVersion != 2 || r.State != "succeeded" {
		t.Errorf("the winner's rollout: %+v", r)
	}
	if r := s.Rollouts[1]; r.FromVersion != 2 || r.ToVersion != 3 || r.State != "rolled_back" || r.FailedGate != "accuracy" ||
		!strings.Contains(r.Reason, "accuracy") {
		t.Errorf("the broken version's rollout: %+v", r)
	}

	if len(s.Versions) != 3 {
		t.Fatalf("versions: %+v", s.Versions)
	}
	v1, v2, v3 := s.Versions[0], s.Versions[1], s.Versions[2]
	if v1.State != "ready" || v2.State != "ready" || v3.State != "rejected" || v2.ParentVersion != 1 {
		t.Errorf("versions: %+v", s.Versions)
	}
	live := func(v VersionSummary) float64 {
		if v.LiveAccuracyDrifted == nil {
			t.Fatalf("churn:%d has no live accuracy on the drifted customers", v.Version)
		}
		return *v.LiveAccuracyDrifted
	}
	if a1, a2, a3 := live(v1), live(v2), live(v3); a2 < a1+0.1 || a3 > 0.5 {
		t.Errorf("live accuracy on drifted customers: v1 %.3f, v2 %.3f, v3 %.3f", a1, a2, a3)
	}
	if s.Traffic.Failed != 0 || s.Traffic.FeedbackJoined == 0 {
		t.Errorf("traffic: %+v", s.Traffic)
	}

	// Nothing is left behind.
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(s.Dir, tmp) {
		t.Errorf("the working directory %s: %v", s.Dir, err)
	}
	for _, p := range append([]Process{s.Hub}, s.Agents...) {
		if p.PID == 0 || !gone(p.PID) {
			t.Errorf("%s (pid %d) is still running", p.Name, p.PID)
		}
	}
}

// TestDemoInterrupted interrupts the demo as Ctrl-C does once its agents
// serve, and checks that it stops every child and removes its directory.
func TestDemoInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a hub and three agents")
	}
	tmp := t.TempDir()
	cmd := exec.Command(droverBin, "demo")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var mu sync.Mutex
	var out strings.Builder
	serving := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "is serving on every agent") {
				once.Do(func() { close(serving) })
			}
		}
	}()
	select {
	case <-serving:
	case <-time.After(90 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the agents never served:\n%s\nstderr:\n%s", out.String(), stderr.String())
	}
	time.Sleep(time.Second) // traffic flows
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		<-done
		exited <- cmd.Wait()
	}()
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not exit within 30s of SIGINT")
	}
	mu.Lock()
	text := out.String()
	mu.Unlock()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("exit: %v\nstderr:\n%s", err, stderr.String())
	}
	pids := regexp.MustCompile(`\(pid (\d+)\)`).FindAllStringSubmatch(text, -1)
	if len(pids) != 4 {
		t.Errorf("%d children named in the output, want 4:\n%s", len(pids), text)
	}
	for _, m := range pids {
		pid, _ := strconv.Atoi(m[1])
		if !gone(pid) {
			t.Errorf("pid %d is still running after the demo was interrupted", pid)
		}
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "drover-demo-*"))
	if len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if !strings.Contains(text, "removed "+tmp) {
		t.Errorf("the demo did not say it removed its directory:\n%s", text)
	}
}

func TestTidy(t *testing.T) {
	for in, want := range map[string]string{
		"accuracy 0.225 < min 0.6 failed: accuracy 0.225 < min 0.6":                                     "accuracy 0.225 < min 0.6",
		"gate accuracy: accuracy 0.2 < min 0.6 failed: accuracy 0.2 < min 0.6; the baseline has 3 rows": "gate accuracy: accuracy 0.2 < min 0.6; the baseline has 3 rows",
		"error_rate 0 ≤ max 0.05":                  "error_rate 0 ≤ max 0.05",
		"something failed: for another reason":     "something failed: for another reason",
		"the canary has 0 requests, fewer than 10": "the canary has 0 requests, fewer than 10",
	} {
		if got := Tidy(in); got != want {
			t.Errorf("Tidy(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 26640: "26,640", 1234567: "1,234,567"} {
		if got := Thousands(n); got != want {
			t.Errorf("Thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestMostDrifted(t *testing.T) {
	f := func(name, method string, score, threshold float64, js *float64, drifted bool) *droverv1.FeatureDrift {
		verdict := "no_drift"
		if drifted {
			verdict = "drift"
		}
		return &droverv1.FeatureDrift{Name: name, Method: method, Score: score, Threshold: threshold, JensenShannon: js, Drifted: drifted, Verdict: verdict}
	}
	// By Jensen–Shannon distance among the drifted features.
	v := &droverv1.GetDriftResponse{Features: []*droverv1.FeatureDrift{
		f("a", "ks", 1e-9, 0.05, ptr(0.9), false),
		f("b", "ks", 1e-3, 0.05, ptr(0.2), true),
		f("c", "chi2", 1e-5, 0.05, ptr(0.3), true),
		{Name: "d", Verdict: "insufficient_data"},
	}}
	if got := mostDrifted(v); got != "c" {
		t.Errorf("most drifted: %s, want c", got)
	}
	// Without distances, by how far past the threshold.
	v = &droverv1.GetDriftResponse{Features: []*droverv1.FeatureDrift{
		f("p", "ks", 1e-3, 0.05, nil, true),          // log p / log t ≈ 2.3
		f("w", "wasserstein", 0.5, 0.1, nil, true),   // 5
		f("q", "chi2", 1e-20, 0.05, nil, true),       // ≈ 15.4
		f("n", "wasserstein", 0.05, 0.1, nil, false), // not drifted
	}}
	if got := mostDrifted(v); got != "q" {
		t.Errorf("most drifted: %s, want q", got)
	}
	// None drifted: the furthest of all.
	v = &droverv1.GetDriftResponse{Features: []*droverv1.FeatureDrift{
		f("x", "psi", 0.05, 0.1, nil, false), f("y", "psi", 0.08, 0.1, nil, false),
	}}
	if got := mostDrifted(v); got != "y" {
		t.Errorf("most drifted: %s, want y", got)
	}
}

func TestCleanEnv(t *testing.T) {
	got := cleanEnv([]string{"PATH=/bin", "DROVER_ADDR=10.0.0.1:8420", "HOME=/root", "DROVER_CONFIG=/etc/drover.yaml"})
	if strings.Join(got, " ") != "PATH=/bin HOME=/root" {
		t.Errorf("cleanEnv: %v", got)
	}
}

// TestJobChange checks that a job's steps are told even when the demo
// looked only before and after them.
func TestJobChange(t *testing.T) {
	d := &run{cluster: &Cluster{Agents: []Process{{Name: "gpu-1", GPUs: 8}}}, agentIDs: map[string]string{"a-1": "gpu-1"}}
	queued := &droverv1.RetrainJob{Id: "job-1", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_QUEUED, Dataset: "churn-retrain", DatasetVersion: 1,
		Validation: &droverv1.DatasetValidation{Passed: true, Rows: 9000}, ExportAgents: []string{"a-1"}}
	won := &droverv1.RetrainJob{Id: "job-1", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED, Outcome: droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON,
		AgentName: "gpu-1", Dataset: "churn-retrain", DatasetVersion: 1, Validation: queued.Validation, ExportAgents: queued.ExportAgents,
		Metric: "accuracy", CandidateScore: 0.8, ChampionScore: 0.7, ChampionVersion: 1, Version: 2, RolloutId: "r-1", Margin: 0.01}
	lines := d.jobChange(nil, queued)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "collecting: asked gpu-1") || !strings.HasPrefix(lines[1], "queued: data set churn-retrain:1, 9,000 rows") {
		t.Errorf("first look, queued: %q", lines)
	}
	lines = d.jobChange(queued, won)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "running on gpu-1 (8 GPUs)") || !strings.Contains(lines[1], "registered as churn:2") {
		t.Errorf("queued, then won: %q", lines)
	}
	if lines := d.jobChange(won, won); len(lines) != 0 {
		t.Errorf("no change: %q", lines)
	}
}

// TestDemoFailure runs the demo with a "drover" that fails at once: the
// error names the stage and the hub, carries the end of its log, and the
// directory is removed all the same.
func TestDemoFailure(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	bin := filepath.Join(t.TempDir(), "drover")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"listen tcp: address already in use\" >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var events []Event
	res, err := Run(t.Context(), Options{Binary: bin, Events: func(e Event) { events = append(events, e) }})
	var de *Error
	if !errors.As(err, &de) || de.Stage != stages[0] || !strings.Contains(err.Error(), "hub-1 exited unexpectedly: exit status 3") {
		t.Fatalf("Run: %v", err)
	}
	if len(de.Logs) != 1 || de.Logs[0].Name != "hub-1" || !strings.Contains(strings.Join(de.Logs[0].Lines, "\n"), "address already in use") {
		t.Errorf("logs: %+v", de.Logs)
	}
	if res.Cluster != nil || res.Summary.OK || res.Summary.FailedStage != stages[0] || res.Summary.Error == "" {
		t.Errorf("result: %+v", res)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "drover-demo-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if len(events) == 0 || events[0].Kind != StageStart || events[0].Stage != 1 || events[0].Stages != len(stages) {
		t.Errorf("events: %+v", events)
	}
}
