package fsm

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/internal/sketch"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func header(i int) *fsmv1.Header {
	return &fsmv1.Header{
		Actor:  &droverv1.Actor{TokenId: "tok1", Name: "ops", Role: droverv1.Role_ROLE_OPERATOR},
		Time:   timestamppb.New(t0.Add(time.Duration(i) * time.Second)),
		Reason: fmt.Sprintf("reason %d", i),
	}
}

// harness applies commands to an FSM at increasing indexes.
type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, f: New(logging.Discard())}
}

func (h *harness) apply(body Command) *Result {
	h.t.Helper()
	data, err := Encode(body)
	if err != nil {
		h.t.Fatalf("encode: %v", err)
	}
	h.index++
	res, _ := h.f.Apply(&raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data}).(*Result)
	if res == nil {
		h.t.Fatalf("apply %T returned no result", body)
	}
	return res
}

func (h *harness) mustApply(body Command) proto.Message {
	h.t.Helper()
	res := h.apply(body)
	if res.Err != nil {
		h.t.Fatalf("apply %T: %v", body, res.Err)
	}
	return res.Value
}

func (h *harness) refused(body Command, want state.Kind) {
	h.t.Helper()
	res := h.apply(body)
	if got := state.KindOf(res.Err); got != want {
		h.t.Fatalf("apply %T: got refusal %v (%v), want %v", body, got, res.Err, want)
	}
}

func blob(s string) *droverv1.BlobRef {
	return &droverv1.BlobRef{Digest: digest.FromBytes([]byte(s)).String(), SizeBytes: int64(len(s))}
}

