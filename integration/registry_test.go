package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/anishathalye/porcupine"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// The registry is checked for linearizability as a set of objects, one per
// model: its latest version number and where its "champion" alias points.
// Three kinds of operation run against it from several clients at once:
// push (upload an artifact, create the next version), alias (point champion
// at a version the client has seen) and read (a linearizable GetModel).

type opKind int

const (
	opPush opKind = iota
	opAlias
	opRead
)

type regInput struct {
	model   string
	kind    opKind
	version uint64 // alias: the target
}

type outcome int

const (
	ok      outcome = iota
	refused         // the hub said no, definitely: nothing changed
	unknown         // the write may or may not have happened
)

type regOutput struct {
	result   outcome
	version  uint64 // push: the number assigned
	latest   uint64 // read
	champion uint64 // read
}

type regState struct {
	latest, champion uint64
}

var registryModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byModel := map[string][]porcupine.Operation{}
		var names []string
		for _, op := range history {
			m := op.Input.(regInput).model
			if _, ok := byModel[m]; !ok {
				names = append(names, m)
			}
			byModel[m] = append(byModel[m], op)
		}
		var out [][]porcupine.Operation
		for _, m := range names {
			out = append(out, byModel[m])
		}
		return out
	},
	Init: func() []any { return []any{regState{}} },
	Step: func(s, in, out any) []any {
		st, i, o := s.(regState), in.(regInput), out.(regOutput)
		switch i.kind {
		case opPush:
			// Unknown pushes are resolved against the final state before
			// checking, so a push is always ok here.
			if o.version == st.latest+1 {
				return []any{regState{latest: o.version, champion: st.champion}}
			}
		case opAlias:
			exists := i.version >= 1 && i.version <= st.latest
			moved := regState{latest: st.latest, champion: i.version}
			switch {
			case o.result == ok && exists:
				return []any{moved}
			case o.result == refused && !exists:
				return []any{st}
			case o.result == unknown && exists:
				return []any{st, moved}
			case o.result == unknown:
				return []any{st}
			}
		case opRead:
			if o.latest == st.latest && o.champion == st.champion {
				return []any{st}
			}
		}
		return nil
	},
	DescribeOperation: func(in, out any) string {
		i, o := in.(regInput), out.(regOutput)
		switch i.kind {
		case opPush:
			return fmt.Sprintf("%s push -> %d", i.model, o.version)
		case opAlias:
			return fmt.Sprintf("%s champion=%d -> %v", i.model, i.version, o.result)
		default:
			return fmt.Sprintf("%s read -> latest %d champion %d", i.model, o.latest, o.champion)
		}
	},
}

// workload runs registry operations and records their history.
type workload struct {
	cl     *client.Client
	start  time.Time
	models []string

	mu      sync.Mutex
	history []porcupine.Operation
	// pushes whose outcome is unknown, by artifact digest, to resolve later.
	pending map[string]porcupine.Operation
	acked   map[string]uint64 // digest -> version, for acknowledged pushes

	writesOK atomic.Int64
	errors   atomic.Int64
	// killedAt is when the leader was killed; firstAfterKill is when the
	// first write called after it was acknowledged.
	killedAt       atomic.Int64
	firstAfterKill atomic.Int64
}

// acked notes an acknowledged write made between call and ret.
func (w *workload) ackedWrite(call, ret int64) {
	w.writesOK.Add(1)
	if k := w.killedAt.Load(); k != 0 && call > k {
		w.firstAfterKill.CompareAndSwap(0, ret)
	}
}

func (w *workload) now() int64 { return time.Since(w.start).Nanoseconds() }

func (w *workload) record(op porcupine.Operation) {
	w.mu.Lock()
	w.history = append(w.history, op)
	w.mu.Unlock()
}

func classify(err error) outcome {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodeFailedPrecondition, connect.CodeInvalidArgument, connect.CodeAlreadyExists:
		return refused
	}
	return unknown
}

