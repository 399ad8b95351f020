// Package demo runs `drover demo`: the whole product on one machine, with
// nothing else installed. In a temporary directory it starts a one-node
// hub and three agents (two with simulated DGX H100s, one CPU-only) as
// child processes of the drover binary, trains a first churn model on a
// little of the bundled data, rolls it out, sends it traffic with
// feedback, shifts the customers until the fleet's drift verdict turns,
// lets a retraining policy retrain on a GPU agent and roll the winner out
// as a canary, and finally rolls out a deliberately broken version that
// its accuracy gate rolls back. Run reports each step as an Event and
// returns a Summary; the command line (internal/cli/demo.go) draws them.
package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect/v2"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/churn"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Options say how the demo runs.
type Options struct {
	// Binary is the drover binary the hub and agents run as (default:
	// this process's own executable).
	Binary string
	// Dir is where the children keep their data and logs (default: a new
	// temporary directory). A directory the demo made is removed at the
	// end unless Keep; one given here never is.
	Dir string
	// Keep leaves the hub and agents running when Run returns, in the
	// Result's Cluster, for the caller to Stop.
	Keep bool
	// Events receives the demo's progress as it happens; nil for none.
	// It is called from one goroutine at a time and should not block.
	Events func(Event)
}

// Kind says what an Event reports.
type Kind int

// The kinds of Event.
const (
	// StageStart: a stage begins (Stage, Stages, Title).
	StageStart Kind = iota + 1
	// StageEnd: a stage is done (Took).
	StageEnd
	// Note: something happened (Text).
	Note
	// Status: what the demo is waiting for, right now (Text, and a
	// Fraction done if HasFraction). A terminal redraws it in place;
	// elsewhere it is best left out.
	Status
	// DriftView: the fleet's drift view of a version (Drift), with the
	// most drifted feature (Feature) worth a histogram when it drifted
	// (Text says what it shows).
	DriftView
	// JobChange: a retraining job changed state or phase (Job, Text).
	JobChange
	// Judged: a rollout gate's verdict changed (Rollout, Judgement,
	// Text).
	Judged
	// RolloutChange: a rollout changed state or step, or its step's
	// agents became ready (Rollout, Text).
	RolloutChange
)

// Event is one step of the demo's progress.
type Event struct {
	Kind Kind
	// Elapsed is the time since the demo began.
	Elapsed time.Duration
	// Stage is the current stage, 1 to Stages (0 before the first and
	// while cleaning up); Title its title.
	Stage, Stages int
	Title         string
	// Text is what happened, readable.
	Text string
	// Took is how long a stage took (StageEnd).
	Took time.Duration
	// Fraction is a Status's progress, 0 to 1, when HasFraction.
	Fraction    float64
	HasFraction bool

	Drift     *droverv1.GetDriftResponse
	Feature   string
	Job       *droverv1.RetrainJob
	Rollout   *droverv1.Rollout
	Judgement *droverv1.Judgement
}

// Result is what Run leaves behind.
type Result struct {
	// Summary is what happened; on failure, as far as the demo got.
	Summary Summary
	// Cluster is the running hub and agents with Options.Keep (also after
	// a failure, once they had started); nil otherwise, when they have
	// been stopped.
	Cluster *Cluster
}

// Error is a failed demo: the stage, what went wrong, and the end of the
// logs of the processes that explain it.
type Error struct {
	Stage string
	Err   error
	Logs  []LogTail
}