func TestModelLifecycle(t *testing.T) {
	h := newHarness(t)
	m := h.mustApply(&fsmv1.ModelCreate{Header: header(1), Name: "churn", Description: "who leaves"}).(*droverv1.Model)
	if m.GetState() != droverv1.ModelState_MODEL_STATE_ACTIVE || m.GetCreateIndex() != 1 {
		t.Fatalf("created model = %v", m)
	}
	h.refused(&fsmv1.ModelCreate{Header: header(2), Name: "churn"}, state.KindAlreadyExists)
	h.refused(&fsmv1.ModelCreate{Header: header(2), Name: "Churn!"}, state.KindInvalid)

	for i := 1; i <= 3; i++ {
		v := h.mustApply(&fsmv1.VersionCreate{Header: header(10 + i), Version: &droverv1.ModelVersion{
			Model: "churn", Artifact: blob(fmt.Sprint(i)), Format: "drover-native", Runner: "native",
			Params: map[string]string{"l2": "0.1"}, Metrics: map[string]float64{"auc": 0.8},
			Schema: &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "tenure", Datatype: "FP64"}}}, ReferenceProfile: []byte{},
		}}).(*droverv1.ModelVersion)
		if v.GetVersion() != uint64(i) || v.GetState() != droverv1.VersionState_VERSION_STATE_READY {
			t.Fatalf("version %d = %v", i, v)
		}
	}
	// The list leaves out the large fields; one version has them.
	if vs := h.f.State().Snapshot().Versions("churn"); len(vs) != 3 || vs[0].GetSchema() != nil || vs[0].GetParams()["l2"] != "0.1" {
		t.Fatalf("versions list = %v", vs)
	}
	if v := h.f.State().Snapshot().Version("churn", 1); v.GetSchema() == nil {
		t.Fatalf("version 1 lost its schema: %v", v)
	}
	h.refused(&fsmv1.VersionCreate{Header: header(20), Version: &droverv1.ModelVersion{Model: "nope", Artifact: blob("x")}}, state.KindNotFound)
	h.refused(&fsmv1.VersionCreate{Header: header(20), Version: &droverv1.ModelVersion{Model: "churn", Artifact: &droverv1.BlobRef{Digest: "md5:abc"}}}, state.KindInvalid)
	h.refused(&fsmv1.VersionCreate{Header: header(20), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("y"), Lineage: &droverv1.Lineage{ParentVersion: 9}}}, state.KindNotFound)
	v := h.mustApply(&fsmv1.VersionCreate{Header: header(21), CreateModel: true, Version: &droverv1.ModelVersion{Model: "fraud", Artifact: blob("f")}}).(*droverv1.ModelVersion)
	if v.GetVersion() != 1 {
		t.Fatalf("auto-created model's first version = %d", v.GetVersion())
	}

	// Aliases: create, move, guarded move, idempotent move.
	res := h.mustApply(&fsmv1.AliasSet{Header: header(30), Model: "churn", Alias: "champion", Version: 2}).(*fsmv1.AliasSetResult)
	if res.GetPreviousVersion() != 0 || res.GetAlias().GetVersion() != 2 {
		t.Fatalf("alias set = %v", res)
	}
	two, three := uint64(2), uint64(3)
	h.refused(&fsmv1.AliasSet{Header: header(31), Model: "churn", Alias: "champion", Version: 3, ExpectedVersion: &three}, state.KindFailedPrecondition)
	res = h.mustApply(&fsmv1.AliasSet{Header: header(32), Model: "churn", Alias: "champion", Version: 3, ExpectedVersion: &two}).(*fsmv1.AliasSetResult)
	if res.GetPreviousVersion() != 2 || res.GetAlias().GetReason() != "reason 32" || res.GetAlias().GetUpdatedBy().GetName() != "ops" {
		t.Fatalf("guarded move = %v", res)
	}
	h.refused(&fsmv1.AliasSet{Header: header(33), Model: "churn", Alias: "champion", Version: 7}, state.KindNotFound)
	h.refused(&fsmv1.AliasSet{Header: header(33), Model: "churn", Alias: "latest", Version: 1}, state.KindInvalid)
	h.refused(&fsmv1.AliasSet{Header: header(33), Model: "churn", Alias: "42", Version: 1}, state.KindInvalid)

	// States: a rejected version needs force to be aliased; an aliased
	// version cannot be archived.
	h.mustApply(&fsmv1.VersionStateSet{Header: header(40), Model: "churn", Version: 1, State: droverv1.VersionState_VERSION_STATE_REJECTED})
	h.refused(&fsmv1.AliasSet{Header: header(41), Model: "churn", Alias: "candidate", Version: 1}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.AliasSet{Header: header(42), Model: "churn", Alias: "candidate", Version: 1, Force: true})
	h.refused(&fsmv1.VersionStateSet{Header: header(43), Model: "churn", Version: 3, State: droverv1.VersionState_VERSION_STATE_ARCHIVED}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.VersionStateSet{Header: header(44), Model: "churn", Version: 2, State: droverv1.VersionState_VERSION_STATE_ARCHIVED})
	h.refused(&fsmv1.AliasSet{Header: header(45), Model: "churn", Alias: "old", Version: 2}, state.KindFailedPrecondition)
	h.refused(&fsmv1.VersionStateSet{Header: header(46), Model: "churn", Version: 2, State: droverv1.VersionState_VERSION_STATE_UNSPECIFIED}, state.KindInvalid)

	// Reads see it all.
	view := h.f.State().Snapshot()
	got := view.Model("churn")
	if got.GetLatestVersion() != 3 || got.GetAliases()["champion"] != 3 || got.GetAliases()["candidate"] != 1 {
		t.Fatalf("model = %v", got)
	}
	if mv, err := view.ResolveVersion("churn", 0, "champion"); err != nil || mv.GetVersion() != 3 || len(mv.GetAliases()) != 1 {
		t.Fatalf("resolve champion = %v, %v", mv, err)
	}
	if _, err := view.ResolveVersion("churn", 0, "nope"); state.KindOf(err) != state.KindNotFound {
		t.Fatalf("resolve unknown alias: %v", err)
	}
	if mv, _ := view.ResolveVersion("churn", 0, ""); mv.GetVersion() != 3 {
		t.Fatalf("latest = %v", mv)
	}

	// Delete the alias, archive the model: no more versions.
	h.mustApply(&fsmv1.AliasDelete{Header: header(50), Model: "churn", Alias: "candidate"})
	h.refused(&fsmv1.AliasDelete{Header: header(51), Model: "churn", Alias: "candidate"}, state.KindNotFound)
	h.mustApply(&fsmv1.ModelArchive{Header: header(52), Name: "churn"})
	h.refused(&fsmv1.VersionCreate{Header: header(53), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("z")}}, state.KindFailedPrecondition)
	if n := len(h.f.State().Snapshot().Models(false)); n != 1 {
		t.Fatalf("listed %d active models, want 1 (fraud)", n)
	}
	h.mustApply(&fsmv1.ModelArchive{Header: header(54), Name: "churn", Undo: true})
	h.mustApply(&fsmv1.VersionCreate{Header: header(55), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("z")}})
}

func TestRefusedCommandChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.ModelCreate{Header: header(1), Name: "churn"})
	before := records(t, h.f)
	// A version whose metrics are not finite is refused whole: no version,
	// no change to the model, no audit event.
	bad := &droverv1.ModelVersion{Model: "churn", Artifact: blob("a"), Metrics: map[string]float64{"auc": 0.9, "loss": nanValue()}}
	h.refused(&fsmv1.VersionCreate{Header: header(2), Version: bad}, state.KindInvalid)
	if after := records(t, h.f); !equalRecords(before, after) {
		t.Fatalf("a refused command changed the state")
	}
	if got := h.f.State().Snapshot().Index(); got != 2 {
		t.Fatalf("applied index after a refusal = %d, want 2", got)
	}
}

func nanValue() float64 {
	var zero float64
	return zero / zero
}

func TestOversizedMetadataRefused(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.ModelCreate{Header: header(1), Name: "churn"})
	huge := &droverv1.ModelVersion{Model: "churn", Artifact: blob("a"), ReferenceProfile: make([]byte, state.MaxProfileBytes+1)}
	h.refused(&fsmv1.VersionCreate{Header: header(2), Version: huge}, state.KindInvalid)
	params := map[string]string{}
	for i := range state.MaxMapEntries + 1 {
		params[fmt.Sprint("k", i)] = "v"
	}
	h.refused(&fsmv1.VersionCreate{Header: header(3), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("a"), Params: params}}, state.KindInvalid)
	h.refused(&fsmv1.ModelCreate{Header: header(4), Name: "x", Description: string(make([]byte, state.MaxDescriptionLen+1))}, state.KindInvalid)
}

func TestTokensAndCluster(t *testing.T) {
	h := newHarness(t)
	hash := sha256.Sum256([]byte("secret"))
	admin := &fsmv1.TokenRecord{Token: &droverv1.Token{Id: "a1", Name: "bootstrap", Role: droverv1.Role_ROLE_ADMIN}, SecretHash: hash[:]}
	h.mustApply(&fsmv1.ClusterInit{Header: header(1), Meta: &fsmv1.ClusterMeta{ClusterId: "c1", PeerSecret: "p"}, AdminToken: admin})
	h.refused(&fsmv1.ClusterInit{Header: header(2), Meta: &fsmv1.ClusterMeta{ClusterId: "c2", PeerSecret: "p"}}, state.KindAlreadyExists)
	view := h.f.State().Snapshot()
	if view.ClusterMeta().GetClusterId() != "c1" || view.TokenByHash(hash[:]).GetToken().GetId() != "a1" {
		t.Fatalf("cluster init not visible")
	}
	h.refused(&fsmv1.TokenCreate{Header: header(3), Token: &fsmv1.TokenRecord{Token: &droverv1.Token{Id: "a2", Role: droverv1.Role_ROLE_VIEWER}, SecretHash: hash[:]}}, state.KindAlreadyExists)
	h.refused(&fsmv1.TokenCreate{Header: header(3), Token: &fsmv1.TokenRecord{Token: &droverv1.Token{Id: "a3"}, SecretHash: hash[:]}}, state.KindInvalid)
	h.mustApply(&fsmv1.TokenRevoke{Header: header(4), Id: "a1"})
	h.refused(&fsmv1.TokenRevoke{Header: header(5), Id: "a1"}, state.KindNotFound)
	if h.f.State().Snapshot().TokenByHash(hash[:]) != nil {
		t.Fatalf("revoked token still found")
	}

	h.mustApply(&fsmv1.NodeUpsert{Header: header(6), Node: &fsmv1.Node{Name: "hub-1", RaftAddress: "127.0.0.1:1", HttpAddress: "127.0.0.1:2"}})
	h.mustApply(&fsmv1.NodeUpsert{Header: header(7), Node: &fsmv1.Node{Name: "hub-1", RaftAddress: "127.0.0.1:1", HttpAddress: "127.0.0.1:3"}})
	if got := h.f.State().Snapshot().Node("hub-1").GetHttpAddress(); got != "127.0.0.1:3" {
		t.Fatalf("node http address = %q", got)
	}
	h.mustApply(&fsmv1.NodeRemove{Header: header(8), Name: "hub-1"})
	h.mustApply(&fsmv1.NodeRemove{Header: header(9), Name: "hub-1"}) // idempotent
	if len(h.f.State().Snapshot().Nodes()) != 0 {
		t.Fatalf("node not removed")
	}
}

