package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// grpcPlugin joins a Runner to go-plugin's gRPC transport: the plugin side
// serves it, the agent side gets a Client.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl   *Runner
	logger *slog.Logger
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	runnerv1.RegisterRunnerServiceServer(s, &grpcServer{r: p.impl, logger: p.logger})
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return runnerv1.NewRunnerServiceClient(c), nil
}

// grpcServer is the plugin side.
type grpcServer struct {
	runnerv1.UnimplementedRunnerServiceServer
	r      *Runner
	logger *slog.Logger
}

// recovered turns a panic in the runner's code into the call's error, so
// that one bad request does not take down every model the plugin serves.
// Deferred by each call, with the call's error.
func (s *grpcServer) recovered(call string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	logger := s.logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.Error("the runner panicked", "call", call, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	*err = status.Errorf(codes.Internal, "the runner panicked in %s: %v", call, v)
}

var errNoServer = status.Error(codes.Unimplemented, "this runner does not serve models")

func (s *grpcServer) Describe(context.Context, *runnerv1.DescribeRequest) (*runnerv1.DescribeResponse, error) {
	return s.r.describe(), nil
}

func (s *grpcServer) Load(ctx context.Context, req *runnerv1.LoadRequest) (resp *runnerv1.LoadResponse, err error) {
	if s.r.Server == nil {
		return nil, errNoServer
	}
	defer s.recovered("Load", &err)
	return s.r.Server.Load(ctx, req)
}

func (s *grpcServer) Predict(ctx context.Context, req *runnerv1.PredictRequest) (resp *runnerv1.PredictResponse, err error) {
	if s.r.Server == nil {
		return nil, errNoServer
	}
	defer s.recovered("Predict", &err)
	return s.r.Server.Predict(ctx, req)
}

func (s *grpcServer) Unload(ctx context.Context, req *runnerv1.UnloadRequest) (resp *runnerv1.UnloadResponse, err error) {
	if s.r.Server == nil {
		return nil, errNoServer
	}
	defer s.recovered("Unload", &err)
	return &runnerv1.UnloadResponse{}, s.r.Server.Unload(ctx, req.GetId())
}

func (s *grpcServer) Train(req *runnerv1.TrainRequest, stream grpc.ServerStreamingServer[runnerv1.TrainResponse]) (err error) {
	if s.r.Trainer == nil {
		return status.Error(codes.Unimplemented, "this runner does not train models")
	}
	defer s.recovered("Train", &err)
	return s.r.Trainer.Train(stream.Context(), req, stream.Send)
}

// recvAll reads a training stream to its end, handing each event to fn.
func recvAll(stream grpc.ServerStreamingClient[runnerv1.TrainResponse], fn func(*runnerv1.TrainResponse) error) error {
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}
