package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Metric windows: every answered or refused inference request is counted
// in its model version's window for the current minute. A window closed
// is written to the store's journal "windows/<model>" (bounded, newest
// kept), where rollout gates and the hub's fleet view read error rates and
// latency percentiles from. Latencies go into a histogram of fixed,
// log-spaced buckets, the same on every agent, so that windows merge by
// adding counts.

// WindowLength is the default span of one metric window.
const WindowLength = time.Minute

// Latency buckets: bucket i holds latencies up to latencyBase·2^(i/4),
// from 25 µs to ~27 minutes, each 19% wider than the last; a quantile read
// from them is within 19% of the true one.
const (
	latencyBase    = 25e-6
	latencyBuckets = 104
)

// latencyBucket is the bucket a latency in seconds falls in.
func latencyBucket(seconds float64) int {
	if seconds <= latencyBase {
		return 0
	}
	return min(int(math.Ceil(4*math.Log2(seconds/latencyBase))), latencyBuckets-1)
}

// latencyUpper is the upper bound of bucket i, in seconds.
func latencyUpper(i int) float64 { return latencyBase * math.Exp2(float64(i)/4) }

// Window is one model version's requests over one WindowLength.
type Window struct {
	Model   string        `json:"model"`
	Version string        `json:"version"`
	Start   time.Time     `json:"start"`
	Length  time.Duration `json:"length_ns"`
	// Requests counts every request; ClientErrors those refused as the
	// caller's fault (4xx), ServerErrors those the agent or model failed
	// (5xx). Rows counts the rows answered.
	Requests     uint64 `json:"requests"`
	Rows         uint64 `json:"rows"`
	ClientErrors uint64 `json:"client_errors"`
	ServerErrors uint64 `json:"server_errors"`
	// For a shadow version: rows compared with the primary's answers, and
	// how many agreed.
	ShadowRows   uint64 `json:"shadow_rows,omitempty"`
	ShadowAgreed uint64 `json:"shadow_agreed,omitempty"`
	// Feedback joined to the version's answers in the window.
	Feedback Feedback `json:"feedback"`
	// Latency counts answered requests by latency bucket (see
	// LatencyQuantile), as {bucket: count}.
	Latency map[int]uint64 `json:"latency"`
	// P50, P95 and P99 are answered requests' latency quantiles in
	// seconds, from the histogram.
	P50 float64 `json:"p50_seconds"`
	P95 float64 `json:"p95_seconds"`
	P99 float64 `json:"p99_seconds"`
}

// Feedback is what labels joined to a version's answers add up to.
type Feedback struct {
	Labeled     uint64  `json:"labeled_rows"`
	Correct     uint64  `json:"correct_rows"`
	LogLossSum  float64 `json:"log_loss_sum"`
	LogLossRows uint64  `json:"log_loss_rows"`
	TP          uint64  `json:"true_positives"`
	FP          uint64  `json:"false_positives"`
	FN          uint64  `json:"false_negatives"`
	AbsErrSum   float64 `json:"absolute_error_sum"`
	SqErrSum    float64 `json:"squared_error_sum"`
	// Accuracy, F1 (the positive class's, for two classes), LogLoss, MAE
	// and RMSE, over the labelled rows; absent without labels.
	Accuracy *float64 `json:"accuracy,omitempty"`
	F1       *float64 `json:"f1,omitempty"`
	LogLoss  *float64 `json:"log_loss,omitempty"`
	MAE      *float64 `json:"mae,omitempty"`
	RMSE     *float64 `json:"rmse,omitempty"`
}

func (f *Feedback) add(s feedbackScore) {
	f.Labeled += s.rows
	if s.classificationOK {
		f.Correct += s.correct
	}
	f.LogLossSum += s.logLoss
	f.LogLossRows += s.logLossRows
	f.TP, f.FP, f.FN = f.TP+s.tp, f.FP+s.fp, f.FN+s.fn
	f.AbsErrSum += s.absErr
	f.SqErrSum += s.sqErr
}

func (f *Feedback) merge(o Feedback) {
	f.Labeled += o.Labeled
	f.Correct += o.Correct
	f.LogLossSum += o.LogLossSum
	f.LogLossRows += o.LogLossRows
	f.TP, f.FP, f.FN = f.TP+o.TP, f.FP+o.FP, f.FN+o.FN
	f.AbsErrSum += o.AbsErrSum
	f.SqErrSum += o.SqErrSum
}