func TestAuditTrail(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.ModelCreate{Header: header(1), Name: "churn"})
	h.mustApply(&fsmv1.ModelCreate{Header: header(2), Name: "churn2"})
	h.mustApply(&fsmv1.VersionCreate{Header: header(3), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("a")}})
	h.refused(&fsmv1.ModelCreate{Header: header(4), Name: "churn"}, state.KindAlreadyExists)
	h.mustApply(&fsmv1.AliasSet{Header: header(5), Model: "churn", Alias: "champion", Version: 1})
	view := h.f.State().Snapshot()
	evs, more := view.AuditEvents(state.AuditQuery{Resource: "model/churn", Limit: 10})
	if more || len(evs) != 3 {
		t.Fatalf("events for model/churn = %d (more %v), want 3", len(evs), more)
	}
	last := evs[2]
	if last.GetAction() != "alias.set" || last.GetSummary() != "champion: new -> 1" || last.GetReason() != "reason 5" ||
		last.GetActor().GetName() != "ops" || !last.GetTime().AsTime().Equal(t0.Add(5*time.Second)) || last.GetIndex() != 5 {
		t.Fatalf("alias event = %v", last)
	}
	evs, more = view.AuditEvents(state.AuditQuery{Limit: 2, Newest: true})
	if !more || len(evs) != 2 || evs[0].GetIndex() != 3 || evs[1].GetIndex() != 5 {
		t.Fatalf("newest two = %v (more %v)", evs, more)
	}
	evs, _ = view.AuditEvents(state.AuditQuery{AfterIndex: 2, Limit: 10})
	if len(evs) != 2 || evs[0].GetIndex() != 3 {
		t.Fatalf("after 2 = %v", evs)
	}
	if evs, more := view.AuditEvents(state.AuditQuery{AfterIndex: math.MaxUint64, Limit: 10}); len(evs) != 0 || more {
		t.Fatalf("after the largest index = %v (more %v)", evs, more)
	}
}

func TestUnknownCommandTypes(t *testing.T) {
	f := New(logging.Discard())
	// An ignorable unknown type is skipped and still counts as applied.
	if res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{byte(IgnoreUnknownTypeFlag | 99), 1, 2}}); res != nil {
		t.Fatalf("ignorable unknown type returned %v", res)
	}
	if f.AppliedIndex() != 1 || f.State().Snapshot().Index() != 1 {
		t.Fatalf("applied index after skipping = %d", f.AppliedIndex())
	}
	// Any other unknown type stops the node rather than let it diverge.
	defer func() {
		if recover() == nil {
			t.Fatalf("an unknown command type without the ignore flag did not panic")
		}
	}()
	f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte{99}})
}

