package hub

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/grpcreflect/v2"
	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/hub/auth"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// procedurePermissions says what each RPC needs. An RPC missing from the
// table is refused: a new RPC must be given a permission on purpose.
var procedurePermissions = map[string]auth.Permission{
	droverv1connect.ModelServiceCreateModelProcedure:     auth.Write,
	droverv1connect.ModelServiceGetModelProcedure:        auth.Read,
	droverv1connect.ModelServiceListModelsProcedure:      auth.Read,
	droverv1connect.ModelServiceCreateVersionProcedure:   auth.Write,
	droverv1connect.ModelServiceGetVersionProcedure:      auth.Read,
	droverv1connect.ModelServiceSetVersionStateProcedure: auth.Write,
	droverv1connect.ModelServiceArchiveModelProcedure:    auth.Write,
	droverv1connect.ModelServiceSetAliasProcedure:        auth.Write,
	droverv1connect.ModelServiceDeleteAliasProcedure:     auth.Write,

	droverv1connect.DatasetServiceCreateDatasetVersionProcedure: auth.Write,
	droverv1connect.DatasetServiceGetDatasetProcedure:           auth.Read,
	droverv1connect.DatasetServiceListDatasetsProcedure:         auth.Read,

	droverv1connect.TokenServiceCreateTokenProcedure: auth.Admin,
	droverv1connect.TokenServiceListTokensProcedure:  auth.Admin,
	droverv1connect.TokenServiceRevokeTokenProcedure: auth.Admin,
	droverv1connect.TokenServiceWhoAmIProcedure:      0, // any valid token

	droverv1connect.AuditServiceListAuditEventsProcedure: auth.Read,

	droverv1connect.ClusterServiceGetClusterStatusProcedure: auth.Read,
	droverv1connect.ClusterServiceRemoveNodeProcedure:       auth.Admin,

	droverv1connect.AgentServiceListAgentsProcedure:       auth.Read,
	droverv1connect.AgentServiceGetAgentProcedure:         auth.Read,
	droverv1connect.AgentServiceSetAgentLabelsProcedure:   auth.Write,
	droverv1connect.AgentServiceDrainAgentProcedure:       auth.Write,
	droverv1connect.AgentServiceSetAssignmentProcedure:    auth.Write,
	droverv1connect.AgentServiceDeleteAssignmentProcedure: auth.Write,
	droverv1connect.AgentServiceRemoveAgentProcedure:      auth.Write,

	droverv1connect.DriftServiceGetDriftProcedure:         auth.Read,
	droverv1connect.DriftServiceListDriftEventsProcedure:  auth.Read,
	droverv1connect.DriftServiceSetDriftSettingsProcedure: auth.Write,

	droverv1connect.RolloutServiceStartRolloutProcedure: auth.Write,
	droverv1connect.RolloutServiceGetRolloutProcedure:   auth.Read,
	droverv1connect.RolloutServiceListRolloutsProcedure: auth.Read,
	droverv1connect.RolloutServiceWatchRolloutProcedure: auth.Read,
	droverv1connect.RolloutServiceActOnRolloutProcedure: auth.Write,

	droverv1connect.RunServiceCreateRunProcedure:          auth.Write,
	droverv1connect.RunServiceLogRunProcedure:             auth.Write,
	droverv1connect.RunServiceGetRunProcedure:             auth.Read,
	droverv1connect.RunServiceListRunsProcedure:           auth.Read,
	droverv1connect.RetrainServicePutPolicyProcedure:      auth.Write,
	droverv1connect.RetrainServiceGetPolicyProcedure:      auth.Read,
	droverv1connect.RetrainServiceListPoliciesProcedure:   auth.Read,
	droverv1connect.RetrainServiceDeletePolicyProcedure:   auth.Write,
	droverv1connect.RetrainServiceTriggerRetrainProcedure: auth.Write,
	droverv1connect.RetrainServiceGetJobProcedure:         auth.Read,
	droverv1connect.RetrainServiceListJobsProcedure:       auth.Read,
	droverv1connect.RetrainServiceWatchJobProcedure:       auth.Read,
	droverv1connect.RetrainServiceCancelJobProcedure:      auth.Write,

	// Agents act only for themselves (checkAgent).
	droverv1connect.AgentControlServiceEnrollProcedure:       auth.Agent,
	droverv1connect.AgentControlServiceHeartbeatProcedure:    auth.Agent,
	droverv1connect.AgentControlServiceWatchDesiredProcedure: auth.Agent,
	droverv1connect.AgentControlServiceReportProcedure:       auth.Agent,

	droverv1connect.PeerServiceJoinProcedure:            auth.Admin, // or a peer
	droverv1connect.PeerServiceApplyProcedure:           auth.Peer,
	droverv1connect.PeerServiceReadIndexProcedure:       auth.Peer,
	droverv1connect.PeerServiceNodeInfoProcedure:        auth.Peer,
	droverv1connect.PeerServiceReplicateBlobProcedure:   auth.Peer,
	droverv1connect.PeerServiceAgentHeartbeatsProcedure: auth.Peer,
	droverv1connect.PeerServiceAgentReportProcedure:     auth.Peer,
	droverv1connect.PeerServiceAgentTelemetryProcedure:  auth.Peer,
	droverv1connect.PeerServiceRemoveMemberProcedure:    auth.Peer,
}

