package agent

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
)

// Feedback: ground-truth labels for answered predictions, by request id.
// The agent keeps the predictions it samples (--sample-rate) by request id
// for --feedback-retention; a label that finds its prediction is joined to
// it and counted in the answering version's metric window — rows
// labelled, rows right, log loss, and for two classes the positive
// class's true and false positives and false negatives (for F1); for a
// regression absolute and squared errors (MAE, RMSE). A label for a
// prediction not kept (not sampled, expired, never made) or labelled
// already is counted, not lost silently, and said so in the answer.

// loggedPrediction is what the agent keeps of a sampled prediction for
// feedback: the version that answered and its answer, row by row.
type loggedPrediction struct {
	Version string    `json:"v"`
	Time    time.Time `json:"t"`
	// Labels are a classifier's answers; Probabilities its class
	// probabilities, row by row, in Classes' order.
	Labels        []string    `json:"l,omitempty"`
	Classes       []string    `json:"c,omitempty"`
	Probabilities [][]float64 `json:"p,omitempty"`
	// Predictions are a regression's answers.
	Predictions []float64 `json:"y,omitempty"`
	// Inputs are the request's features, one value per row, for the
	// labelled data set a join adds to.
	Inputs []loggedColumn `json:"i,omitempty"`
}

// loggedColumn is one input of a logged request.
type loggedColumn struct {
	Name    string    `json:"n"`
	Numbers []float64 `json:"x,omitempty"`
	Strings []string  `json:"s,omitempty"`
}

// loggedOf extracts what feedback needs from an answered request.
func loggedOf(o oip.Observation, classes []string) (*loggedPrediction, bool) {
	lp := &loggedPrediction{Version: o.Version, Time: time.Now().UTC()}
	for _, t := range o.Response.Outputs {
		switch {
		case t.Name == outputLabel && t.Datatype == oip.Bytes:
			lp.Labels = t.Strings
		case t.Name == outputProbabilities && len(t.Shape) == 2 && len(classes) == int(t.Shape[1]):
			k := len(classes)
			for r := range int(t.Shape[0]) {
				lp.Probabilities = append(lp.Probabilities, t.Numbers[r*k:(r+1)*k])
			}
			lp.Classes = classes
		case t.Name == outputPrediction && t.Datatype != oip.Bytes:
			lp.Predictions = t.Numbers
		}
	}
	rows := len(lp.Labels) + len(lp.Predictions)
	for _, t := range o.Request.Inputs {
		if t.Len() != rows || len(t.Shape) == 0 {
			continue // not one value a row
		}
		c := loggedColumn{Name: t.Name}
		if t.Datatype == oip.Bytes {
			c.Strings = t.Strings
		} else {
			c.Numbers = t.Numbers
		}
		lp.Inputs = append(lp.Inputs, c)
	}
	return lp, rows > 0
}

// FeedbackItem is one request's labels: one per row of the request, as
// text for a classifier ("label" for a one-row request, or "labels"), as
// numbers for a regression ("value" or "values").
type FeedbackItem struct {
	ID     string    `json:"id"`
	Label  *string   `json:"label,omitempty"`
	Labels []string  `json:"labels,omitempty"`
	Value  *float64  `json:"value,omitempty"`
	Values []float64 `json:"values,omitempty"`
}

// FeedbackRequest is the body of POST /v1/feedback.
type FeedbackRequest struct {
	Model string         `json:"model"`
	Items []FeedbackItem `json:"items"`
}

// FeedbackResponse says what became of each item.
type FeedbackResponse struct {
	// Joined counts items whose prediction was found and scored.
	Joined int `json:"joined"`
	// Unknown lists the ids with no kept prediction (not sampled, expired
	// or never made); Duplicate those labelled before; Invalid those
	// whose labels do not fit their prediction, with why.
	Unknown []string          `json:"unknown"`
	Invalid map[string]string `json:"invalid"`
}

// feedbackBody bounds a feedback request.
const feedbackBody = 16 << 20