func (e *Error) Error() string {
	if e.Stage == "" {
		return e.Err.Error()
	}
	return e.Stage + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// LogTail is the last lines of one child's log.
type LogTail struct {
	Name  string
	Path  string
	Lines []string
}

// logTailLines is how much of a log a failure shows.
const logTailLines = 25

// The model, data set and policy the demo makes.
const (
	model     = "churn"
	dataset   = "churn-train"
	policy    = "on-drift"
	hubName   = "hub-1"
	v1Rows    = 150
	v1L2      = "100"
	v3Rows    = 2000
	driftSpan = 3 * time.Second // the fleet drift view's window
)

// agentSpec is one agent the demo starts.
type agentSpec struct {
	name string
	gpus string // --fake-gpus; empty for a CPU-only agent
}

var fleet = []agentSpec{{"gpu-1", "dgxh100"}, {"gpu-2", "dgxh100"}, {"cpu-1", ""}}

// stages are the demo's stages, in order.
var stages = []string{
	"Starting a one-node hub and three agents",
	"Training churn:1 on a little of the bundled data",
	"Rolling churn:1 out to the fleet",
	"Serving predictions, with feedback",
	"Injecting drift: the customers change",
	"Retraining on drift",
	"Canary of the retrained version",
	"A broken version, and its accuracy gate",
}

// run is one run of the demo.
type run struct {
	o       Options
	start   time.Time
	stage   int
	stageAt time.Time
	dir     string
	cluster *Cluster
	hub     *client.Client
	traffic *traffic
	// stopTrafficFn stops the traffic generator once it runs.
	stopTrafficFn func()
	sum           *Summary
	suspects      []string // children whose logs explain a failure of this stage

	v1, v2, v3 uint64
	agentIDs   map[string]string // id → name
}

// Run runs the demo until its summary, or until ctx ends or a stage
// fails; without Options.Keep it then stops every child it started and
// removes the directory it made, whatever happened. A failure is an
// *Error.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	d := &run{o: o, start: time.Now(), sum: &Summary{}, agentIDs: map[string]string{}}
	res = &Result{}
	if d.o.Binary == "" {
		if d.o.Binary, err = os.Executable(); err != nil {
			return d.finish(res, &Error{Err: fmt.Errorf("finding the drover binary: %w", err)})
		}
	}
	d.dir = o.Dir
	made := false
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "drover-demo-"); err != nil {
			return d.finish(res, &Error{Err: err})
		}
		made = true
	} else if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return d.finish(res, &Error{Err: err})
	}
	d.sum.Dir = d.dir
	d.cluster = &Cluster{Dir: d.dir}
	defer func() {
		if d.traffic != nil {
			d.sum.Traffic = d.traffic.totals()
		}
		if o.Keep && d.cluster.HubAddr != "" {
			res.Cluster = d.cluster
			d.sum.Kept = true
		} else {
			if len(d.cluster.children) > 0 {
				d.emitStage0(Note, "stopping the hub and agents")
			}
			d.cluster.Stop()
			if made {
				if rmErr := os.RemoveAll(d.dir); rmErr == nil {
					d.emitStage0(Note, "removed "+d.dir)
				}
			}
		}
		d.sum.DurationSeconds = seconds(time.Since(d.start))
		res.Summary = *d.sum
	}()

	steps := []func(context.Context) error{d.startCluster, d.trainV1, d.rollOutV1, d.serve, d.injectDrift, d.retrain, d.canary, d.broken}
	for i, step := range steps {
		d.begin(i + 1)
		if err := step(ctx); err != nil {
			return d.finish(res, d.fail(ctx, err))
		}
		d.end()
	}
	d.emitStage0(Note, "stopping the traffic")
	d.stopTraffic()
	if err := d.summarize(ctx); err != nil {
		return d.finish(res, d.fail(ctx, err))
	}
	d.sum.OK = true
	return res, nil
}

// finish records a failure in the summary.
func (d *run) finish(res *Result, err *Error) (*Result, error) {
	d.sum.Error = err.Error()
	if d.stage > 0 {
		d.sum.FailedStage = stages[d.stage-1]
	}
	res.Summary = *d.sum // and again, complete, once the children are stopped
	return res, err
}

// fail makes a stage's error an *Error with the logs that explain it.
func (d *run) fail(ctx context.Context, err error) *Error {
	d.stopTraffic()
	if ctx.Err() != nil {
		err = fmt.Errorf("interrupted (%w)", context.Cause(ctx))
	}
	e := &Error{Stage: stages[d.stage-1], Err: err}
	if ctx.Err() != nil {
		return e
	}
	var names []string
	var exit *childExit
	if errors.As(err, &exit) {
		names = append(names, exit.name)
	}
	for _, ch := range d.cluster.children {
		if gone, _ := ch.exited(); gone {
			names = append(names, ch.name)
		}
	}
	names = append(names, d.suspects...)
	names = append(names, hubName)
	seen := map[string]bool{}
	for _, n := range names {
		ch := d.cluster.child(n)
		if ch == nil || seen[n] {
			continue
		}
		seen[n] = true
		e.Logs = append(e.Logs, LogTail{Name: n, Path: ch.logPath, Lines: ch.tail(logTailLines)})
	}
	return e
}

// emit sends an event, stamped.
func (d *run) emit(e Event) {
	if d.o.Events == nil {
		return
	}
	e.Elapsed = time.Since(d.start)
	e.Stages = len(stages)
	if e.Stage == 0 && d.stage > 0 {
		e.Stage, e.Title = d.stage, stages[d.stage-1]
	}
	d.o.Events(e)
}

func (d *run) emitStage0(k Kind, text string) {
	if d.o.Events == nil {
		return
	}
	d.o.Events(Event{Kind: k, Elapsed: time.Since(d.start), Stages: len(stages), Text: text})
}

func (d *run) note(format string, args ...any) {
	d.emit(Event{Kind: Note, Text: fmt.Sprintf(format, args...)})
}

func (d *run) status(format string, args ...any) {
	d.emit(Event{Kind: Status, Text: fmt.Sprintf(format, args...)})
}

func (d *run) begin(stage int) {
	d.stage, d.stageAt, d.suspects = stage, time.Now(), nil
	d.emit(Event{Kind: StageStart})
}

func (d *run) end() {
	took := time.Since(d.stageAt)
	d.sum.Stages = append(d.sum.Stages, StageSummary{Title: stages[d.stage-1], Seconds: seconds(took)})
	d.emit(Event{Kind: StageEnd, Took: took})
}

