// Package sdk is what a runner plugin author imports: the interfaces a
// runner implements (Server to serve models, Trainer to train them), Serve
// to run a plugin binary, and Logger to log with. Launch, LaunchConfig and
// Client are the other side, the agent's (and a plugin's tests'): they
// start a plugin binary and talk to it.
//
// A plugin is a separate executable that the agent starts with
// github.com/hashicorp/go-plugin and talks to over gRPC on a local socket.
// Start-up goes through a handshake (a magic cookie and a negotiated
// protocol version), and the agent verifies the binary's SHA-256 checksum
// before it runs it. A plugin's main is one call:
//
//	func main() {
//		sdk.Serve(sdk.Runner{Name: "centroid", Version: "1.0.0", Formats: []string{"centroid-json"},
//			Server: &server{}, Trainer: &trainer{}})
//	}
//
// Every request that crosses the plugin boundary costs a gRPC round trip
// (~170 µs here), so the agent sends Predict a batch of rows, never a row
// at a time.
package sdk

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/droverhq/drover/internal/logging"

	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// ProtocolVersion is the version of the agent-plugin protocol this SDK
// speaks. A plugin built against another version is refused at start-up
// with an error naming both.
const ProtocolVersion = 1

// Handshake is the start-up agreement between the agent and a plugin. The
// cookie only keeps a plugin binary from being run by hand by mistake; it
// is not a security measure (the checksum is).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "DROVER_RUNNER_PLUGIN",
	MagicCookieValue: "c3b0f2a4-drover-runner",
}

// MaxMessageBytes bounds one message between the agent and a plugin, in
// either direction: a batch of rows (the agent accepts inference bodies of
// up to 64 MiB of JSON and batches several requests) or its answer.
// gRPC's own default, 4 MiB, refused a few images' worth of rows.
const MaxMessageBytes = 256 << 20

// pluginName is the name the runner is dispensed under.
const pluginName = "runner"

// Server serves models: Load an artifact under an id, Predict batches of
// rows with it, Unload it. Implementations must be safe for concurrent
// use: the agent predicts with several models, and several batches, at
// once.
type Server interface {
	// Load reads the artifact at req.ArtifactPath (verified by its digest
	// already) and keeps the model under req.Id until Unload. It returns
	// the model's outputs: they become the model's metadata, and the
	// outputs a request may ask for. The agent loads a model again, under
	// the same id, after the plugin was restarted; a Load that fails is
	// reported and retried with back-off, while the version it replaces
	// goes on serving.
	Load(ctx context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error)
	// Predict answers every row of the batch, in order. When the version
	// has a schema, the agent has checked the inputs against it (names,
	// datatypes, shapes); without one, nothing is checked and Predict
	// must refuse what it cannot read. Return a gRPC status error with
	// codes.InvalidArgument for input the model cannot take (the client
	// gets its message with a 400) and anything else for a failure of the
	// runner (a 500).
	Predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error)
	// Unload frees the model loaded under id. An unknown id is not an
	// error.
	Unload(ctx context.Context, id string) error
}

// Trainer trains models. Train reads the data set, writes an artifact into
// the output directory, and reports as it goes through send: progress,
// log lines, and last the result with the artifact's path, its hold-out
// metrics and reference profile.
type Trainer interface {
	Train(ctx context.Context, req *runnerv1.TrainRequest, send func(*runnerv1.TrainResponse) error) error
}

// Runner is a plugin's description and implementation: a Server, a
// Trainer, or both.
type Runner struct {
	// Name names the runner in the agent's log and in `drover plugins
	// list`; a Trainer is known by it: retraining policies name it as
	// their runner. A runner with a Trainer needs one.
	Name string
	// Version is the runner's own version, shown beside its name.
	Version string
	// Formats are the artifact formats the Server loads: the agent sends
	// it every version whose format is one of them.
	Formats []string
	// Server serves models; nil for a runner that only trains.
	Server Server
	// Trainer trains models; nil for a runner that only serves.
	Trainer Trainer
}

func (r *Runner) describe() *runnerv1.DescribeResponse {
	return &runnerv1.DescribeResponse{Name: r.Name, Version: r.Version, Formats: r.Formats,
		CanServe: r.Server != nil, CanTrain: r.Trainer != nil}
}

// servedProtocol, when set at link time (-ldflags "-X
// github.com/droverhq/drover/plugins/sdk.servedProtocol=2"), makes a
// plugin announce another protocol version than ProtocolVersion: the
// SDK's tests build such a plugin to see the agent refuse it.
var servedProtocol string

// Serve runs the plugin: it answers the agent until the agent stops it.
// Call it from main; it does not return. It makes Logger the default
// logger. A panic in the runner's code fails the request it served
// (gRPC's Internal, which the agent answers with a 500) and is logged with
// its stack; the plugin goes on serving its other models.
func Serve(r Runner) {
	logger := Logger()
	slog.SetDefault(logger)
	hs := Handshake
	if servedProtocol != "" {
		v, err := strconv.ParseUint(servedProtocol, 10, 32)
		if err != nil {
			panic("sdk: servedProtocol " + servedProtocol + " is not a version number")
		}
		hs.ProtocolVersion = uint(v)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: hs,
		Plugins:         plugin.PluginSet{pluginName: &grpcPlugin{impl: &r, logger: logger}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return plugin.DefaultGRPCServer(append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes)))
		},
		Logger: logging.HCLog(logger, "runner"),
	})
}
