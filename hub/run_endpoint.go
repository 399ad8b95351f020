package hub

import (
	"context"

	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// runService serves RunService: training runs, tracked.
type runService struct {
	droverv1connect.UnimplementedRunServiceHandler
	n *Node
}

func (s *runService) CreateRun(ctx context.Context, req *droverv1.CreateRunRequest) (*droverv1.CreateRunResponse, error) {
	if err := state.ValidateName("model", req.GetModel()); err != nil {
		return nil, err
	}
	if err := state.ValidateText("runner", req.GetRunner(), state.MaxKeyLen); err != nil {
		return nil, err
	}
	r := &droverv1.Run{Id: newID("run"), Model: req.GetModel(), Runner: req.GetRunner(), Params: req.GetParams(),
		Tags: req.GetTags(), DatasetDigest: req.GetDatasetDigest(), Dataset: req.GetDataset(), DatasetVersion: req.GetDatasetVersion(),
		ParentVersion: req.GetParentVersion()}
	v, _, err := s.n.apply(ctx, &fsmv1.RunCreate{Header: s.n.header(ctx, ""), Run: r})
	if err != nil {
		return nil, err
	}
	return &droverv1.CreateRunResponse{Run: v.(*droverv1.Run)}, nil
}

func (s *runService) LogRun(ctx context.Context, req *droverv1.LogRunRequest) (*droverv1.LogRunResponse, error) {
	if req.GetArtifact() != nil {
		if err := state.ValidateBlobRef("artifact", req.GetArtifact()); err != nil {
			return nil, err
		}
	}
	if err := state.ValidateText("message", req.GetMessage(), state.MaxDescriptionLen); err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.RunLog{Header: s.n.header(ctx, ""), Log: req})
	if err != nil {
		return nil, err
	}
	return &droverv1.LogRunResponse{Run: v.(*droverv1.Run)}, nil
}

func (s *runService) GetRun(ctx context.Context, req *droverv1.GetRunRequest) (*droverv1.GetRunResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	r := view.Run(req.GetId())
	if r == nil {
		return nil, state.NotFoundf("no run %s", req.GetId())
	}
	return &droverv1.GetRunResponse{Run: r, Meta: meta}, nil
}

func (s *runService) ListRuns(ctx context.Context, req *droverv1.ListRunsRequest) (*droverv1.ListRunsResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 100
	}
	return &droverv1.ListRunsResponse{Runs: view.Runs(req.GetModel(), limit), Meta: meta}, nil
}