// summarise fills in the measures from the counts.
func (f *Feedback) summarise() {
	f.Accuracy, f.F1, f.LogLoss, f.MAE, f.RMSE = nil, nil, nil, nil, nil
	if f.Labeled == 0 {
		return
	}
	n := float64(f.Labeled)
	if f.AbsErrSum > 0 || f.SqErrSum > 0 {
		mae, rmse := f.AbsErrSum/n, math.Sqrt(f.SqErrSum/n)
		f.MAE, f.RMSE = &mae, &rmse
		return
	}
	acc := float64(f.Correct) / n
	f.Accuracy = &acc
	if d := 2*f.TP + f.FP + f.FN; d > 0 {
		f1 := 2 * float64(f.TP) / float64(d)
		f.F1 = &f1
	}
	if f.LogLossRows > 0 {
		ll := f.LogLossSum / float64(f.LogLossRows)
		f.LogLoss = &ll
	}
}

// observeFeedback adds joined labels to a version's current window.
func (m *metricWindows) observeFeedback(model, version string, s feedbackScore) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	k := windowKey{model, version}
	w := m.open[k]
	if w == nil {
		w = &liveWindow{}
		m.open[k] = w
	}
	w.fb.add(s)
}

// proto is the window as the hub receives it.
func (w *Window) proto() *droverv1.MetricWindow {
	version, _ := strconv.ParseUint(w.Version, 10, 64)
	p := &droverv1.MetricWindow{Model: w.Model, Version: version, Start: timestamppb.New(w.Start), Length: durationpb.New(w.Length),
		Requests: w.Requests, Rows: w.Rows, ClientErrors: w.ClientErrors, ServerErrors: w.ServerErrors,
		ShadowRows: w.ShadowRows, ShadowAgreed: w.ShadowAgreed, Latency: map[int32]uint64{},
		LabeledRows: w.Feedback.Labeled, CorrectRows: w.Feedback.Correct, LogLossSum: w.Feedback.LogLossSum, LogLossRows: w.Feedback.LogLossRows,
		TruePositives: w.Feedback.TP, FalsePositives: w.Feedback.FP, FalseNegatives: w.Feedback.FN,
		AbsoluteErrorSum: w.Feedback.AbsErrSum, SquaredErrorSum: w.Feedback.SqErrSum}
	for b, n := range w.Latency {
		p.Latency[int32(b)] = n
	}
	return p
}

// ErrorRate is the share of requests the agent or model failed.
func (w *Window) ErrorRate() float64 {
	if w.Requests == 0 {
		return 0
	}
	return float64(w.ServerErrors) / float64(w.Requests)
}

// Merge adds another window's counts (of the same layout) into w.
func (w *Window) Merge(o *Window) {
	w.Requests += o.Requests
	w.Rows += o.Rows
	w.ClientErrors += o.ClientErrors
	w.ServerErrors += o.ServerErrors
	w.ShadowRows += o.ShadowRows
	w.ShadowAgreed += o.ShadowAgreed
	w.Feedback.merge(o.Feedback)
	if w.Latency == nil {
		w.Latency = map[int]uint64{}
	}
	for b, n := range o.Latency {
		w.Latency[b] += n
	}
	w.summarise()
}

// LatencyQuantile estimates the q-quantile (0 < q ≤ 1) of answered
// requests' latency, in seconds: the upper bound of the bucket it falls
// in. Zero without answered requests.
func (w *Window) LatencyQuantile(q float64) float64 {
	var total uint64
	for _, n := range w.Latency {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for _, b := range slices.Sorted(maps.Keys(w.Latency)) {
		if seen += w.Latency[b]; seen >= rank {
			return latencyUpper(b)
		}
	}
	return latencyUpper(latencyBuckets - 1)
}

func (w *Window) summarise() {
	w.P50, w.P95, w.P99 = w.LatencyQuantile(0.5), w.LatencyQuantile(0.95), w.LatencyQuantile(0.99)
	w.Feedback.summarise()
}

// metricWindows keeps the current minute's windows and writes closed ones
// to the store.
type metricWindows struct {
	st     *store.Store
	keep   int // windows per model journal
	length time.Duration
	logger *slog.Logger
	now    func() time.Time
	// send, if set, is given every closed window for the hub.
	send func(*Window)

	mu     sync.Mutex
	start  time.Time
	open   map[windowKey]*liveWindow
	closed []*Window // waiting to be written
}

type windowKey struct{ model, version string }

// liveWindow is a window being counted: counts, and latency buckets as a
// dense array (cheap to add to on the prediction path).
type liveWindow struct {
	requests, rows, clientErrors, serverErrors uint64
	shadowRows, shadowAgreed                   uint64
	latency                                    [latencyBuckets]uint64
	fb                                         Feedback
}

func newMetricWindows(st *store.Store, keep int, length time.Duration, logger *slog.Logger) *metricWindows {
	if length <= 0 {
		length = WindowLength
	}
	return &metricWindows{st: st, keep: keep, length: length, logger: logger, now: time.Now, open: map[windowKey]*liveWindow{}}
}

// observeShadow counts a shadow version's rows compared with the
// primary's answers.
func (m *metricWindows) observeShadow(model, version string, agreed, rows int) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	k := windowKey{model, version}
	w := m.open[k]
	if w == nil {
		w = &liveWindow{}
		m.open[k] = w
	}
	w.shadowRows += uint64(rows)
	w.shadowAgreed += uint64(agreed)
}