// poll calls f every interval until it says done or fails, the timeout
// passes, ctx ends, or a child exits; f's status is shown while waiting.
func (d *run) poll(ctx context.Context, timeout, interval time.Duration, what string, f func() (done bool, status string, err error)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		if err := d.cluster.checkAlive(); err != nil {
			return err
		}
		done, st, err := f()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if st != "" {
			last = st
			d.status("%s", st)
		}
		if time.Now().After(deadline) {
			if last == "" {
				return fmt.Errorf("%s: gave up after %v", what, timeout)
			}
			return fmt.Errorf("%s: gave up after %v: %s", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// callCtx bounds one API call.
func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 15*time.Second)
}

// --- stage 1 -------------------------------------------------------------

func (d *run) startCluster(ctx context.Context) error {
	d.note("working directory %s", d.dir)
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	raftAddr, err := freeAddr()
	if err != nil {
		return err
	}
	hub := &child{name: hubName, logPath: filepath.Join(d.dir, hubName+".log"), args: []string{
		"hub", "--bootstrap", "--node-name", hubName, "--data-dir", filepath.Join(d.dir, hubName),
		"--http-addr", httpAddr, "--raft-addr", raftAddr, "--agent-timeout", "3s",
	}}
	d.suspects = []string{hubName}
	if err := hub.start(d.o.Binary); err != nil {
		return err
	}
	d.cluster.children = append(d.cluster.children, hub)
	tokenFile := filepath.Join(d.dir, hubName, "admin.token")
	err = d.poll(ctx, 30*time.Second, 100*time.Millisecond, "waiting for the hub", func() (bool, string, error) {
		if !httpOK(ctx, "http://"+httpAddr+"/readyz") {
			return false, "waiting for the hub to elect itself leader", nil
		}
		b, err := os.ReadFile(tokenFile)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return false, "waiting for the hub's admin token", nil
		}
		d.cluster.Token = string(bytes.TrimSpace(b))
		return true, "", nil
	})
	if err != nil {
		return err
	}
	d.cluster.HubAddr = httpAddr
	d.cluster.Hub = Process{Name: hubName, PID: hub.pid(), Addr: httpAddr, Log: hub.logPath}
	d.sum.Hub = d.cluster.Hub
	if d.hub, err = client.New(client.Config{Addrs: []string{httpAddr}, Token: d.cluster.Token}); err != nil {
		return err
	}
	d.note("%s is up at %s (pid %d), its admin token in %s", hubName, httpAddr, hub.pid(), tokenFile)

	cctx, cancel := callCtx(ctx)
	tok, err := d.hub.Tokens.CreateToken(cctx, &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_AGENT, Name: "demo-fleet"})
	cancel()
	if err != nil {
		return fmt.Errorf("creating the agents' join token: %w", err)
	}
	for _, a := range fleet {
		serve, err := freeAddr()
		if err != nil {
			return err
		}
		args := []string{"agent", "--name", a.name, "--hub", httpAddr, "--join-token", tok.GetSecret(),
			"--data-dir", filepath.Join(d.dir, a.name), "--serve-addr", serve, "--plugin-dir=",
			"--label", "site=demo", "--heartbeat-interval", "300ms", "--sample-rate", "1",
			"--drift-window", "1s", "--drift-evaluation", "2s", "--drift-report-interval", "1s", "--metric-window", "1s"}
		if a.gpus != "" {
			args = append(args, "--fake-gpus", a.gpus)
		}
		ch := &child{name: a.name, logPath: filepath.Join(d.dir, a.name+".log"), args: args}
		if err := ch.start(d.o.Binary); err != nil {
			return err
		}
		d.cluster.children = append(d.cluster.children, ch)
		d.cluster.Agents = append(d.cluster.Agents, Process{Name: a.name, PID: ch.pid(), Addr: serve, Log: ch.logPath})
		d.suspects = append(d.suspects, a.name)
	}
	noted := map[string]bool{}
	err = d.poll(ctx, 30*time.Second, 200*time.Millisecond, "waiting for the agents to enrol", func() (bool, string, error) {
		cctx, cancel := callCtx(ctx)
		defer cancel()
		resp, err := d.hub.Agents.ListAgents(cctx, &droverv1.ListAgentsRequest{})
		if err != nil {
			return false, "", err
		}
		ready := 0
		for _, a := range resp.GetAgents() {
			if a.GetStatus() != droverv1.AgentStatus_AGENT_STATUS_READY {
				continue
			}
			ready++
			d.agentIDs[a.GetId()] = a.GetName()
			for i := range d.cluster.Agents {
				p := &d.cluster.Agents[i]
				if p.Name != a.GetName() || noted[p.Name] {
					continue
				}
				noted[p.Name] = true
				gpus := a.GetInventory().GetGpus()
				p.GPUs = len(gpus)
				if len(gpus) > 0 {
					d.note("%s enrolled: %d× %s (simulated), serving on %s (pid %d)", p.Name, len(gpus), gpus[0].GetName(), p.Addr, p.PID)
				} else {
					d.note("%s enrolled: no GPU, CPU only, serving on %s (pid %d)", p.Name, p.Addr, p.PID)
				}
			}
		}
		if ready < len(fleet) {
			return false, fmt.Sprintf("%d of %d agents enrolled and heartbeating", ready, len(fleet)), nil
		}
		return true, "", nil
	})
	d.sum.Agents = d.cluster.Agents
	return err
}

// --- stage 2 -------------------------------------------------------------