// records dumps a state as comparable records.
func records(t testing.TB, f *FSM) []proto.Message {
	t.Helper()
	var out []proto.Message
	err := f.State().Snapshot().Records(func(_ state.RecordKind, m proto.Message) error {
		out = append(out, m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalRecords(a, b []proto.Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// randomCommands returns a random but valid-looking stream of every command
// type, including ones the state will refuse.
func randomCommands(r *rand.Rand, n int) []Command {
	models := []string{"churn", "fraud", "eta"}
	aliases := []string{"champion", "candidate", "shadow"}
	roles := []droverv1.Role{droverv1.Role_ROLE_ADMIN, droverv1.Role_ROLE_OPERATOR, droverv1.Role_ROLE_VIEWER, droverv1.Role_ROLE_AGENT}
	profile, windows := driftFixtures()
	// A prologue that makes rollouts of churn possible: two versions and
	// an agent running the first.
	enrolled := []string{"a-fixed"}
	hash := sha256.Sum256([]byte("fixed"))
	out := []Command{
		&fsmv1.VersionCreate{Header: header(0), CreateModel: true, Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("p1"), Format: "onnx"}},
		&fsmv1.VersionCreate{Header: header(0), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("p2"), Format: "onnx"}},
		&fsmv1.AgentEnroll{Header: header(0), Agent: &droverv1.Agent{Id: "a-fixed", Name: "fixed"},
			Token: &fsmv1.TokenRecord{Token: &droverv1.Token{Id: "at-fixed", Role: droverv1.Role_ROLE_AGENT}, SecretHash: hash[:]}},
		&fsmv1.AssignmentSet{Header: header(0), AgentId: "a-fixed", Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}},
	}
	for i := range n {
		h := header(i)
		m := models[r.IntN(len(models))]
		var c Command
		switch r.IntN(23) {
		case 21:
			name := fmt.Sprint("p", r.IntN(2))
			if r.IntN(4) == 0 {
				c = &fsmv1.RetrainPolicyDelete{Header: h, Name: name}
			} else {
				c = &fsmv1.RetrainPolicyPut{Header: h, Policy: &droverv1.RetrainPolicy{Name: name, Model: "churn", Runner: "native",
					Cooldown: durationpb.New(time.Duration(r.IntN(2)) * time.Hour), Dataset: &droverv1.DatasetRecipe{Target: "y", Feedback: true},
					Rollout: &droverv1.RolloutTemplate{Auto: r.IntN(2) == 0}}}
			}
		case 22:
			c = randomRetrainCommand(r, h, i)
		case 20:
			id := fmt.Sprint("run", r.IntN(4))
			if r.IntN(2) == 0 {
				c = &fsmv1.RunCreate{Header: h, Run: &droverv1.Run{Id: id, Model: m, Runner: "native", Params: map[string]string{"l2": "1"}, ParentVersion: uint64(r.IntN(2))}}
			} else {
				c = &fsmv1.RunLog{Header: h, Log: &droverv1.LogRunRequest{Id: id, Points: []*droverv1.MetricPoint{{Name: "loss", Value: r.Float64(), Step: int64(i)}},
					EndState: droverv1.RunState(r.IntN(3) * 1), Metrics: map[string]float64{"accuracy": r.Float64()}}}
			}
		case 17, 18, 19:
			id := fmt.Sprint("r", r.IntN(3))
			switch r.IntN(5) {
			case 0, 4:
				c = &fsmv1.RolloutCreate{Header: h, Rollout: &droverv1.Rollout{Id: fmt.Sprint("r", i%3+r.IntN(2)*3), Model: m, ToVersion: uint64(1 + r.IntN(3)),
					Steps: []*droverv1.RolloutStep{{Agents: 1, Weight: uint32(r.IntN(2) * 10)}, {Percent: 100}}, Force: r.IntN(2) == 0}}
			case 1:
				c = &fsmv1.RolloutStepReady{Header: h, Id: id, Step: uint32(r.IntN(2))}
			case 2:
				c = &fsmv1.RolloutAdvance{Header: h, Id: id, Step: uint32(r.IntN(2))}
			default:
				c = &fsmv1.RolloutAct{Header: h, Id: id, Action: droverv1.RolloutAction(1 + r.IntN(5))}
			}
		case 16:
			c = &fsmv1.DriftSettingsSet{Header: h, Settings: &droverv1.ModelDriftSettings{Model: m, Settings: &droverv1.DriftSettings{
				PValue: []float64{0, 0.01, 0.05, 2}[r.IntN(4)], Correction: []string{"", "fdr", "nope"}[r.IntN(3)]}}}
		case 0:
			c = &fsmv1.ModelCreate{Header: h, Name: m, Labels: map[string]string{"team": fmt.Sprint(r.IntN(3))}}
		case 1, 2, 3:
			c = &fsmv1.VersionCreate{Header: h, CreateModel: r.IntN(2) == 0, Version: &droverv1.ModelVersion{
				Model: m, Artifact: blob(fmt.Sprint(r.IntN(20))), Format: "onnx", Runner: "native",
				Params:           map[string]string{"seed": fmt.Sprint(i)},
				Metrics:          map[string]float64{"auc": r.Float64()},
				ReferenceProfile: [][]byte{{byte(i)}, profile}[r.IntN(2)],
				Schema:           &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "tenure", Datatype: "FP64", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC}}},
				Lineage:          &droverv1.Lineage{RunId: fmt.Sprint("run-", i)},
			}}
		case 4, 5:
			var expected *uint64
			if r.IntN(3) == 0 {
				e := uint64(r.IntN(4))
				expected = &e
			}
			c = &fsmv1.AliasSet{Header: h, Model: m, Alias: aliases[r.IntN(3)], Version: uint64(1 + r.IntN(5)), ExpectedVersion: expected, Force: r.IntN(2) == 0}
		case 6:
			c = &fsmv1.AliasDelete{Header: h, Model: m, Alias: aliases[r.IntN(3)]}
		case 7:
			states := []droverv1.VersionState{droverv1.VersionState_VERSION_STATE_READY, droverv1.VersionState_VERSION_STATE_REJECTED, droverv1.VersionState_VERSION_STATE_ARCHIVED}
			c = &fsmv1.VersionStateSet{Header: h, Model: m, Version: uint64(1 + r.IntN(5)), State: states[r.IntN(3)]}
		case 8:
			c = &fsmv1.ModelArchive{Header: h, Name: m, Undo: r.IntN(2) == 0}
		case 9:
			c = &fsmv1.DatasetVersionCreate{Header: h, Version: &droverv1.DatasetVersion{Dataset: "ds-" + m, Content: blob(fmt.Sprint("d", r.IntN(5))), Format: "csv", Rows: int64(r.IntN(1000))}}
		case 10:
			hash := sha256.Sum256([]byte(fmt.Sprint("secret", i)))
			c = &fsmv1.TokenCreate{Header: h, Token: &fsmv1.TokenRecord{Token: &droverv1.Token{Id: fmt.Sprint("t", i), Name: "n", Role: roles[r.IntN(4)]}, SecretHash: hash[:]}}
		case 12:
			name := fmt.Sprint("gpu-", r.IntN(3))
			hash := sha256.Sum256([]byte(fmt.Sprint("agent-secret", i)))
			enrolled = append(enrolled, fmt.Sprint("a", i))
			c = &fsmv1.AgentEnroll{Header: h, Agent: &droverv1.Agent{Id: fmt.Sprint("a", i), Name: name,
				ReportedLabels: map[string]string{"site": "lab"}, Version: "dev",
				Inventory: &droverv1.Inventory{Gpus: []*droverv1.Gpu{{Index: 0, Uuid: "GPU-1"}}}},
				Token: &fsmv1.TokenRecord{Token: &droverv1.Token{Id: fmt.Sprint("at", i), Role: droverv1.Role_ROLE_AGENT}, SecretHash: hash[:]}}
		case 13:
			agent := fmt.Sprint("a", r.IntN(i+1))
			if len(enrolled) > 0 && r.IntN(2) == 0 {
				agent = enrolled[r.IntN(len(enrolled))]
			}
			c = &fsmv1.AssignmentSet{Header: h, AgentId: agent, Assignment: &droverv1.Assignment{
				Model: m, Version: uint64(r.IntN(3)), Alias: []string{"", "champion"}[r.IntN(2)], Role: droverv1.AssignmentRole(1 + r.IntN(3)), Weight: uint32(r.IntN(101))}}
		case 14:
			var reports []*droverv1.Report
			for j := range 3 {
				reports = append(reports, &droverv1.Report{Seq: uint64(i*3 + j), Body: &droverv1.Report_Assignment{Assignment: &droverv1.AssignmentStatus{
					Model: m, Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, Phase: droverv1.AssignmentPhase(1 + r.IntN(6))}}})
			}
			agent := fmt.Sprint("a", r.IntN(i+1))
			if len(enrolled) > 0 && r.IntN(2) == 0 {
				// A drift window of some version of the model from an
				// enrolled agent: judged when the version has a real
				// profile; drifted or not.
				agent = enrolled[r.IntN(len(enrolled))]
				w := proto.CloneOf(windows[r.IntN(len(windows))])
				w.Model, w.Version = m, uint64(1+r.IntN(3))
				w.Start = timestamppb.New(time.Unix(int64(i)*60, 0))
				reports = append(reports, &droverv1.Report{Seq: uint64(i*3 + 3), Body: &droverv1.Report_Drift{Drift: w}})
			}
			c = &fsmv1.AgentReports{Header: h, AgentId: agent, Reports: reports}
		case 15:
			switch r.IntN(3) {
			case 0:
				c = &fsmv1.AgentDrain{Header: h, AgentId: fmt.Sprint("a", r.IntN(i+1)), Undo: r.IntN(2) == 0}
			case 1:
				c = &fsmv1.AgentLabelsSet{Header: h, AgentId: fmt.Sprint("a", r.IntN(i+1)), Set: map[string]string{"rack": fmt.Sprint(r.IntN(3))}}
			default:
				c = &fsmv1.AgentStatusSet{Header: h, Status: droverv1.AgentStatus(1 + r.IntN(2)), AgentIds: []string{fmt.Sprint("a", r.IntN(i+1))}}
			}
		case 11:
			if r.IntN(2) == 0 {
				c = &fsmv1.TokenRevoke{Header: h, Id: fmt.Sprint("t", r.IntN(i+1))}
			} else {
				c = &fsmv1.NodeUpsert{Header: h, Node: &fsmv1.Node{Name: fmt.Sprint("hub-", r.IntN(3)), RaftAddress: "a:1", HttpAddress: fmt.Sprint("h:", r.IntN(3))}}
			}
		}
		out = append(out, c)
	}
	return out
}

