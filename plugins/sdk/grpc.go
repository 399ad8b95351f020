package sdk

import (
	"context"
	"errors"
	"io"

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
	impl *Runner
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	runnerv1.RegisterRunnerServiceServer(s, &grpcServer{r: p.impl})
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return runnerv1.NewRunnerServiceClient(c), nil
}

// grpcServer is the plugin side.
type grpcServer struct {
	runnerv1.UnimplementedRunnerServiceServer
	r *Runner
}

var errNoServer = status.Error(codes.Unimplemented, "this runner does not serve models")

func (s *grpcServer) Describe(context.Context, *runnerv1.DescribeRequest) (*runnerv1.DescribeResponse, error) {
	return s.r.describe(), nil
}

func (s *grpcServer) Load(ctx context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error) {
	if s.r.Server == nil {
		return nil, errNoServer
	}
	return s.r.Server.Load(ctx, req)
}

func (s *grpcServer) Predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	if s.r.Server == nil {
		return nil, errNoServer
	}
	return s.r.Server.Predict(ctx, req)
}

func (s *grpcServer) Unload(ctx context.Context, req *runnerv1.UnloadRequest) (*runnerv1.UnloadResponse, error) {
	if s.r.Server == nil {
		return nil, errNoServer
	}
	return &runnerv1.UnloadResponse{}, s.r.Server.Unload(ctx, req.GetId())
}

func (s *grpcServer) Train(req *runnerv1.TrainRequest, stream grpc.ServerStreamingServer[runnerv1.TrainResponse]) error {
	if s.r.Trainer == nil {
		return status.Error(codes.Unimplemented, "this runner does not train models")
	}
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