// dataFile writes a data file in the demo's directory.
func (d *run) dataFile(name string, b []byte) (string, error) {
	dir := filepath.Join(d.dir, "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, b, 0o644)
}

func (d *run) trainV1(ctx context.Context) error {
	train, err := d.dataFile("churn_train.csv", churn.TrainCSV())
	if err != nil {
		return err
	}
	lines := strings.SplitAfter(string(churn.TrainCSV()), "\n")
	small, err := d.dataFile("churn_v1.csv", []byte(strings.Join(lines[:v1Rows+1], "")))
	if err != nil {
		return err
	}
	d.note("the bundled churn data: %s synthetic telecom customers, %d features, and whether each left (%s)", Thousands(churn.TrainRows), len(churn.Features()), filepath.Base(train))

	// The base data set retraining starts from.
	up, err := d.hub.UploadFile(ctx, train, nil, nil)
	if err != nil {
		return fmt.Errorf("uploading the data set: %w", err)
	}
	cctx, cancel := callCtx(ctx)
	ds, err := d.hub.Datasets.CreateDatasetVersion(cctx, &droverv1.CreateDatasetVersionRequest{
		Dataset: dataset, Content: up.BlobRef(), Format: "csv", Rows: churn.TrainRows, Description: "the bundled churn training split",
	})
	cancel()
	if err != nil {
		return fmt.Errorf("registering the data set: %w", err)
	}
	d.note("registered the whole split as data set %s:%d", dataset, ds.GetVersion().GetVersion())

	// A weak first model: few rows, a heavy penalty.
	mv, err := d.trainAndPush(ctx, "v1", small, map[string]string{"l2": v1L2},
		fmt.Sprintf("the first model: %d customers, l2=%s", v1Rows, v1L2))
	if err != nil {
		return err
	}
	d.v1 = mv.GetVersion()
	d.note("trained churn:%d with the native runner (logistic regression) on %d customers, l2=%s: accuracy %.3f on its %g held-out rows",
		d.v1, v1Rows, v1L2, mv.GetMetrics()["accuracy"], mv.GetMetrics()["holdout_rows"])
	d.note("registered churn:%d with its schema and a reference profile of its training data", d.v1)

	pol := demoPolicy()
	cctx, cancel = callCtx(ctx)
	_, err = d.hub.Retrain.PutPolicy(cctx, &droverv1.PutPolicyRequest{Policy: pol, Reason: "drover demo"})
	cancel()
	if err != nil {
		return fmt.Errorf("putting the retraining policy: %w", err)
	}
	d.note("retraining policy %s: when the fleet's drift verdict is drift for %d windows in a row, retrain on %s plus the agents' labelled feedback, on an agent with a GPU",
		policy, pol.GetTriggers().GetDrift().GetConsecutiveWindows(), dataset)
	d.note("    a candidate must beat the champion's accuracy by %g on the same hold-out; a winner goes out as a %d%% canary on one agent, then to everyone",
		pol.GetPromotion().GetMargin(), pol.GetRollout().GetSteps()[0].GetWeight())
	return nil
}

// trainAndPush trains a native model on a CSV file as `drover train
// --runner native --push` does — the run tracked at the hub, the
// artifact uploaded and registered as the model's next version with its
// metrics, parameters, schema, lineage and a reference profile — and
// returns the version.
func (d *run) trainAndPush(ctx context.Context, name, data string, params map[string]string, description string) (*droverv1.ModelVersion, error) {
	return trainAndPush(ctx, d.hub, trainRequest{
		name: name, dataset: data, params: params, description: description,
		out: filepath.Join(d.dir, "train", name),
	})
}

// --- stage 3 -------------------------------------------------------------

func (d *run) rollOutV1(ctx context.Context) error {
	for _, a := range fleet {
		cctx, cancel := callCtx(ctx)
		_, err := d.hub.Agents.SetAssignment(cctx, &droverv1.SetAssignmentRequest{Agent: a.name, Model: model, Version: d.v1,
			Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, Reason: "drover demo: the first model"})
		cancel()
		if err != nil {
			return fmt.Errorf("assigning churn:%d to %s: %w", d.v1, a.name, err)
		}
	}
	d.note("assigned churn:%d to %s", d.v1, strings.Join(fleetNames(), ", "))
	d.suspects = fleetNames()
	return d.waitServing(ctx, d.v1)
}

func fleetNames() []string {
	var out []string
	for _, a := range fleet {
		out = append(out, a.name)
	}
	return out
}

// waitServing waits until every agent runs version v of the model as
// primary, ready.
func (d *run) waitServing(ctx context.Context, v uint64) error {
	return d.poll(ctx, 30*time.Second, 200*time.Millisecond, fmt.Sprintf("waiting for churn:%d on every agent", v), func() (bool, string, error) {
		cctx, cancel := callCtx(ctx)
		defer cancel()
		resp, err := d.hub.Agents.ListAgents(cctx, &droverv1.ListAgentsRequest{})
		if err != nil {
			return false, "", err
		}
		var phases []string
		ready := 0
		for _, a := range resp.GetAgents() {
			phase := "waiting"
			for _, st := range a.GetAssignmentStatuses() {
				if st.GetModel() == model && st.GetVersion() == v && st.GetRole() == droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY {
					phase = enumName(st.GetPhase().String(), "ASSIGNMENT_PHASE_")
					if st.GetPhase() == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED {
						return false, "", fmt.Errorf("%s failed to load churn:%d: %s", a.GetName(), v, st.GetMessage())
					}
				}
			}
			if phase == "ready" {
				ready++
			}
			phases = append(phases, a.GetName()+" "+phase)
		}
		slices.Sort(phases)
		if ready == len(fleet) {
			d.note("churn:%d is serving on every agent (downloaded, verified, loaded)", v)
			return true, "", nil
		}
		return false, "loading churn:" + fmt.Sprint(v) + ": " + strings.Join(phases, ", "), nil
	})
}

// --- stage 4 -------------------------------------------------------------

func (d *run) serve(ctx context.Context) error {
	var addrs []string
	for _, a := range d.cluster.Agents {
		addrs = append(addrs, a.Addr)
	}
	d.traffic = newTraffic(addrs)
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.traffic.run(tctx)
	}()
	d.stopTrafficFn = func() {
		cancel()
		<-done
	}
	d.note("an application asks the agents who of its customers is about to leave (%d customers a request, the Open Inference Protocol), and posts who really left as feedback", trafficRows)
	started := time.Now()
	var view *droverv1.GetDriftResponse
	err := d.poll(ctx, 30*time.Second, 300*time.Millisecond, "waiting for the fleet's drift view", func() (bool, string, error) {
		tot := d.traffic.totals()
		if tot.Failed > 0 && tot.Failed*10 > tot.Requests {
			return false, "", fmt.Errorf("%d of %d requests failed: %s", tot.Failed, tot.Requests, tot.LastError)
		}
		st := fmt.Sprintf("%s requests, %s customers", Thousands(tot.Requests), Thousands(tot.Rows))
		if acc, rows, ok := d.traffic.accuracy(d.v1, false); ok {
			st += fmt.Sprintf("; churn:%d right about %.1f%% of %s so far", d.v1, 100*acc, Thousands(rows))
		}
		if time.Since(started) < 4*time.Second {
			return false, st, nil
		}
		v, err := d.drift(ctx, d.v1)
		if err != nil || v.GetRows() == 0 {
			return false, st + "; waiting for the agents' drift windows", nil
		}
		view = v
		return true, "", nil
	})
	if err != nil {
		return err
	}
	if acc, rows, ok := d.traffic.accuracy(d.v1, false); ok {
		d.note("churn:%d was right about %.1f%% of %s customers (checked against the labels)", d.v1, 100*acc, Thousands(rows))
	}
	d.emit(Event{Kind: DriftView, Drift: view, Text: "the fleet's drift view of churn:" + fmt.Sprint(d.v1) + ": " + driftLine(view)})
	return nil
}