// run has one client work on one model until ctx ends.
func (w *workload) run(ctx context.Context, id int, model string, seed uint64) {
	r := rand.New(rand.NewPCG(seed, uint64(id)))
	var seen []uint64
	for n := 0; ctx.Err() == nil; n++ {
		opCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		switch p := r.IntN(10); {
		case p < 4:
			art := []byte(fmt.Sprintf("%s artifact from client %d op %d %d", model, id, n, r.Uint64()))
			d := digest.FromBytes(art)
			up, err := w.cl.Upload(opCtx, bytes.NewReader(art), int64(len(art)), d, nil)
			if err != nil {
				w.errors.Add(1)
				break // no version was created: nothing to record
			}
			call := w.now()
			resp, err := w.cl.Models.CreateVersion(opCtx, &droverv1.CreateVersionRequest{Model: model, Artifact: up.BlobRef()})
			ret := w.now()
			op := porcupine.Operation{ClientId: id, Input: regInput{model: model, kind: opPush}, Call: call, Return: ret}
			switch {
			case err == nil:
				v := resp.GetVersion().GetVersion()
				seen = append(seen, v)
				op.Output = regOutput{result: ok, version: v}
				w.record(op)
				w.mu.Lock()
				w.acked[d.String()] = v
				w.mu.Unlock()
				w.ackedWrite(call, ret)
			case classify(err) == unknown:
				w.errors.Add(1)
				w.mu.Lock()
				w.pending[d.String()] = op
				w.mu.Unlock()
			default:
				w.errors.Add(1) // refused: nothing happened
			}
		case p < 7 && len(seen) > 0:
			v := seen[r.IntN(len(seen))]
			call := w.now()
			_, err := w.cl.Models.SetAlias(opCtx, &droverv1.SetAliasRequest{Model: model, Alias: "champion", Version: v})
			ret := w.now()
			out := regOutput{result: ok}
			if err != nil {
				w.errors.Add(1)
				out.result = classify(err)
			} else {
				w.ackedWrite(call, ret)
			}
			if out.result == unknown {
				ret = 1 << 62 // it may take effect at any time from now on
			}
			w.record(porcupine.Operation{ClientId: id, Input: regInput{model: model, kind: opAlias, version: v}, Call: call, Output: out, Return: ret})
		default:
			call := w.now()
			resp, err := w.cl.Models.GetModel(opCtx, &droverv1.GetModelRequest{Name: model})
			ret := w.now()
			if err != nil {
				w.errors.Add(1) // a failed read observes nothing
				break
			}
			w.record(porcupine.Operation{ClientId: id, Input: regInput{model: model, kind: opRead}, Call: call, Return: ret,
				Output: regOutput{result: ok, latest: resp.GetModel().GetLatestVersion(), champion: resp.GetModel().GetAliases()["champion"]}})
		}
		cancel()
		time.Sleep(time.Duration(r.IntN(4)) * time.Millisecond)
	}
}

// resolve settles pushes whose outcome was unknown: a version with the
// artifact's digest exists if and only if the push happened. It returns
// the number settled each way.
func (w *workload) resolve(t *testing.T, cl *client.Client) (happened, didNot int) {
	t.Helper()
	byDigest := map[string]uint64{}
	for _, m := range w.models {
		resp, err := cl.Models.GetModel(t.Context(), &droverv1.GetModelRequest{Name: m})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range resp.GetVersions() {
			byDigest[v.GetArtifact().GetDigest()] = v.GetVersion()
		}
	}
	for d, v := range w.acked {
		if byDigest[d] != v {
			t.Errorf("acknowledged push lost: %s was version %d, now %d", d, v, byDigest[d])
		}
	}
	for d, op := range w.pending {
		v, found := byDigest[d]
		if !found {
			didNot++
			continue
		}
		op.Output = regOutput{result: ok, version: v}
		op.Return = 1 << 62
		w.history = append(w.history, op)
		happened++
	}
	return happened, didNot
}

