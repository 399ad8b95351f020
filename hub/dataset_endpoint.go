package hub

import (
	"context"

	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// datasetService implements drover.v1.DatasetService.
type datasetService struct {
	droverv1connect.UnimplementedDatasetServiceHandler
	n *Node
}

func (s *datasetService) CreateDatasetVersion(ctx context.Context, req *droverv1.CreateDatasetVersionRequest) (*droverv1.CreateDatasetVersionResponse, error) {
	in := &droverv1.DatasetVersion{
		Dataset:     req.GetDataset(),
		Content:     req.GetContent(),
		Format:      req.GetFormat(),
		Rows:        req.GetRows(),
		Labels:      req.GetLabels(),
		Description: req.GetDescription(),
	}
	if err := state.ValidateDatasetVersion(in); err != nil {
		return nil, err
	}
	if err := s.n.ensureBlob(ctx, req.GetContent()); err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.DatasetVersionCreate{Header: s.n.header(ctx, ""), Version: in})
	if err != nil {
		return nil, err
	}
	return &droverv1.CreateDatasetVersionResponse{Version: v.(*droverv1.DatasetVersion)}, nil
}

func (s *datasetService) GetDataset(ctx context.Context, req *droverv1.GetDatasetRequest) (*droverv1.GetDatasetResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	ds := view.Dataset(req.GetName())
	if ds == nil {
		return nil, state.NotFoundf("data set %q does not exist", req.GetName())
	}
	return &droverv1.GetDatasetResponse{Dataset: ds, Versions: view.DatasetVersions(req.GetName()), Meta: meta}, nil
}

func (s *datasetService) ListDatasets(ctx context.Context, req *droverv1.ListDatasetsRequest) (*droverv1.ListDatasetsResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	return &droverv1.ListDatasetsResponse{Datasets: view.Datasets(), Meta: meta}, nil
}
