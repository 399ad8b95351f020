package hub

import (
	"context"

	"connectrpc.com/connect/v2"

	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// modelService implements drover.v1.ModelService.
type modelService struct {
	droverv1connect.UnimplementedModelServiceHandler
	n *Node
}

func (s *modelService) CreateModel(ctx context.Context, req *droverv1.CreateModelRequest) (*droverv1.CreateModelResponse, error) {
	if err := state.ValidateModel(req.GetName(), req.GetDescription(), req.GetLabels()); err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.ModelCreate{
		Header: s.n.header(ctx, ""), Name: req.GetName(), Description: req.GetDescription(), Labels: req.GetLabels(),
	})
	if err != nil {
		return nil, err
	}
	return &droverv1.CreateModelResponse{Model: v.(*droverv1.Model)}, nil
}

func (s *modelService) GetModel(ctx context.Context, req *droverv1.GetModelRequest) (*droverv1.GetModelResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	m := view.Model(req.GetName())
	if m == nil {
		return nil, state.NotFoundf("model %q does not exist", req.GetName())
	}
	return &droverv1.GetModelResponse{
		Model:    m,
		Versions: view.Versions(req.GetName()),
		Aliases:  view.Aliases(req.GetName()),
		Meta:     meta,
	}, nil
}

func (s *modelService) ListModels(ctx context.Context, req *droverv1.ListModelsRequest) (*droverv1.ListModelsResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	return &droverv1.ListModelsResponse{Models: view.Models(req.GetIncludeArchived()), Meta: meta}, nil
}

// CreateVersion registers a version whose artifact is already uploaded. The
// artifact must be whole on this node — or on a peer, whence it is pulled —
// and on a quorum of nodes before the version is written, so that losing a
// minority of nodes cannot lose an artifact that a version points at.
func (s *modelService) CreateVersion(ctx context.Context, req *droverv1.CreateVersionRequest) (*droverv1.CreateVersionResponse, error) {
	in := &droverv1.ModelVersion{
		Model:            req.GetModel(),
		Artifact:         req.GetArtifact(),
		Format:           req.GetFormat(),
		Runner:           req.GetRunner(),
		Params:           req.GetParams(),
		Metrics:          req.GetMetrics(),
		Schema:           req.GetSchema(),
		ReferenceProfile: req.GetReferenceProfile(),
		Lineage:          req.GetLineage(),
		Description:      req.GetDescription(),
	}
	if err := state.ValidateVersion(in); err != nil {
		return nil, err
	}
	if err := s.n.ensureBlob(ctx, req.GetArtifact()); err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.VersionCreate{Header: s.n.header(ctx, ""), Version: in, CreateModel: req.GetCreateModel()})
	if err != nil {
		return nil, err
	}
	return &droverv1.CreateVersionResponse{Version: v.(*droverv1.ModelVersion)}, nil
}

func (s *modelService) GetVersion(ctx context.Context, req *droverv1.GetVersionRequest) (*droverv1.GetVersionResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	v, err := view.ResolveVersion(req.GetModel(), req.GetVersion(), req.GetAlias())
	if err != nil {
		return nil, err
	}
	return &droverv1.GetVersionResponse{Version: v, Meta: meta}, nil
}

func (s *modelService) SetVersionState(ctx context.Context, req *droverv1.SetVersionStateRequest) (*droverv1.SetVersionStateResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.VersionStateSet{
		Header: s.n.header(ctx, req.GetReason()), Model: req.GetModel(), Version: req.GetVersion(), State: req.GetState(),
	})
	if err != nil {
		return nil, err
	}
	return &droverv1.SetVersionStateResponse{Version: v.(*droverv1.ModelVersion)}, nil
}

func (s *modelService) ArchiveModel(ctx context.Context, req *droverv1.ArchiveModelRequest) (*droverv1.ArchiveModelResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.ModelArchive{Header: s.n.header(ctx, req.GetReason()), Name: req.GetName(), Undo: req.GetUndo()})
	if err != nil {
		return nil, err
	}
	return &droverv1.ArchiveModelResponse{Model: v.(*droverv1.Model)}, nil
}

func (s *modelService) SetAlias(ctx context.Context, req *droverv1.SetAliasRequest) (*droverv1.SetAliasResponse, error) {
	if err := state.ValidateAlias(req.GetAlias()); err != nil {
		return nil, err
	}
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	if req.GetVersion() == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, "version is required")
	}
	v, _, err := s.n.apply(ctx, &fsmv1.AliasSet{
		Header: s.n.header(ctx, req.GetReason()), Model: req.GetModel(), Alias: req.GetAlias(),
		Version: req.GetVersion(), ExpectedVersion: req.ExpectedVersion, Force: req.GetForce(),
	})
	if err != nil {
		return nil, err
	}
	res := v.(*fsmv1.AliasSetResult)
	return &droverv1.SetAliasResponse{Alias: res.GetAlias(), PreviousVersion: res.GetPreviousVersion()}, nil
}

func (s *modelService) DeleteAlias(ctx context.Context, req *droverv1.DeleteAliasRequest) (*droverv1.DeleteAliasResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	if _, _, err := s.n.apply(ctx, &fsmv1.AliasDelete{Header: s.n.header(ctx, req.GetReason()), Model: req.GetModel(), Alias: req.GetAlias()}); err != nil {
		return nil, err
	}
	return &droverv1.DeleteAliasResponse{}, nil
}