// TestRegistryLinearizableThroughKill9 runs a three-node hub as real
// processes, drives registry operations at it from several clients, kills
// the leader with SIGKILL in the middle, keeps going, restarts the killed
// node, and then checks that no acknowledged write was lost, that every node
// ends with the same state, that every artifact can still be fetched from
// every node, and that the whole history is linearizable.
func TestRegistryLinearizableThroughKill9(t *testing.T) {
	c := startCluster(t, 3)
	cl := c.client()
	phase := 2 * time.Second
	if testing.Short() {
		phase = time.Second
	}
	w := &workload{cl: cl, start: time.Now(), models: []string{"churn", "fraud"},
		pending: map[string]porcupine.Operation{}, acked: map[string]uint64{}}
	for _, m := range w.models {
		if _, err := cl.Models.CreateModel(t.Context(), &droverv1.CreateModelRequest{Name: m}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() { w.run(ctx, i, w.models[i%len(w.models)], 42) })
	}

	time.Sleep(phase)
	leader := c.leader()
	before := w.writesOK.Load()
	w.killedAt.Store(w.now())
	leader.kill()
	t.Logf("killed the leader %s after %d acknowledged writes", leader.name, before)
	hubtest.WaitFor(t, 15*time.Second, func() error {
		if w.firstAfterKill.Load() == 0 {
			return fmt.Errorf("no write made since the kill has been acknowledged")
		}
		return nil
	})
	t.Logf("the first write made after the kill was acknowledged %v after it",
		time.Duration(w.firstAfterKill.Load()-w.killedAt.Load()).Round(time.Millisecond))
	time.Sleep(phase)
	leader.start()
	leader.waitReady(20 * time.Second)
	time.Sleep(phase)
	stop()
	wg.Wait()

	index := c.waitConverged(30 * time.Second)
	happened, didNot := w.resolve(t, cl)
	t.Logf("%d operations, %d acknowledged writes, %d errors; unknown pushes: %d happened, %d did not; converged at index %d",
		len(w.history), w.writesOK.Load(), w.errors.Load(), happened, didNot, index)
	if w.writesOK.Load() <= before {
		t.Fatal("no writes were acknowledged after the kill")
	}

	// The CLI, as an operator would run it, agrees that the replicas match.
	out, err := exec.Command(droverBin, "--addr", strings.Join(c.addrs(), ","), "--token", c.token, "--json", "cluster", "status", "--verify").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(`"consistent": true`)) {
		t.Errorf("drover cluster status --verify: %v\n%s", err, out)
	}

	// Every node serves every acknowledged artifact, verified.
	var digests []string
	for d := range w.acked {
		digests = append(digests, d)
	}
	slices.Sort(digests)
	for _, h := range c.hubs {
		hc := c.clientFor(h)
		for _, d := range digests[:min(len(digests), 10)] {
			dst := filepath.Join(t.TempDir(), "a")
			if err := hc.DownloadFile(t.Context(), digest.MustParse(d), -1, dst, nil); err != nil {
				t.Errorf("%s cannot serve %s: %v", h.name, d, err)
			}
			os.Remove(dst)
		}
	}

	res, info := porcupine.CheckOperationsVerbose(registryModel.ToModel(), w.history, time.Minute)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), "drover-linearizability.html")
		if err := porcupine.VisualizePath(registryModel.ToModel(), info, path); err == nil {
			t.Logf("visualisation of the history: %s", path)
		}
		t.Fatal("the registry history is not linearizable")
	default:
		t.Fatal("the linearizability check timed out")
	}
}

// TestRegistryModelCatchesViolations makes sure the checker above can fail:
// a read that misses an acknowledged alias move, and two pushes given the
// same number, are not linearizable.
func TestRegistryModelCatchesViolations(t *testing.T) {
	model := registryModel.ToModel()
	push := func(client int, call, ret int64, v uint64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: regInput{model: "m", kind: opPush}, Call: call, Return: ret, Output: regOutput{version: v}}
	}
	alias := func(call, ret int64, v uint64, r outcome) porcupine.Operation {
		return porcupine.Operation{ClientId: 1, Input: regInput{model: "m", kind: opAlias, version: v}, Call: call, Return: ret, Output: regOutput{result: r}}
	}
	read := func(call, ret int64, latest, champion uint64) porcupine.Operation {
		return porcupine.Operation{ClientId: 2, Input: regInput{model: "m", kind: opRead}, Call: call, Return: ret, Output: regOutput{latest: latest, champion: champion}}
	}
	good := []porcupine.Operation{push(0, 0, 10, 1), push(0, 11, 20, 2), alias(21, 30, 2, ok), read(25, 40, 2, 0), read(41, 50, 2, 2)}
	if !porcupine.CheckOperations(model, good) {
		t.Fatal("a linearizable history was rejected")
	}
	stale := []porcupine.Operation{push(0, 0, 10, 1), alias(11, 20, 1, ok), read(21, 30, 1, 0)}
	if porcupine.CheckOperations(model, stale) {
		t.Fatal("a stale read after an acknowledged alias move was accepted")
	}
	dup := []porcupine.Operation{push(0, 0, 10, 1), push(1, 0, 10, 1)}
	if porcupine.CheckOperations(model, dup) {
		t.Fatal("two pushes given the same version were accepted")
	}
	maybe := []porcupine.Operation{push(0, 0, 10, 1), alias(11, 1<<62, 1, unknown), read(21, 30, 1, 0), read(31, 40, 1, 1)}
	if !porcupine.CheckOperations(model, maybe) {
		t.Fatal("an alias move of unknown outcome that took effect late was rejected")
	}
	backwards := []porcupine.Operation{push(0, 0, 10, 1), alias(11, 1<<62, 1, unknown), read(21, 30, 1, 1), read(31, 40, 1, 0)}
	if porcupine.CheckOperations(model, backwards) {
		t.Fatal("reads that saw an alias move and then unsaw it were accepted")
	}
}