// observe counts an inference request in its window.
func (m *metricWindows) observe(o oip.Observation) {
	if o.Status == http.StatusNotFound {
		return // no such model: nothing to count it against
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	k := windowKey{o.Model, o.Version}
	w := m.open[k]
	if w == nil {
		w = &liveWindow{}
		m.open[k] = w
	}
	w.requests++
	switch {
	case o.Status == http.StatusOK:
		w.rows += uint64(o.Rows)
		w.latency[latencyBucket(o.Duration.Seconds())]++
	case o.Status >= 500:
		w.serverErrors++
	default:
		w.clientErrors++
	}
}

// rollLocked closes the open windows once their minute has passed.
func (m *metricWindows) rollLocked(now time.Time) {
	start := now.Truncate(m.length)
	if start.Equal(m.start) {
		return
	}
	for k, lw := range m.open {
		m.closed = append(m.closed, lw.window(k, m.start, m.length))
	}
	clear(m.open)
	m.start = start
}

func (lw *liveWindow) window(k windowKey, start time.Time, length time.Duration) *Window {
	w := &Window{Model: k.model, Version: k.version, Start: start.UTC(), Length: length, Requests: lw.requests, Rows: lw.rows,
		ClientErrors: lw.clientErrors, ServerErrors: lw.serverErrors, ShadowRows: lw.shadowRows, ShadowAgreed: lw.shadowAgreed,
		Feedback: lw.fb, Latency: map[int]uint64{}}
	for b, n := range lw.latency {
		if n > 0 {
			w.Latency[b] = n
		}
	}
	w.summarise()
	return w
}

// Current returns the windows being counted now.
func (m *metricWindows) Current() []*Window {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(m.now())
	out := make([]*Window, 0, len(m.open))
	for k, lw := range m.open {
		out = append(out, lw.window(k, m.start, m.length))
	}
	return out
}

// flush writes the closed windows to their models' journals.
func (m *metricWindows) flush() {
	m.mu.Lock()
	m.rollLocked(m.now())
	closed := m.closed
	m.closed = nil
	m.mu.Unlock()
	byModel := map[string][][]byte{}
	for _, w := range closed {
		if m.send != nil {
			m.send(w)
		}
		b, err := json.Marshal(w)
		if err != nil {
			continue
		}
		byModel[w.Model] = append(byModel[w.Model], b)
	}
	for model, recs := range byModel {
		j, err := m.st.Journal("windows/"+model, m.keep)
		if err == nil {
			_, err = j.Append(recs...)
		}
		if err != nil {
			m.logger.Warn("metric windows not stored", "model", model, "windows", len(recs), "err", err)
		}
	}
}

// run writes closed windows every few seconds until ctx ends, then once
// more, closing the current ones.
func (m *metricWindows) run(ctx context.Context) {
	tick := time.NewTicker(min(5*time.Second, m.length))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			for k, lw := range m.open {
				m.closed = append(m.closed, lw.window(k, m.start, m.length))
			}
			clear(m.open)
			m.mu.Unlock()
			m.flush()
			return
		case <-tick.C:
			m.flush()
		}
	}
}

// Windows returns a model's stored windows, oldest first, at most limit
// of the newest.
func (m *metricWindows) Windows(model string, limit int) ([]*Window, error) {
	j, err := m.st.Journal("windows/"+model, m.keep)
	if err != nil {
		return nil, err
	}
	st := j.Stats()
	from := st.First
	if st.Len > limit {
		from = st.Next - uint64(limit)
	}
	var out []*Window
	err = j.Scan(from, limit, func(_ uint64, rec []byte) error {
		w := &Window{}
		if err := json.Unmarshal(rec, w); err != nil {
			return err
		}
		out = append(out, w)
		return nil
	})
	return out, err
}

// handleWindows answers GET /v1/windows?model=M[&limit=N]: the model's
// stored windows and the ones being counted.
func (a *Agent) handleWindows(w http.ResponseWriter, r *http.Request) {
	model := r.URL.Query().Get("model")
	if model == "" {
		http.Error(w, "model: required", http.StatusBadRequest)
		return
	}
	limit := 60
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			http.Error(w, "limit: want a positive number", http.StatusBadRequest)
			return
		}
		limit = n
	}
	stored, err := a.windows.Windows(model, limit)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	current := slices.DeleteFunc(a.windows.Current(), func(w *Window) bool { return w.Model != model })
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Model   string    `json:"model"`
		Stored  []*Window `json:"windows"`
		Current []*Window `json:"current"`
	}{model, append([]*Window{}, stored...), append([]*Window{}, current...)})
}