// stopTraffic stops the traffic generator, if it runs.
func (d *run) stopTraffic() {
	if d.stopTrafficFn != nil {
		d.stopTrafficFn()
		d.stopTrafficFn = nil
	}
}

// drift reads the fleet's drift view of a version over the last few
// windows.
func (d *run) drift(ctx context.Context, v uint64) (*droverv1.GetDriftResponse, error) {
	cctx, cancel := callCtx(ctx)
	defer cancel()
	return d.hub.Drift.GetDrift(cctx, &droverv1.GetDriftRequest{Model: model, Version: v, Window: durationOf(driftSpan)})
}

// --- stage 5 -------------------------------------------------------------

func (d *run) injectDrift(ctx context.Context) error {
	d.traffic.setDrift(1)
	d.note("from now on the customers come from a market turning sour: more monthly contracts, shorter tenure, higher bills, more support calls")
	var view *droverv1.GetDriftResponse
	err := d.poll(ctx, 30*time.Second, 300*time.Millisecond, "waiting for the fleet's drift verdict", func() (bool, string, error) {
		v, err := d.drift(ctx, d.v1)
		if err != nil {
			if connect.CodeOf(err) == connect.CodeNotFound {
				return false, "no drift windows yet", nil
			}
			return false, "", err
		}
		if v.GetDataset().GetDrifted() {
			view = v
			return true, "", nil
		}
		return false, "the fleet's verdict on churn:" + fmt.Sprint(d.v1) + ": " + driftLine(v), nil
	})
	if err != nil {
		return err
	}
	feature := mostDrifted(view)
	d.sum.Drift = driftSummaryOf(view, feature)
	d.emit(Event{Kind: DriftView, Drift: view, Feature: feature,
		Text: "the fleet's drift verdict on churn:" + fmt.Sprint(d.v1) + ": " + driftLine(view)})
	return nil
}

// --- stage 6 -------------------------------------------------------------

