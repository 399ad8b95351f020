// Command testplugin is a runner plugin that misbehaves on purpose, for
// the SDK's tests: DROVER_TEST_PLUGIN_MODE picks how.
//
//   - "exit": says why on standard error and exits before serving;
//   - anything else: serves; Load logs through every route a plugin
//     author might use, and Predict panics for a model loaded as "panic",
//     answers a model loaded as "echo" with its inputs, and never answers
//     one loaded as "hang".
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/droverhq/drover/plugins/sdk"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

type server struct{}

func (server) Load(_ context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error) {
	slog.Warn("slog warning", "model", req.GetId())
	log.Printf("log.Printf line %s", req.GetId())
	fmt.Fprintf(os.Stderr, "stderr line %s\n", req.GetId())
	fmt.Fprintf(os.Stdout, "stdout line %s\n", req.GetId())
	return &runnerv1.LoadResponse{}, nil
}

func (server) Predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	if req.GetId() == "hang" {
		<-ctx.Done() // stuck until the agent gives up
		return nil, ctx.Err()
	}
	if req.GetId() == "panic" {
		var m map[string]int
		m["boom"]++ // assignment to entry in nil map
	}
	if req.GetId() == "echo" {
		return &runnerv1.PredictResponse{Outputs: req.GetInputs()}, nil
	}
	return &runnerv1.PredictResponse{}, nil
}

func (server) Unload(context.Context, string) error { return nil }

func main() {
	if os.Getenv("DROVER_TEST_PLUGIN_MODE") == "exit" {
		fmt.Fprintln(os.Stderr, "cannot open /dev/nvidia0: no such device")
		os.Exit(3)
	}
	sdk.Serve(sdk.Runner{Name: "testplugin", Version: "0", Formats: []string{"test"}, Server: server{}})
}
