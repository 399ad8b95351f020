package hub

import (
	"context"

	"github.com/droverhq/drover/hub/state"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// auditService implements drover.v1.AuditService.
type auditService struct {
	droverv1connect.UnimplementedAuditServiceHandler
	n *Node
}

func (s *auditService) ListAuditEvents(ctx context.Context, req *droverv1.ListAuditEventsRequest) (*droverv1.ListAuditEventsResponse, error) {
	limit := int(req.GetLimit())
	switch {
	case limit <= 0:
		limit = 100
	case limit > 1000:
		limit = 1000
	}
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	events, more := view.AuditEvents(state.AuditQuery{
		AfterIndex:   req.GetAfterIndex(),
		Limit:        limit,
		Resource:     req.GetResourcePrefix(),
		ActorTokenID: req.GetActorTokenId(),
		Newest:       req.GetNewest(),
	})
	resp := &droverv1.ListAuditEventsResponse{Events: events, Meta: meta}
	if more && !req.GetNewest() && len(events) > 0 {
		resp.NextAfterIndex = events[len(events)-1].GetIndex()
	}
	return resp, nil
}