// unauthenticated lists the services anyone may call: server reflection
// describes the API, which is public anyway, so that grpcurl and buf curl
// work without a token.
var unauthenticated = map[string]bool{
	"/" + grpcreflect.ReflectV1ServiceName + "/":      true,
	"/" + grpcreflect.ReflectV1AlphaServiceName + "/": true,
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p auth.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principalFrom returns the caller of the request in ctx; the hub itself
// when there is none.
func principalFrom(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey{}).(auth.Principal)
	return p
}

// authInterceptor authenticates every RPC before its payload is read and
// checks the caller's permission: Unauthenticated without a valid token,
// PermissionDenied without the role.
func (n *Node) authInterceptor(next connect.ServerFunc) connect.ServerFunc {
	return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) error {
		if i := strings.LastIndexByte(spec.Procedure, '/'); i > 0 && unauthenticated[spec.Procedure[:i+1]] {
			return next(ctx, spec, stream)
		}
		perm, known := procedurePermissions[spec.Procedure]
		if !known {
			return connect.NewError(connect.CodeUnimplemented, "unknown procedure "+spec.Procedure)
		}
		info, _ := connect.CallInfoForServerContext(ctx)
		p, err := n.authenticate(ctx, info.RequestHeader().Get("Authorization"))
		if err != nil {
			return err
		}
		if spec.Procedure == droverv1connect.PeerServiceJoinProcedure && p.IsPeer {
			perm = auth.Peer
		}
		if perm != 0 && !p.Allowed(perm) {
			return permissionDenied(p, perm)
		}
		return next(withPrincipal(ctx, p), spec, stream)
	}
}

func permissionDenied(p auth.Principal, perm auth.Permission) *connect.Error {
	if p.IsPeer {
		return connect.NewError(connect.CodePermissionDenied, fmt.Sprintf("peers may not %s", perm))
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Sprintf("token %s (%s) lacks the %s permission",
		p.Token.GetId(), auth.RoleName(p.Token.GetRole()), perm))
}

// authenticate resolves an Authorization header to a principal.
func (n *Node) authenticate(ctx context.Context, header string) (auth.Principal, error) {
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || secret == "" {
		return auth.Principal{}, connect.NewError(connect.CodeUnauthenticated, "missing bearer token: send Authorization: Bearer <token> (the CLI reads --token or DROVER_TOKEN; an agent enrols with --join-token or DROVER_JOIN_TOKEN)")
	}
	if peer := n.peerSecret(); peer != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(peer)) == 1 {
		return auth.Principal{IsPeer: true}, nil
	}
	hash := auth.Hash(secret)
	rec := n.fsm.State().Snapshot().TokenByHash(hash)
	if rec == nil && n.raft.State() != raft.Leader {
		// The token may be newer than this follower's state: catch up with
		// the leader once, briefly, and look again.
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		if idx, err := n.readIndex(wctx); err == nil && n.fsm.WaitForIndex(wctx, idx) == nil {
			rec = n.fsm.State().Snapshot().TokenByHash(hash)
		}
		cancel()
	}
	if rec == nil {
		return auth.Principal{}, connect.NewError(connect.CodeUnauthenticated, "invalid or revoked token")
	}
	tok := rec.GetToken()
	if exp := tok.GetExpireTime(); exp != nil && !n.now().Before(exp.AsTime()) {
		return auth.Principal{}, connect.NewError(connect.CodeUnauthenticated, fmt.Sprintf("token %s expired at %s", tok.GetId(), exp.AsTime().Format(time.RFC3339)))
	}
	return auth.Principal{Token: tok}, nil
}

// authenticateHTTP does for plain HTTP handlers (blobs) what the
// interceptor does for RPCs, writing the error response itself.
func (n *Node) authenticateHTTP(w http.ResponseWriter, r *http.Request, perm auth.Permission) (auth.Principal, bool) {
	p, err := n.authenticate(r.Context(), r.Header.Get("Authorization"))
	if err == nil && !p.Allowed(perm) {
		err = permissionDenied(p, perm)
	}
	if err != nil {
		writeHTTPError(w, err)
		return p, false
	}
	return p, true
}