// driftFixtures returns a serialised reference profile of one numeric and
// one categorical feature, and drift windows against it: two of traffic
// like the reference's and two shifted.
func driftFixtures() ([]byte, []*droverv1.DriftWindow) {
	rng := rand.New(rand.NewPCG(7, 7))
	sample := func(n int, shift float64) []drift.Column {
		x := make([]float64, n)
		c := make([]string, n)
		for i := range n {
			x[i] = rng.NormFloat64() + shift
			c[i] = []string{"a", "b", "c"}[min(2, int(rng.Float64()*3+shift))]
		}
		return []drift.Column{{Name: "tenure", Numbers: x}, {Name: "plan", Categorical: true, Strings: c}}
	}
	p, err := sketch.BuildProfileWith(sample(5000, 0), sketch.ProfileOptions{Seed: 1, Built: time.Unix(0, 0)})
	if err != nil {
		panic(err)
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	var windows []*droverv1.DriftWindow
	for i, shift := range []float64{0, 0, 1, 1} {
		w, err := sketch.NewWindow(p, "m", 1, time.Unix(0, 0), time.Minute, sketch.WithSeed(uint64(i)))
		if err != nil {
			panic(err)
		}
		cols := sample(500, shift)
		w.ObserveNumbers(0, cols[0].Numbers)
		w.ObserveStrings(1, cols[1].Strings)
		w.AddRows(500)
		windows = append(windows, w.ToProto())
	}
	return b, windows
}

// TestSnapshotRoundTripProperty applies random command streams, snapshots
// the state at a random point, restores the snapshot into a fresh FSM, and
// checks that the restored FSM is identical at that point and stays
// identical as the rest of the stream is applied to both — so every table,
// and every counter that affects later commands, survives the round trip.
func TestSnapshotRoundTripProperty(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			cmds := randomCommands(r, 200)
			cut := r.IntN(len(cmds))
			a := newHarness(t)
			for _, c := range cmds[:cut] {
				a.apply(c)
			}
			snap, err := a.f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := snap.(*snapshot).write(&buf); err != nil {
				t.Fatal(err)
			}
			snap.Release()
			b := newHarness(t)
			b.index = a.index
			if err := b.f.Restore(nopCloser{&buf}); err != nil {
				t.Fatal(err)
			}
			if !equalRecords(records(t, a.f), records(t, b.f)) {
				t.Fatalf("restored state differs from the original")
			}
			if a.f.State().Snapshot().Index() != b.f.State().Snapshot().Index() || b.f.AppliedIndex() != a.index {
				t.Fatalf("restored index %d, want %d", b.f.State().Snapshot().Index(), a.f.State().Snapshot().Index())
			}
			for _, c := range cmds[cut:] {
				ra, rb := a.apply(c), b.apply(c)
				if (ra.Err == nil) != (rb.Err == nil) || (ra.Value != nil && !proto.Equal(ra.Value, rb.Value)) {
					t.Fatalf("after restore, %T gave %v / %v, want %v / %v", c, rb.Value, rb.Err, ra.Value, ra.Err)
				}
			}
			if !equalRecords(records(t, a.f), records(t, b.f)) {
				t.Fatalf("states diverged after the restore")
			}
		})
	}
}

