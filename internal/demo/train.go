package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/churn"
	"github.com/droverhq/drover/internal/training"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// trainRequest is one model the demo trains itself.
type trainRequest struct {
	name        string // for the run's tags
	dataset     string // a CSV file
	params      map[string]string
	description string
	out         string // the output directory
}

// trainAndPush trains a native model as `drover train --runner native
// --push --create` does, through the same package (internal/training)
// and the same calls to the hub: the model created if need be, the run
// recorded before training, the artifact uploaded and registered as the
// next version with its metrics, parameters, the schema, the run and the
// data set's digest in its lineage, and a reference profile built from
// the training data (for drift); the run then ended with the version.
func trainAndPush(ctx context.Context, hub *client.Client, req trainRequest) (*droverv1.ModelVersion, error) {
	opts, params, err := training.NativeOptions(req.params)
	if err != nil {
		return nil, err
	}
	schema := Schema()
	ignore := []string{churn.IDColumn}
	datasetDigest, _, err := client.HashFile(req.dataset, nil)
	if err != nil {
		return nil, fmt.Errorf("data set: %w", err)
	}
	cctx, cancel := callCtx(ctx)
	_, err = hub.Models.CreateModel(cctx, &droverv1.CreateModelRequest{Name: model, Description: "who of the customers is about to leave"})
	cancel()
	if err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
		return nil, fmt.Errorf("creating model %s: %w", model, err)
	}
	cctx, cancel = callCtx(ctx)
	run, err := hub.Runs.CreateRun(cctx, &droverv1.CreateRunRequest{Model: model, Runner: training.NativeRunner, Params: params,
		Tags: map[string]string{"source": "drover demo", "demo_model": req.name}, DatasetDigest: datasetDigest.String()})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("starting a run of %s at the hub: %w", model, err)
	}
	runID := run.GetRun().GetId()
	mv, err := func() (*droverv1.ModelVersion, error) {
		res, err := training.TrainNative(ctx, training.NativeRequest{Dataset: req.dataset, Target: churn.Target, Ignore: ignore,
			Schema: schema, OutputDir: req.out, Options: opts})
		if err != nil {
			return nil, fmt.Errorf("training: %w", err)
		}
		metrics, _ := training.FiniteOnly(res.Metrics)
		profile, _, err := training.Profile(req.dataset, churn.Target, ignore, schema, res.Format, res.Artifact)
		if err != nil {
			return nil, fmt.Errorf("reference profile: %w", err)
		}
		up, err := hub.UploadFile(ctx, res.Artifact, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("uploading the artifact: %w", err)
		}
		cctx, cancel := callCtx(ctx)
		defer cancel()
		resp, err := hub.Models.CreateVersion(cctx, &droverv1.CreateVersionRequest{
			Model: model, Artifact: up.BlobRef(), Format: res.Format, Runner: training.NativeRunner, Params: params, Metrics: metrics,
			Schema: schema, ReferenceProfile: profile, Description: req.description,
			Lineage: &droverv1.Lineage{RunId: runID, DatasetDigest: datasetDigest.String()},
		})
		if err != nil {
			return nil, fmt.Errorf("registering the version: %w", err)
		}
		mv := resp.GetVersion()
		cctx2, cancel2 := callCtx(ctx)
		defer cancel2()
		_, err = hub.Runs.LogRun(cctx2, &droverv1.LogRunRequest{Id: runID, EndState: droverv1.RunState_RUN_STATE_SUCCEEDED,
			Metrics: metrics, Artifact: mv.GetArtifact(), Version: mv.GetVersion()})
		if err != nil {
			return nil, fmt.Errorf("registered %s:%d, but ending run %s failed: %w", model, mv.GetVersion(), runID, err)
		}
		return mv, nil
	}()
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, logErr := hub.Runs.LogRun(cctx, &droverv1.LogRunRequest{Id: runID, EndState: droverv1.RunState_RUN_STATE_FAILED, Message: err.Error()})
		return nil, errors.Join(err, logErr)
	}
	return mv, nil
}

// demoPolicy is the retraining policy the demo puts: retrain on drift
// that lasts two windows, on the base data set and the agents' labelled
// feedback, on an agent with a GPU; register a candidate that beats the
// champion's accuracy by 0.01 on the same hold-out, and roll it out as a
// canary on one agent judged by its errors and its accuracy, then to
// everyone.
func demoPolicy() *droverv1.RetrainPolicy {
	return &droverv1.RetrainPolicy{
		Name: policy, Model: model, Runner: training.NativeRunner, Params: map[string]string{"l2": "1"},
		Triggers: &droverv1.RetrainTriggers{Drift: &droverv1.DriftTrigger{ConsecutiveWindows: 2}},
		Cooldown: durationOf(time.Hour),
		Dataset: &droverv1.DatasetRecipe{Base: dataset, Feedback: true, Target: churn.Target, Ignore: []string{churn.IDColumn},
			MinRows: 100, CollectTimeout: durationOf(10 * time.Second)},
		Placement: &droverv1.Placement{Gpus: 1},
		Promotion: &droverv1.Promotion{Metric: "accuracy", Margin: 0.01},
		Timeout:   durationOf(5 * time.Minute),
		Rollout: &droverv1.RolloutTemplate{Auto: true, Steps: []*droverv1.RolloutStep{
			{Agents: 1, Weight: 50, Bake: durationOf(4 * time.Second), Gates: []*droverv1.Gate{
				{Name: "errors", Metric: "error_rate", Max: proto.Float64(0.05), MinSamples: 10},
				{Name: "accuracy", Metric: "accuracy", Min: proto.Float64(0.6), MinSamples: 50},
			}},
			{Percent: 100},
		}},
	}
}

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
