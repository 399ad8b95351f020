package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/droverhq/drover/internal/churn"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Traffic: what an application does with the churn model. It asks the
// agents, in turn, who of a batch of customers is about to leave (the
// Open Inference Protocol, each request with an id), and, as it learns who
// really left — a moment later — posts the true labels to the same agent
// as feedback by that id. The customers come from the bundled generator,
// at the drift level set; the answers are scored here too, per answering
// version, for the summary.

const (
	// trafficRows is the number of customers in one request.
	trafficRows = 40
	// trafficPause is the pause between requests.
	trafficPause = 30 * time.Millisecond
	// trafficSeed is the first request's customers' seed (the bundled
	// splits use 1 and 2).
	trafficSeed = 1000
	// feedbackDelay is how long after its answer a request's labels are
	// posted. An agent writes the predictions it keeps for feedback to its
	// store once a second, and a label that comes before is not joined.
	feedbackDelay = 1500 * time.Millisecond
)

// Schema is the churn model's feature schema: the bundled data set's
// features, numbers as FP64 and categories as BYTES with their values.
func Schema() *droverv1.FeatureSchema {
	fs := &droverv1.FeatureSchema{}
	for _, f := range churn.Features() {
		in := &droverv1.Feature{Name: f.Name, Datatype: "FP64", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC, Description: f.Description}
		if f.Categorical {
			in.Datatype, in.Kind, in.Categories = "BYTES", droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, f.Categories
		}
		fs.Inputs = append(fs.Inputs, in)
	}
	return fs
}

// liveKey is a version's answers to one kind of traffic.
type liveKey struct {
	version string
	drifted bool
}

// liveCount counts a version's answers and how many were right.
type liveCount struct {
	rows, right int
}

// traffic sends predictions and feedback until stopped.
type traffic struct {
	agents []string // serve addresses
	schema *droverv1.FeatureSchema
	http   *http.Client
	drift  atomic.Uint64 // math.Float64bits of the drift level
	// feedback holds the labels not posted yet, oldest first.
	feedback chan pendingFeedback

	mu       sync.Mutex
	live     map[liveKey]*liveCount
	requests int
	rows     int
	failed   int
	joined   int
	lastErr  string
}

func newTraffic(agents []string) *traffic {
	return &traffic{agents: agents, schema: Schema(), http: &http.Client{Timeout: 10 * time.Second}, live: map[liveKey]*liveCount{},
		feedback: make(chan pendingFeedback, 1024)}
}

// pendingFeedback is a request's labels, to post to its agent when due.
type pendingFeedback struct {
	due   time.Time
	agent string
	body  []byte
}

// setDrift sets the drift level of the customers sent from now on.
func (t *traffic) setDrift(d float64) { t.drift.Store(math.Float64bits(d)) }

func (t *traffic) driftLevel() float64 { return math.Float64frombits(t.drift.Load()) }

// run sends requests, and their feedback, until ctx ends.
func (t *traffic) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { t.postFeedback(ctx) })
	for seq := 0; ctx.Err() == nil; seq++ {
		d := t.driftLevel()
		customers := churn.Generate(churn.Options{Rows: trafficRows, Seed: uint64(trafficSeed + seq), Drift: d})
		t.send(ctx, seq, t.agents[seq%len(t.agents)], customers, d > 0)
		select {
		case <-ctx.Done():
		case <-time.After(trafficPause):
		}
	}
}

// inferBody is an Open Inference Protocol request for the customers.
func (t *traffic) inferBody(id string, customers []churn.Customer) []byte {
	col := map[string]int{}
	for i, h := range churn.Header() {
		col[h] = i
	}
	records := make([][]string, len(customers))
	for i := range customers {
		records[i] = customers[i].Record()
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"id":%q,"inputs":[`, id)
	for i, f := range t.schema.GetInputs() {
		if i > 0 {
			b.WriteByte(',')
		}
		data := make([]string, len(records))
		for r, rec := range records {
			v := rec[col[f.GetName()]]
			if f.GetDatatype() == "BYTES" {
				v = strconv.Quote(v)
			}
			data[r] = v
		}
		fmt.Fprintf(&b, `{"name":%q,"datatype":%q,"shape":[%d],"data":[%s]}`, f.GetName(), f.GetDatatype(), len(records), strings.Join(data, ","))
	}
	b.WriteString("]}")
	return b.Bytes()
}

// inferResponse is the part of an answer the demo reads.
type inferResponse struct {
	ModelVersion string `json:"model_version"`
	Outputs      []struct {
		Name string          `json:"name"`
		Data json.RawMessage `json:"data"`
	} `json:"outputs"`
}

// send asks one agent about the customers and posts their true labels.
func (t *traffic) send(ctx context.Context, seq int, agent string, customers []churn.Customer, drifted bool) {
	id := fmt.Sprintf("demo-%d", seq)
	var answer inferResponse
	if err := t.post(ctx, "http://"+agent+"/v2/models/churn/infer", t.inferBody(id, customers), &answer); err != nil {
		if ctx.Err() == nil {
			t.fail(err)
		}
		return
	}
	var predicted []string
	for _, o := range answer.Outputs {
		if o.Name == "label" {
			_ = json.Unmarshal(o.Data, &predicted)
		}
	}
	labels := make([]string, len(customers))
	right := 0
	for i, c := range customers {
		labels[i] = map[bool]string{true: "yes", false: "no"}[c.Churn]
		if i < len(predicted) && predicted[i] == labels[i] {
			right++
		}
	}
	fb, _ := json.Marshal(map[string]any{"model": "churn", "items": []any{map[string]any{"id": id, "labels": labels}}})
	select {
	case t.feedback <- pendingFeedback{due: time.Now().Add(feedbackDelay), agent: agent, body: fb}:
	case <-ctx.Done():
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	t.requests++
	t.rows += len(customers)
	if len(predicted) == len(customers) {
		k := liveKey{answer.ModelVersion, drifted}
		if t.live[k] == nil {
			t.live[k] = &liveCount{}
		}
		t.live[k].rows += len(customers)
		t.live[k].right += right
	}
}

// postFeedback posts the labels as they come due, until ctx ends.
func (t *traffic) postFeedback(ctx context.Context) {
	for {
		var fb pendingFeedback
		select {
		case <-ctx.Done():
			return
		case fb = <-t.feedback:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(fb.due)):
		}
		var joined struct {
			Joined int `json:"joined"`
		}
		err := t.post(ctx, "http://"+fb.agent+"/v1/feedback", fb.body, &joined)
		t.mu.Lock()
		t.joined += joined.Joined
		if err != nil && ctx.Err() == nil {
			t.lastErr = "feedback: " + err.Error()
		}
		t.mu.Unlock()
	}
}

// post sends a JSON body and decodes a 200 answer into out.
func (t *traffic) post(ctx context.Context, url string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

func (t *traffic) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requests++
	t.failed++
	t.lastErr = err.Error()
}

// accuracy returns a version's share of right answers to the kind of
// traffic, and on how many rows; ok is false before it answered any.
func (t *traffic) accuracy(version uint64, drifted bool) (acc float64, rows int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.live[liveKey{strconv.FormatUint(version, 10), drifted}]
	if c == nil || c.rows == 0 {
		return 0, 0, false
	}
	return float64(c.right) / float64(c.rows), c.rows, true
}

// totals returns what was sent.
func (t *traffic) totals() TrafficSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TrafficSummary{Requests: t.requests, Rows: t.rows, Failed: t.failed, FeedbackJoined: t.joined, LastError: t.lastErr}
}
