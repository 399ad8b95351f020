package hub

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// retrainService serves RetrainService.
type retrainService struct {
	droverv1connect.UnimplementedRetrainServiceHandler
	n *Node
}

func (s *retrainService) PutPolicy(ctx context.Context, req *droverv1.PutPolicyRequest) (*droverv1.PutPolicyResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	p := proto.CloneOf(req.GetPolicy())
	if p == nil {
		return nil, state.Invalidf("policy: required")
	}
	p.Status, p.UpdatedBy, p.CreateTime, p.UpdateTime, p.CreateIndex, p.ModifyIndex = nil, nil, nil, nil, 0, 0
	if err := state.ValidateRetrainPolicy(p); err != nil {
		return nil, err
	}
	for i, st := range p.GetRollout().GetSteps() {
		for k, g := range st.GetGates() {
			if err := gateOf(g).Validate(); err != nil {
				return nil, state.Invalidf("rollout.steps[%d].gates[%d]: %v", i, k, err)
			}
		}
	}
	v, _, err := s.n.apply(ctx, &fsmv1.RetrainPolicyPut{Header: s.n.header(ctx, req.GetReason()), Policy: p})
	if err != nil {
		return nil, err
	}
	return &droverv1.PutPolicyResponse{Policy: v.(*droverv1.RetrainPolicy)}, nil
}

func (s *retrainService) GetPolicy(ctx context.Context, req *droverv1.GetPolicyRequest) (*droverv1.GetPolicyResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	p := view.RetrainPolicy(req.GetName())
	if p == nil {
		return nil, state.NotFoundf("no retraining policy %q", req.GetName())
	}
	return &droverv1.GetPolicyResponse{Policy: p, Meta: meta}, nil
}

func (s *retrainService) ListPolicies(ctx context.Context, req *droverv1.ListPoliciesRequest) (*droverv1.ListPoliciesResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	return &droverv1.ListPoliciesResponse{Policies: view.RetrainPolicies(req.GetModel()), Meta: meta}, nil
}

func (s *retrainService) DeletePolicy(ctx context.Context, req *droverv1.DeletePolicyRequest) (*droverv1.DeletePolicyResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	if _, _, err := s.n.apply(ctx, &fsmv1.RetrainPolicyDelete{Header: s.n.header(ctx, req.GetReason()), Name: req.GetName()}); err != nil {
		return nil, err
	}
	return &droverv1.DeletePolicyResponse{}, nil
}

func (s *retrainService) TriggerRetrain(ctx context.Context, req *droverv1.TriggerRetrainRequest) (*droverv1.TriggerRetrainResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	view, _, err := s.n.read(ctx, nil)
	if err != nil {
		return nil, err
	}
	p := view.RetrainPolicy(req.GetPolicy())
	if p == nil {
		return nil, state.NotFoundf("no retraining policy %q", req.GetPolicy())
	}
	detail := "started by hand"
	if r := req.GetReason(); r != "" {
		detail += ": " + r
	}
	job := &droverv1.RetrainJob{Id: newID("job"), Policy: p.GetName(), Trigger: "manual", TriggerDetail: state.Clip(detail, state.MaxReasonLen),
		ChampionVersion: championVersion(view, p.GetModel())}
	v, _, err := s.n.apply(ctx, &fsmv1.RetrainJobCreate{Header: s.n.header(ctx, req.GetReason()), Job: job, Force: req.GetForce()})
	if err != nil {
		return nil, err
	}
	return &droverv1.TriggerRetrainResponse{Job: v.(*droverv1.RetrainJob)}, nil
}

func (s *retrainService) GetJob(ctx context.Context, req *droverv1.GetJobRequest) (*droverv1.GetJobResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	j := view.RetrainJob(req.GetId())
	if j == nil {
		return nil, state.NotFoundf("no retraining job %s", req.GetId())
	}
	return &droverv1.GetJobResponse{Job: j, Meta: meta}, nil
}

func (s *retrainService) ListJobs(ctx context.Context, req *droverv1.ListJobsRequest) (*droverv1.ListJobsResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = 100
	}
	out := &droverv1.ListJobsResponse{Meta: meta}
	for _, j := range view.RetrainJobs(state.JobQuery{Policy: req.GetPolicy(), Model: req.GetModel(), Active: req.GetActive(), Limit: limit}) {
		j = proto.CloneOf(j)
		j.Log = nil
		if j.Result != nil {
			j.Result.ReferenceProfile = nil
		}
		out.Jobs = append(out.Jobs, j)
	}
	return out, nil
}

// WatchJob streams the job whenever it changes, until it ends.
func (s *retrainService) WatchJob(ctx context.Context, req *droverv1.WatchJobRequest, stream droverv1connect.RetrainServiceWatchJobServerStream) error {
	var sent uint64
	for {
		j, ch := s.n.fsm.State().Snapshot().WatchRetrainJob(req.GetId())
		if j == nil {
			return state.NotFoundf("no retraining job %s", req.GetId())
		}
		if j.GetModifyIndex() != sent {
			out := proto.CloneOf(j)
			if out.Result != nil {
				out.Result.ReferenceProfile = nil
			}
			if err := stream.Send(&droverv1.WatchJobResponse{Job: out}); err != nil {
				return err
			}
			sent = j.GetModifyIndex()
		}
		if !state.JobActive(j) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.n.streams.Done():
			return unavailable("the node is shutting down")
		case <-ch:
		case <-time.After(30 * time.Second):
		}
	}
}

func (s *retrainService) CancelJob(ctx context.Context, req *droverv1.CancelJobRequest) (*droverv1.CancelJobResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	reason := "cancelled"
	if r := req.GetReason(); r != "" {
		reason += ": " + r
	}
	v, _, err := s.n.apply(ctx, &fsmv1.RetrainJobFail{Header: s.n.header(ctx, req.GetReason()), Id: req.GetId(), Reason: state.Clip(reason, state.MaxReasonLen), Cancel: true})
	if err != nil {
		return nil, err
	}
	return &droverv1.CancelJobResponse{Job: v.(*droverv1.RetrainJob)}, nil
}
