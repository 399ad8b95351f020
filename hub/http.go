package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"connectrpc.com/grpcreflect/v2"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// routes builds the node's one HTTP handler.
func (n *Node) routes() http.Handler {
	server := connect.NewServer(n.observeInterceptor, recoverInterceptor, errorInterceptor, n.authInterceptor)
	droverv1connect.RegisterModelServiceHandler(server, &modelService{n: n})
	droverv1connect.RegisterDatasetServiceHandler(server, &datasetService{n: n})
	droverv1connect.RegisterTokenServiceHandler(server, &tokenService{n: n})
	droverv1connect.RegisterAuditServiceHandler(server, &auditService{n: n})
	droverv1connect.RegisterClusterServiceHandler(server, &clusterService{n: n})
	droverv1connect.RegisterPeerServiceHandler(server, &peerService{n: n})
	droverv1connect.RegisterAgentServiceHandler(server, &agentService{n: n})
	droverv1connect.RegisterAgentControlServiceHandler(server, &agentControlService{n: n})
	droverv1connect.RegisterDriftServiceHandler(server, &driftService{n: n})
	droverv1connect.RegisterRolloutServiceHandler(server, &rolloutService{n: n})
	droverv1connect.RegisterRetrainServiceHandler(server, &retrainService{n: n})
	droverv1connect.RegisterRunServiceHandler(server, &runService{n: n})
	grpcreflect.Register(server)

	mux := http.NewServeMux()
	connecthttp.Mount(mux, server, connecthttp.WithReadMaxBytes(maxMessageBytes), connecthttp.WithSendMaxBytes(maxMessageBytes), connecthttp.WithCompressMinBytes(compressMinBytes))
	mux.HandleFunc("/v1/blobs/{digest}", n.handleBlob)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", n.handleReady)
	return mux
}

// handleReady answers 200 when this node can serve: it knows a leader, the
// cluster has its identity, and, if it is the leader, it has established
// its leadership. Otherwise 503 with the reason.
func (n *Node) handleReady(w http.ResponseWriter, _ *http.Request) {
	reason := ""
	_, leader := n.raft.LeaderWithID()
	switch {
	case leader == "":
		reason = "no known leader"
	case n.fsm.State().Snapshot().ClusterMeta() == nil:
		reason = "the cluster is not initialised yet"
	case n.raft.State() == raft.Leader && !n.leaderReady.Load():
		reason = "leader still establishing leadership"
	}
	if reason != "" {
		http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ready (leader %s)\n", leader)
}

// observeInterceptor records each RPC's count, code and latency, and logs
// failures: internal ones with their cause, at error level.
func (n *Node) observeInterceptor(next connect.ServerFunc) connect.ServerFunc {
	return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) error {
		start := time.Now()
		err := next(ctx, spec, stream)
		code := "ok"
		if err != nil {
			code = connect.CodeOf(err).String()
		}
		n.metrics.rpcRequests.WithLabelValues(spec.Procedure, code).Inc()
		n.metrics.rpcDuration.WithLabelValues(spec.Procedure).Observe(time.Since(start).Seconds())
		switch {
		case err == nil:
		case code == connect.CodeInternal.String(), code == connect.CodeUnknown.String(), code == connect.CodeDataLoss.String():
			n.logger.Error("rpc failed", "procedure", spec.Procedure, "code", code, "err", err, "cause", errors.Unwrap(err), "took", time.Since(start))
		default:
			n.logger.Debug("rpc refused", "procedure", spec.Procedure, "code", code, "err", err)
		}
		return err
	}
}

// errorInterceptor maps every error a handler returns to a Connect error.
func errorInterceptor(next connect.ServerFunc) connect.ServerFunc {
	return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) error {
		return connectError(next(ctx, spec, stream))
	}
}

// recoverInterceptor turns a panicking handler into an Internal error
// instead of a dead node.
func recoverInterceptor(next connect.ServerFunc) connect.ServerFunc {
	return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = connect.NewError(connect.CodeInternal, "internal error").WithCause(fmt.Errorf("panic: %v", r))
			}
		}()
		return next(ctx, spec, stream)
	}
}