func (d *run) retrain(ctx context.Context) error {
	var job *droverv1.RetrainJob
	err := d.poll(ctx, 30*time.Second, 250*time.Millisecond, "waiting for the policy to start a job", func() (bool, string, error) {
		cctx, cancel := callCtx(ctx)
		defer cancel()
		resp, err := d.hub.Retrain.ListJobs(cctx, &droverv1.ListJobsRequest{Policy: policy, Limit: 1})
		if err != nil {
			return false, "", err
		}
		if len(resp.GetJobs()) > 0 {
			job = resp.GetJobs()[0]
			return true, "", nil
		}
		st := "waiting for policy " + policy + " to see drift for 2 windows in a row"
		if acc, rows, ok := d.traffic.accuracy(d.v1, true); ok {
			st += fmt.Sprintf("; churn:%d is right about %.1f%% of %s drifted customers", d.v1, 100*acc, Thousands(rows))
		}
		return false, st, nil
	})
	if err != nil {
		return err
	}
	d.note("policy %s started job %s (%s): %s", policy, job.GetId(), job.GetTrigger(), job.GetTriggerDetail())
	if acc, rows, ok := d.traffic.accuracy(d.v1, true); ok {
		d.note("meanwhile churn:%d is right about only %.1f%% of %s drifted customers", d.v1, 100*acc, Thousands(rows))
	}
	started := time.Now()
	var last *droverv1.RetrainJob
	err = d.poll(ctx, 90*time.Second, 250*time.Millisecond, "waiting for the job", func() (bool, string, error) {
		cctx, cancel := callCtx(ctx)
		defer cancel()
		resp, err := d.hub.Retrain.GetJob(cctx, &droverv1.GetJobRequest{Id: job.GetId()})
		if err != nil {
			return false, "", err
		}
		j := resp.GetJob()
		if j.GetAgentName() != "" && !slices.Contains(d.suspects, j.GetAgentName()) {
			d.suspects = append(d.suspects, j.GetAgentName())
		}
		for _, text := range d.jobChange(last, j) {
			d.emit(Event{Kind: JobChange, Job: j, Text: text})
		}
		last = j
		if jobEnded(j.GetState()) {
			return true, "", nil
		}
		st := "job " + j.GetId() + ": " + enumName(j.GetState().String(), "RETRAIN_JOB_STATE_")
		ev := Event{Kind: Status}
		if j.GetState() == droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING {
			st += " on " + j.GetAgentName()
			if j.GetPhase() != "" {
				st += ", " + j.GetPhase()
				ev.Fraction, ev.HasFraction = j.GetProgress(), true
			}
			if j.GetStage() != "" {
				st += " (" + j.GetStage() + ")"
			}
		}
		ev.Text = st
		d.emit(ev)
		return false, "", nil
	})
	if last != nil {
		d.sum.Job = d.jobSummary(last, time.Since(started))
	}
	if err != nil {
		if last != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w (job %s was %s, %s: %s)%s", err, last.GetId(), enumName(last.GetState().String(), "RETRAIN_JOB_STATE_"),
				last.GetPhase(), last.GetMessage(), logText(last.GetLog()))
		}
		return err
	}
	switch {
	case last.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED:
		return fmt.Errorf("job %s %s: %s%s", last.GetId(), enumName(last.GetState().String(), "RETRAIN_JOB_STATE_"), last.GetMessage(), logText(last.GetLog()))
	case last.GetOutcome() != droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON || last.GetVersion() == 0:
		return fmt.Errorf("job %s's candidate did not win: %s", last.GetId(), last.GetMessage())
	case last.GetRolloutId() == "":
		return fmt.Errorf("job %s registered churn:%d but started no rollout: %s", last.GetId(), last.GetVersion(), last.GetMessage())
	}
	d.v2 = last.GetVersion()
	return nil
}

func logText(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return "\n    " + strings.Join(lines[max(0, len(lines)-10):], "\n    ")
}

