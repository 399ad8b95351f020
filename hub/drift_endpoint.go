package hub

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/sketch"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// driftService serves DriftService: the fleet's drift, merged from the
// agents' windows on read.
type driftService struct {
	droverv1connect.UnimplementedDriftServiceHandler
	n *Node
}

// defaultDriftWindow is how far back GetDrift merges windows by default.
const defaultDriftWindow = time.Hour

func (s *driftService) GetDrift(ctx context.Context, req *droverv1.GetDriftRequest) (*droverv1.GetDriftResponse, error) {
	if err := state.ValidateName("model", req.GetModel()); err != nil {
		return nil, err
	}
	span := defaultDriftWindow
	if req.GetWindow() != nil {
		if span = req.GetWindow().AsDuration(); span <= 0 {
			return nil, state.Invalidf("window %s: want a positive duration", span)
		}
	}
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	if view.Model(req.GetModel()) == nil {
		return nil, state.NotFoundf("model %q does not exist", req.GetModel())
	}
	version := req.GetVersion()
	if version == 0 {
		if version = view.NewestDriftVersion(req.GetModel()); version == 0 {
			return nil, state.NotFoundf("no agent has reported drift windows for %s yet", req.GetModel())
		}
	}
	ref, err := view.DriftReference(req.GetModel(), version)
	switch {
	case err != nil:
		return nil, err
	case ref == nil && view.VersionExists(req.GetModel(), version):
		return nil, state.Preconditionf("%s:%d has no reference profile to judge drift against; push it with one (drover models push --profile or --dataset)", req.GetModel(), version)
	case ref == nil:
		return nil, state.NotFoundf("model %s has no version %d", req.GetModel(), version)
	}
	var agents []string // nil: every agent
	switch {
	case req.GetAgent() != "":
		a := view.Agent(req.GetAgent())
		if a == nil {
			return nil, state.NotFoundf("no agent with id or name %q", req.GetAgent())
		}
		agents = []string{a.GetId()}
	case len(req.GetSelector()) > 0:
		agents = []string{}
		for _, a := range view.Agents(req.GetSelector()) {
			agents = append(agents, a.GetId())
		}
	}
	now := time.Now()
	windows := view.DriftWindows(req.GetModel(), version, agents, now.Add(-span))
	if len(windows) == 0 {
		return nil, state.NotFoundf("no drift windows for %s:%d from the agents asked for in the last %s", req.GetModel(), version, span)
	}
	parts := make([]*droverv1.DriftWindow, len(windows))
	seen := map[string]bool{}
	resp := &droverv1.GetDriftResponse{Model: req.GetModel(), Version: version, Reference: ref.Profile(), Meta: meta}
	for i, w := range windows {
		parts[i] = w.GetWindow()
		if !seen[w.GetAgentId()] {
			seen[w.GetAgentId()] = true
			name := w.GetAgentId()
			if a := view.Agent(w.GetAgentId()); a != nil {
				name = a.GetName()
			}
			resp.Agents = append(resp.Agents, name)
		}
	}
	merged, err := sketch.MergeWindows(parts...)
	if err != nil {
		return nil, state.Preconditionf("the agents' stored windows do not merge: %v", err)
	}
	resp.Current, resp.Rows = merged, merged.GetRows()
	first, last := windows[0].GetWindow(), windows[len(windows)-1].GetWindow()
	resp.From = first.GetStart()
	resp.To = timestamppb.New(last.GetStart().AsTime().Add(last.GetLength().AsDuration()))
	resp.Settings = view.DriftSettings(req.GetModel())
	rep := ref.Evaluate(merged, state.DriftOptions(resp.Settings))
	resp.Dataset = &droverv1.DatasetDrift{DriftShare: rep.Dataset.DriftShare, Drifted: rep.Dataset.Drifted,
		DriftedFeatures: uint32(rep.Dataset.DriftedFeatures), Features: uint32(rep.Dataset.Features)}
	for _, f := range rep.Features {
		resp.Features = append(resp.Features, featureDrift(f))
	}
	return resp, nil
}

// featureDrift is a feature's report as the API gives it.
func featureDrift(f drift.FeatureReport) *droverv1.FeatureDrift {
	fd := &droverv1.FeatureDrift{Name: f.Name, Type: f.Type, ReferenceRows: uint64(f.ReferenceRows), CurrentRows: uint64(f.CurrentRows),
		WassersteinNormed: f.WassersteinNormed, Psi: f.PSI, JensenShannon: f.JensenShannon, Hellinger: f.Hellinger,
		Bound: f.Bound, Method: f.Method, Score: f.Score, Threshold: f.Threshold, Drifted: f.Drifted, Verdict: f.Verdict}
	if f.KS != nil {
		fd.KsStatistic, fd.KsPValue = proto.Float64(f.KS.Statistic), proto.Float64(f.KS.PValue)
	}
	if f.Chi2 != nil {
		fd.Chi2Statistic, fd.Chi2PValue = proto.Float64(f.Chi2.Statistic), proto.Float64(f.Chi2.PValue)
	}
	if f.Z != nil {
		fd.ZStatistic, fd.ZPValue = proto.Float64(f.Z.Statistic), proto.Float64(f.Z.PValue)
	}
	return fd
}

func (s *driftService) ListDriftEvents(ctx context.Context, req *droverv1.ListDriftEventsRequest) (*droverv1.ListDriftEventsResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 100
	}
	return &droverv1.ListDriftEventsResponse{Events: view.DriftEvents(req.GetModel(), limit), Meta: meta}, nil
}

func (s *driftService) SetDriftSettings(ctx context.Context, req *droverv1.SetDriftSettingsRequest) (*droverv1.SetDriftSettingsResponse, error) {
	if err := state.ValidateName("model", req.GetModel()); err != nil {
		return nil, err
	}
	settings := req.GetSettings()
	if settings == nil {
		settings = &droverv1.DriftSettings{}
	}
	v, _, err := s.n.apply(ctx, &fsmv1.DriftSettingsSet{Header: s.n.header(ctx, ""),
		Settings: &droverv1.ModelDriftSettings{Model: req.GetModel(), Settings: settings}})
	if err != nil {
		return nil, err
	}
	return &droverv1.SetDriftSettingsResponse{Settings: v.(*droverv1.ModelDriftSettings)}, nil
}