func (a *Agent) handleFeedback(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, feedbackBody))
	if err != nil {
		http.Error(w, "reading the request: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	var req FeedbackRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "not a feedback request: "+err.Error())
		return
	}
	if req.Model == "" || len(req.Items) == 0 {
		writeJSONError(w, http.StatusBadRequest, "a feedback request needs a model and items")
		return
	}
	// A label may follow its answer within the sampler's flush interval:
	// what it holds goes to the store first, so that it can be joined.
	if a.samples != nil {
		a.samples.flush()
	}
	// One request at a time: a prediction is joined to one label only.
	a.feedbackMu.Lock()
	defer a.feedbackMu.Unlock()
	resp := FeedbackResponse{Unknown: []string{}, Invalid: map[string]string{}}
	type join struct {
		version string
		score   feedbackScore
	}
	var (
		joins    []join
		labelled [][]byte
		taken    []string // predictions found, joined or not
		invalid  int
	)
	seen := map[string]bool{}
	for i, it := range req.Items {
		if it.ID == "" {
			resp.Invalid[fmt.Sprintf("items[%d]", i)] = "no id"
			invalid++
			continue
		}
		raw, err := a.store.Prediction(req.Model, it.ID)
		if errors.Is(err, store.ErrNotFound) || seen[it.ID] {
			resp.Unknown = append(resp.Unknown, it.ID)
			continue
		}
		if err != nil {
			writeJSONError(w, http.StatusInternalServerError, err.Error())
			return
		}
		seen[it.ID] = true
		taken = append(taken, it.ID)
		var lp loggedPrediction
		if err := json.Unmarshal(raw, &lp); err != nil {
			resp.Invalid[it.ID] = "the kept prediction does not decode"
			continue
		}
		score, err := scoreFeedback(&lp, it)
		if err != nil {
			resp.Invalid[it.ID] = err.Error()
			invalid++
			continue
		}
		joins = append(joins, join{lp.Version, score})
		labelled = append(labelled, labelledRows(it, &lp)...)
	}
	// The labelled rows are stored before their predictions are deleted
	// and anything is counted: if they cannot be, the request fails whole,
	// and sent again it finds every prediction still there.
	if len(labelled) > 0 {
		j, err := a.store.Journal("labelled/"+req.Model, a.labelledKeep())
		if err == nil {
			_, err = j.Append(labelled...)
		}
		if err != nil {
			a.logger.Warn("labelled rows not kept; the feedback request is refused", "model", req.Model, "rows", len(labelled), "err", err)
			status := http.StatusInternalServerError
			switch {
			case errors.Is(err, store.ErrNoSpace):
				status = http.StatusServiceUnavailable
			case errors.Is(err, store.ErrOverBound):
				status = http.StatusRequestEntityTooLarge
			}
			writeJSONError(w, status, "labels not stored, nothing joined: "+err.Error())
			return
		}
	}
	if err := a.store.DeletePredictions(req.Model, taken); err != nil {
		// The rows are kept; a later label for these requests would be
		// joined again.
		a.logger.Warn("joined predictions not deleted", "model", req.Model, "predictions", len(taken), "err", err)
	}
	for _, j := range joins {
		a.windows.observeFeedback(req.Model, j.version, j.score)
	}
	resp.Joined = len(joins)
	for result, n := range map[string]int{"joined": len(joins), "unknown": len(resp.Unknown), "invalid": invalid} {
		if n > 0 {
			a.feedback.WithLabelValues(req.Model, result).Add(float64(n))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// LabelledRow is one row of the labelled data set an agent builds from
// feedback: a logged prediction's features with its true label (or value).
type LabelledRow struct {
	ID       string         `json:"id"`
	Version  string         `json:"version"`
	Time     time.Time      `json:"time"`
	Features map[string]any `json:"features"`
	Label    *string        `json:"label,omitempty"`
	Value    *float64       `json:"value,omitempty"`
}

// labelledRows are a joined item's rows, encoded for the journal
// "labelled/<model>".
func labelledRows(it FeedbackItem, lp *loggedPrediction) [][]byte {
	labels := it.Labels
	if it.Label != nil {
		labels = append(slices.Clone(labels), *it.Label)
	}
	values := it.Values
	if it.Value != nil {
		values = append(slices.Clone(values), *it.Value)
	}
	rows := max(len(labels), len(values))
	out := make([][]byte, 0, rows)
	for r := range rows {
		row := LabelledRow{ID: it.ID, Version: lp.Version, Time: lp.Time, Features: map[string]any{}}
		for _, c := range lp.Inputs {
			switch {
			case r < len(c.Strings):
				row.Features[c.Name] = c.Strings[r]
			case r < len(c.Numbers):
				row.Features[c.Name] = c.Numbers[r]
			}
		}
		if r < len(labels) {
			row.Label = &labels[r]
		} else {
			row.Value = &values[r]
		}
		if b, err := json.Marshal(row); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// labelledKeep bounds the labelled rows kept per model.
func (a *Agent) labelledKeep() int {
	if a.cfg.SampleKeep > 0 {
		return a.cfg.SampleKeep
	}
	return 10_000
}

// handleLabelled answers GET /v1/labelled?model=M: the labelled rows the
// agent has kept, as CSV (see writeLabelledCSV), for a training data set.
func (a *Agent) handleLabelled(w http.ResponseWriter, r *http.Request) {
	model := r.URL.Query().Get("model")
	if model == "" {
		writeJSONError(w, http.StatusBadRequest, "model: required")
		return
	}
	rows, err := readLabelled(a.store, model, a.labelledKeep(), 0)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/csv")
	if err := writeLabelledCSV(w, rows); err != nil {
		a.logger.Debug("writing labelled rows", "model", model, "err", err)
	}
}

// readLabelled returns the newest max (0: all) labelled rows kept of a
// model, oldest first, from the journal labelled/<model> bounded by keep.
// A record that does not decode is skipped.
func readLabelled(st *store.Store, model string, keep, max int) ([]LabelledRow, error) {
	j, err := st.Journal("labelled/"+model, keep)
	if err != nil {
		return nil, err
	}
	stats := j.Stats()
	from := stats.First
	if max > 0 && stats.Next-stats.First > uint64(max) {
		from = stats.Next - uint64(max)
	}
	var rows []LabelledRow
	err = j.Scan(from, 0, func(_ uint64, rec []byte) error {
		var row LabelledRow
		if json.Unmarshal(rec, &row) == nil {
			rows = append(rows, row)
		}
		return nil
	})
	return rows, err
}

// writeLabelledCSV writes labelled rows as CSV: the columns id and
// version, the features of the first row in name order, then label (for
// a classifier's rows) or value (a regression's), the truth. A feature a row
// lacks is an empty cell. Package training's Assemble reads this format.
func writeLabelledCSV(w io.Writer, rows []LabelledRow) error {
	cw := csv.NewWriter(w)
	var names []string
	target := "label"
	if len(rows) > 0 {
		names = slices.Sorted(maps.Keys(rows[0].Features))
		if rows[0].Label == nil {
			target = "value"
		}
	}
	if err := cw.Write(append(append([]string{"id", "version"}, names...), target)); err != nil {
		return err
	}
	for _, row := range rows {
		rec := []string{row.ID, row.Version}
		for _, n := range names {
			switch v := row.Features[n].(type) {
			case string:
				rec = append(rec, v)
			case float64:
				rec = append(rec, strconv.FormatFloat(v, 'g', -1, 64))
			default:
				rec = append(rec, "")
			}
		}
		switch {
		case row.Label != nil:
			rec = append(rec, *row.Label)
		case row.Value != nil:
			rec = append(rec, strconv.FormatFloat(*row.Value, 'g', -1, 64))
		default:
			rec = append(rec, "")
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// feedbackScore is what a request's labels add to its version's window.
type feedbackScore struct {
	rows, correct    uint64
	logLoss          float64 // summed over rows with probabilities
	logLossRows      uint64
	tp, fp, fn       uint64 // the positive class (the second of two), for F1
	absErr, sqErr    float64
	regressionRows   uint64
	classificationOK bool
}

// scoreFeedback compares labels with the kept answers.
func scoreFeedback(lp *loggedPrediction, it FeedbackItem) (feedbackScore, error) {
	var s feedbackScore
	labels := it.Labels
	if it.Label != nil {
		labels = append(labels, *it.Label)
	}
	values := it.Values
	if it.Value != nil {
		values = append(values, *it.Value)
	}
	switch {
	case lp.Labels != nil:
		if len(labels) != len(lp.Labels) {
			return s, fmt.Errorf("%d labels for a request of %d rows", len(labels), len(lp.Labels))
		}
		positive := ""
		if len(lp.Classes) == 2 {
			positive = lp.Classes[1]
		}
		for r, want := range labels {
			got := lp.Labels[r]
			s.rows++
			if got == want {
				s.correct++
			}
			if positive != "" {
				switch {
				case got == positive && want == positive:
					s.tp++
				case got == positive:
					s.fp++
				case want == positive:
					s.fn++
				}
			}
			if r < len(lp.Probabilities) {
				if k := slices.Index(lp.Classes, want); k >= 0 {
					p := min(max(lp.Probabilities[r][k], 1e-15), 1-1e-15)
					s.logLoss -= math.Log(p)
					s.logLossRows++
				}
			}
		}
		s.classificationOK = true
	case lp.Predictions != nil:
		if len(values) != len(lp.Predictions) {
			return s, fmt.Errorf("%d values for a request of %d rows", len(values), len(lp.Predictions))
		}
		for r, want := range values {
			d := lp.Predictions[r] - want
			s.absErr += math.Abs(d)
			s.sqErr += d * d
			s.regressionRows++
			s.rows++
		}
	default:
		return s, errors.New("the kept prediction has no label or value to compare with")
	}
	return s, nil
}

func newFeedbackCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_agent_feedback_total",
		Help: "Feedback items, by model and result: joined to a kept prediction, unknown (not sampled, expired, or labelled already), invalid.",
	}, []string{"model", "result"})
}