func jobEnded(s droverv1.RetrainJobState) bool {
	switch s {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED, droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED,
		droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// jobChange says what changed in a job since prev, a line per step
// (none when nothing worth a line did). A step the job went through
// between two looks is told too, from what the job records of it.
func (d *run) jobChange(prev, j *droverv1.RetrainJob) []string {
	st := j.GetState()
	if prev != nil && prev.GetState() == st {
		switch {
		case st == droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING && prev.GetAgentId() != j.GetAgentId():
			return []string{d.runningText(j)}
		case j.GetPhase() != "" && j.GetPhase() != prev.GetPhase():
			return []string{j.GetPhase() + "…"}
		}
		return nil
	}
	from := droverv1.RetrainJobState_RETRAIN_JOB_STATE_UNSPECIFIED
	if prev != nil {
		from = prev.GetState()
	}
	var lines []string
	for s := from + 1; s <= min(st, droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING); s++ {
		switch s {
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_PENDING:
			if st == s {
				lines = append(lines, "pending: its data set is being made")
			}
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_COLLECTING:
			if len(j.GetExportAgents()) > 0 {
				var names []string
				for _, id := range j.GetExportAgents() {
					names = append(names, cmpOr(d.agentIDs[id], id))
				}
				slices.Sort(names)
				lines = append(lines, "collecting: asked "+strings.Join(names, ", ")+" for their labelled rows (predictions joined to feedback)")
			}
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_QUEUED:
			if j.GetDataset() != "" {
				lines = append(lines, "queued: "+datasetText(j))
			}
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING:
			if j.GetAgentName() != "" {
				lines = append(lines, d.runningText(j))
			}
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING:
			if st == s {
				lines = append(lines, "trained: the candidate is judged against the champion on the same hold-out")
			}
		}
	}
	switch st {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED:
		if j.GetOutcome() == droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON {
			lines = append(lines, fmt.Sprintf("succeeded: the candidate won, %s %.3f against the champion churn:%d's %.3f on the same hold-out (margin %g); registered as churn:%d, rollout %s started",
				j.GetMetric(), j.GetCandidateScore(), j.GetChampionVersion(), j.GetChampionScore(), j.GetMargin(), j.GetVersion(), j.GetRolloutId()))
		} else {
			lines = append(lines, "succeeded, but the candidate lost: "+j.GetMessage())
		}
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED, droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED:
		lines = append(lines, enumName(st.String(), "RETRAIN_JOB_STATE_")+": "+j.GetMessage())
	}
	return lines
}

// runningText says where a job runs.
func (d *run) runningText(j *droverv1.RetrainJob) string {
	text := "running on " + j.GetAgentName()
	for _, a := range d.cluster.Agents {
		if a.Name == j.GetAgentName() && a.GPUs > 0 {
			text += fmt.Sprintf(" (%d GPUs): the policy places it on an agent with a GPU", a.GPUs)
		}
	}
	if j.GetAttempt() > 1 {
		text += fmt.Sprintf(", attempt %d", j.GetAttempt())
	}
	return text
}

func datasetText(j *droverv1.RetrainJob) string {
	if j.GetDataset() == "" {
		return "making its data set"
	}
	v := j.GetValidation()
	verdict := "failed validation"
	if v.GetPassed() {
		verdict = "validated"
	}
	return fmt.Sprintf("data set %s:%d, %s rows (%s plus the labelled feedback), %s", j.GetDataset(), j.GetDatasetVersion(), Thousands(v.GetRows()), dataset, verdict)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// --- stage 7 -------------------------------------------------------------

func (d *run) canary(ctx context.Context) error {
	d.suspects = fleetNames()
	r, err := d.follow(ctx, d.sum.Job.RolloutID, "by job "+d.sum.Job.ID)
	if err != nil {
		return err
	}
	if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		return fmt.Errorf("the winner's rollout %s ended %s: %s", r.GetId(), enumName(r.GetState().String(), "ROLLOUT_STATE_"), r.GetReason())
	}
	if err := d.waitServing(ctx, d.v2); err != nil {
		return err
	}
	if acc, rows, ok := d.traffic.accuracy(d.v2, true); ok {
		old, _, _ := d.traffic.accuracy(d.v1, true)
		d.note("churn:%d is right about %.1f%% of %s drifted customers so far (churn:%d: %.1f%%)", d.v2, 100*acc, Thousands(rows), d.v1, 100*old)
	}
	return nil
}

// --- stage 8 -------------------------------------------------------------

func (d *run) broken(ctx context.Context) error {
	customers := churn.Generate(churn.Options{Rows: v3Rows, Seed: 3, Drift: 1})
	for i := range customers {
		customers[i].Churn = !customers[i].Churn
	}
	var b bytes.Buffer
	if err := churn.WriteCSV(&b, customers); err != nil {
		return err
	}
	flipped, err := d.dataFile("churn_flipped.csv", b.Bytes())
	if err != nil {
		return err
	}
	mv, err := d.trainAndPush(ctx, "v3", flipped, map[string]string{"l2": "1"},
		"deliberately broken: trained with every label flipped")
	if err != nil {
		return err
	}
	d.v3 = mv.GetVersion()
	d.note("trained churn:%d on %s drifted customers with every label flipped; on its own (flipped) hold-out it scores %.3f, so it looks fine on paper",
		d.v3, Thousands(v3Rows), mv.GetMetrics()["accuracy"])
	steps := []*droverv1.RolloutStep{
		{Agents: 1, Weight: 50, Bake: durationOf(10 * time.Second), Gates: []*droverv1.Gate{
			{Name: "accuracy", Metric: "accuracy", Min: ptr(0.6), MinSamples: 50},
			{Name: "errors", Metric: "error_rate", Max: ptr(0.05), MinSamples: 10},
		}},
		{Percent: 100},
	}
	cctx, cancel := callCtx(ctx)
	resp, err := d.hub.Rollouts.StartRollout(cctx, &droverv1.StartRolloutRequest{Model: model, Version: d.v3, Steps: steps,
		Reason: "drover demo: a broken version"})
	cancel()
	if err != nil {
		return fmt.Errorf("starting the rollout of churn:%d: %w", d.v3, err)
	}
	d.note("rollout %s: churn:%d → %d as a 50%% canary on one agent, gated by accuracy ≥ 0.6 on at least 50 labelled rows", resp.GetRollout().GetId(), resp.GetRollout().GetFromVersion(), d.v3)
	d.suspects = fleetNames()
	r, err := d.follow(ctx, resp.GetRollout().GetId(), "by hand")
	if err != nil {
		return err
	}
	if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK {
		return fmt.Errorf("the broken version's rollout %s ended %s, not rolled back", r.GetId(), enumName(r.GetState().String(), "ROLLOUT_STATE_"))
	}
	cctx, cancel = callCtx(ctx)
	v, err := d.hub.Models.GetVersion(cctx, &droverv1.GetVersionRequest{Model: model, Selector: &droverv1.GetVersionRequest_Version{Version: d.v3}})
	cancel()
	if err != nil {
		return err
	}
	d.note("churn:%d is now %s: %s", d.v3, enumName(v.GetVersion().GetState().String(), "VERSION_STATE_"), Tidy(r.GetReason()))
	return d.waitServing(ctx, d.v2)
}

// --- rollouts ------------------------------------------------------------

// follow watches a rollout until it ends, telling its steps and gate
// verdicts as they come, and records it in the summary.
func (d *run) follow(ctx context.Context, id, startedBy string) (*droverv1.Rollout, error) {
	started := time.Now()
	var last *droverv1.Rollout
	verdicts := map[string]string{} // step/gate → the last result told
	seen := map[string]bool{}
	err := d.poll(ctx, 90*time.Second, 250*time.Millisecond, "waiting for rollout "+id, func() (bool, string, error) {
		cctx, cancel := callCtx(ctx)
		defer cancel()
		resp, err := d.hub.Rollouts.GetRollout(cctx, &droverv1.GetRolloutRequest{Id: id})
		if err != nil {
			return false, "", err
		}
		r := resp.GetRollout()
		for _, j := range r.GetJudgements() {
			key := fmt.Sprintf("%d/%s/%d", j.GetStep(), j.GetGate(), j.GetTime().AsTime().UnixNano())
			if seen[key] {
				continue
			}
			seen[key] = true
			g := fmt.Sprintf("%d/%s", j.GetStep(), j.GetGate())
			if verdicts[g] == j.GetResult() {
				continue
			}
			verdicts[g] = j.GetResult()
			d.emit(Event{Kind: Judged, Rollout: r, Judgement: j,
				Text: fmt.Sprintf("gate %s, step %d: %s — %s", j.GetGate(), j.GetStep()+1, j.GetResult(), Tidy(j.GetDetail()))})
		}
		if text := rolloutChange(last, r); text != "" {
			d.emit(Event{Kind: RolloutChange, Rollout: r, Text: text})
		}
		last = r
		switch r.GetState() {
		case droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK:
			return true, "", nil
		case droverv1.RolloutState_ROLLOUT_STATE_PAUSED:
			return false, "", fmt.Errorf("rollout %s paused: %s", id, r.GetReason())
		}
		return false, rolloutStatus(r), nil
	})
	if last != nil {
		d.sum.Rollouts = append(d.sum.Rollouts, rolloutSummary(last, startedBy, time.Since(started)))
	}
	return last, err
}

// rolloutChange says what changed in a rollout since prev ("" when
// nothing worth a line did).
func rolloutChange(prev, r *droverv1.Rollout) string {
	ready := r.GetStepReadyTime() != nil
	if prev != nil && prev.GetState() == r.GetState() && prev.GetStep() == r.GetStep() && (prev.GetStepReadyTime() != nil) == ready {
		return ""
	}
	n := len(r.GetSteps())
	switch r.GetState() {
	case droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED:
		return fmt.Sprintf("succeeded: churn:%d is primary on every agent", r.GetToVersion())
	case droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK:
		return fmt.Sprintf("rolled back (%s); every agent is back on churn:%d", Tidy(r.GetReason()), r.GetFromVersion())
	case droverv1.RolloutState_ROLLOUT_STATE_PAUSED:
		return "paused: " + r.GetReason()
	}
	step := int(r.GetStep())
	if step >= n {
		return ""
	}
	s := r.GetSteps()[step]
	agents := stepAgents(r, step)
	if ready {
		bake := s.GetBake().AsDuration()
		if bake > 0 {
			return fmt.Sprintf("step %d/%d: %s ready, baking %v while the gates judge", step+1, n, strings.Join(agents, ", "), bake)
		}
		return fmt.Sprintf("step %d/%d: %s ready", step+1, n, strings.Join(agents, ", "))
	}
	return fmt.Sprintf("step %d/%d: churn:%d %s on %s", step+1, n, r.GetToVersion(), stepText(s), strings.Join(agents, ", "))
}

// stepAgents names the agents that run the new version from a step on.
func stepAgents(r *droverv1.Rollout, step int) []string {
	var out []string
	for _, a := range r.GetAgents() {
		if int(a.GetStep()) <= step {
			out = append(out, a.GetName())
		}
	}
	return out
}

// rolloutStatus is a running rollout's agents' phases.
func rolloutStatus(r *droverv1.Rollout) string {
	var parts []string
	for _, a := range r.GetAgents() {
		if int(a.GetStep()) <= int(r.GetStep()) {
			parts = append(parts, a.GetName()+" "+strings.ToLower(enumName(a.GetPhase().String(), "ROLLOUT_AGENT_PHASE_")))
		}
	}
	st := fmt.Sprintf("rollout %s, step %d/%d: %s", r.GetId(), min(int(r.GetStep())+1, len(r.GetSteps())), len(r.GetSteps()), strings.Join(parts, ", "))
	if js := r.GetJudgements(); len(js) > 0 {
		st += "; " + Tidy(js[len(js)-1].GetDetail())
	}
	return st
}

// stepText describes a step briefly.
func stepText(s *droverv1.RolloutStep) string {
	switch {
	case s.GetShadow():
		return "as a shadow"
	case s.GetWeight() == 100:
		return "blue-green"
	case s.GetWeight() > 0:
		return fmt.Sprintf("as a %d%% canary", s.GetWeight())
	}
	return "as primary"
}

// enumName turns "PREFIX_SOME_VALUE" into "some_value".
func enumName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func ptr[T any](v T) *T { return &v }

func seconds(d time.Duration) float64 {
	return float64(d.Round(100*time.Millisecond)) / float64(time.Second)
}