// TestEveryTableInSnapshot makes sure the random streams above reach every
// kind of record at some point, so that the round-trip property covers every table.
func TestEveryTableInSnapshot(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.ClusterInit{Header: header(0), Meta: &fsmv1.ClusterMeta{ClusterId: "c", PeerSecret: "p"}})
	seen := map[state.RecordKind]int{}
	for _, c := range randomCommands(rand.New(rand.NewPCG(9, 9)), 1000) {
		h.apply(c)
		_ = h.f.State().Snapshot().Records(func(k state.RecordKind, _ proto.Message) error {
			seen[k]++
			return nil
		})
	}
	for k := state.RecordClusterMeta; k <= state.RecordRetrainJob; k++ {
		if seen[k] == 0 {
			t.Errorf("no record of kind %d", k)
		}
	}
}

// TestDeterminism applies the same stream to two state machines and
// expects byte-identical snapshots.
func TestDeterminism(t *testing.T) {
	cmds := randomCommands(rand.New(rand.NewPCG(3, 4)), 300)
	var dumps [2]bytes.Buffer
	for i := range dumps {
		h := newHarness(t)
		for _, c := range cmds {
			h.apply(c)
		}
		snap, _ := h.f.Snapshot()
		if err := snap.(*snapshot).write(&dumps[i]); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(dumps[0].Bytes(), dumps[1].Bytes()) {
		t.Fatalf("two state machines fed the same commands wrote different snapshots")
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	f := New(logging.Discard())
	f2 := newHarness(t)
	f2.mustApply(&fsmv1.ModelCreate{Header: header(1), Name: "keep"})
	for _, data := range [][]byte{nil, {7}, {0, 200}, append([]byte{0, 2, 8, 1}, 55)} {
		if err := f.Restore(nopCloser{bytes.NewReader(data)}); err == nil {
			t.Errorf("restore of %v succeeded", data)
		}
		if err := f2.f.Restore(nopCloser{bytes.NewReader(data)}); err == nil || f2.f.State().Snapshot().Model("keep") == nil {
			t.Errorf("a failed restore lost the previous state")
		}
	}
}

type nopCloser struct {
	r interface{ Read([]byte) (int, error) }
}

func (n nopCloser) Read(p []byte) (int, error) { return n.r.Read(p) }
func (nopCloser) Close() error                 { return nil }
