package hub

import (
	"context"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/auth"
	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// tokenService implements drover.v1.TokenService.
type tokenService struct {
	droverv1connect.UnimplementedTokenServiceHandler
	n *Node
}

func (s *tokenService) CreateToken(ctx context.Context, req *droverv1.CreateTokenRequest) (*droverv1.CreateTokenResponse, error) {
	if err := state.ValidateRole(req.GetRole()); err != nil {
		return nil, err
	}
	if err := state.ValidateText("token name", req.GetName(), state.MaxKeyLen); err != nil {
		return nil, err
	}
	if err := req.GetTtl().CheckValid(); req.Ttl != nil && (err != nil || req.GetTtl().AsDuration() < 0) {
		return nil, connect.NewError(connect.CodeInvalidArgument, "ttl must be a positive duration")
	}
	h := s.n.header(ctx, "")
	id, secret := auth.NewSecret()
	tok := &droverv1.Token{Id: id, Name: req.GetName(), Role: req.GetRole(), CreatedBy: h.GetActor(), CreateTime: h.GetTime()}
	if ttl := req.GetTtl().AsDuration(); ttl > 0 {
		tok.ExpireTime = timestamppb.New(h.GetTime().AsTime().Add(ttl))
	}
	v, _, err := s.n.apply(ctx, &fsmv1.TokenCreate{Header: h, Token: &fsmv1.TokenRecord{Token: tok, SecretHash: auth.Hash(secret)}})
	if err != nil {
		return nil, err
	}
	return &droverv1.CreateTokenResponse{Token: v.(*droverv1.Token), Secret: secret}, nil
}

func (s *tokenService) ListTokens(ctx context.Context, req *droverv1.ListTokensRequest) (*droverv1.ListTokensResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	resp := &droverv1.ListTokensResponse{Meta: meta}
	for _, rec := range view.Tokens() {
		resp.Tokens = append(resp.Tokens, rec.GetToken())
	}
	return resp, nil
}

func (s *tokenService) RevokeToken(ctx context.Context, req *droverv1.RevokeTokenRequest) (*droverv1.RevokeTokenResponse, error) {
	if req.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, "token id is required")
	}
	if _, _, err := s.n.apply(ctx, &fsmv1.TokenRevoke{Header: s.n.header(ctx, ""), Id: req.GetId()}); err != nil {
		return nil, err
	}
	return &droverv1.RevokeTokenResponse{}, nil
}

func (s *tokenService) WhoAmI(ctx context.Context, _ *droverv1.WhoAmIRequest) (*droverv1.WhoAmIResponse, error) {
	p := principalFrom(ctx)
	if p.IsPeer {
		return &droverv1.WhoAmIResponse{Token: &droverv1.Token{Id: "peer", Name: "hub peer"}}, nil
	}
	return &droverv1.WhoAmIResponse{Token: p.Token}, nil
}
