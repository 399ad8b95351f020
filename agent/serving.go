package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/internal/buildinfo"
	"github.com/droverhq/drover/plugins/native"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// NativeFormat is the artifact format of the built-in native runner.
const NativeFormat = "drover-native"

// servingRuntime loads the versions the reconciler asks for and serves
// them over the Open Inference Protocol (it is the oip.Backend of the
// agent's /v2 endpoints). Artifacts of the native format are served by the
// in-process native runner, those of a format a runner plugin serves by
// that plugin; a version of any other format is held as loaded but
// answers 503 until a runner for its format is installed. The reconciler
// has already verified the artifact's digest when Load is called.
type servingRuntime struct {
	plugins *pluginHost // nil without a plugin directory
	logger  *slog.Logger

	mu     sync.RWMutex
	loaded map[reconcile.Key]*servedVersion
}

type servedVersion struct {
	model   string
	version uint64
	format  string
	path    string
	schema  *oip.Schema
	native  *native.Model // for the native format

	plugin   *hostedPlugin // for a format a plugin serves
	pluginID string
	outputs  []*runnerv1.TensorInfo
}

func newServingRuntime(host *pluginHost, logger *slog.Logger) *servingRuntime {
	return &servingRuntime{plugins: host, logger: logger, loaded: map[reconcile.Key]*servedVersion{}}
}

// Load makes a version servable.
func (r *servingRuntime) Load(ctx context.Context, a *droverv1.DesiredAssignment, path string) error {
	v := &servedVersion{model: a.GetModel(), version: a.GetVersion(), format: a.GetFormat(), path: path}
	if a.GetFormat() == NativeFormat || a.GetRunner() == "native" {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if v.native, err = native.LoadArtifact(b); err != nil {
			return err
		}
		fs := a.GetSchema()
		if len(fs.GetInputs()) == 0 {
			fs = nativeSchema(v.native)
		}
		if v.schema, err = oip.CompileSchema(fs); err != nil {
			return err
		}
	} else if a.GetSchema() != nil {
		var err error
		if v.schema, err = oip.CompileSchema(a.GetSchema()); err != nil {
			return err
		}
	}
	k := reconcile.Key{Model: a.GetModel(), Role: a.GetRole()}
	if v.native == nil {
		if hp := r.plugins.forFormat(a.GetFormat()); hp != nil {
			v.plugin, v.pluginID = hp, fmt.Sprintf("%s/v%d", k, a.GetVersion())
			resp, err := hp.load(ctx, r.logger, &runnerv1.LoadRequest{Id: v.pluginID, ArtifactPath: path, Format: a.GetFormat(), Schema: a.GetSchema(), Params: a.GetParams()})
			if err != nil {
				return err
			}
			v.outputs = resp.GetOutputs()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loaded[k] = v
	return nil
}

// Unload stops serving a version.
func (r *servingRuntime) Unload(ctx context.Context, k reconcile.Key, version uint64) error {
	r.mu.Lock()
	v := r.loaded[k]
	if v == nil || v.version != version {
		r.mu.Unlock()
		return nil
	}
	delete(r.loaded, k)
	r.mu.Unlock()
	if v.plugin != nil {
		return v.plugin.unload(ctx, r.logger, v.pluginID)
	}
	return nil
}

// nativeSchema is the schema of a native model pushed without one: its
// numeric features as FP64, its categorical ones as BYTES.
func nativeSchema(m *native.Model) *droverv1.FeatureSchema {
	fs := &droverv1.FeatureSchema{}
	for _, f := range m.Encoder.Features {
		in := &droverv1.Feature{Name: f.Name, Datatype: string(oip.FP64), Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC}
		if f.Categorical {
			in.Datatype, in.Kind = string(oip.Bytes), droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL
		}
		fs.Inputs = append(fs.Inputs, in)
	}
	return fs
}

// Ready reports the agent ready to serve: it always is; each model says
// for itself.
func (r *servingRuntime) Ready() bool { return true }

// Metadata describes the agent as an inference server.
func (r *servingRuntime) Metadata() oip.ServerMetadata {
	return oip.ServerMetadata{Name: "drover-agent", Version: buildinfo.Version, Extensions: []string{}}
}

// Model finds a loaded version: the given one, or the primary's.
func (r *servingRuntime) Model(name, version string) (oip.Model, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var versions []string
	var found *servedVersion
	for k, v := range r.loaded {
		if k.Model != name {
			continue
		}
		versions = append(versions, strconv.FormatUint(v.version, 10))
		switch {
		case version == "" && k.Role == droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY:
			found = v
		case version != "" && strconv.FormatUint(v.version, 10) == version:
			found = v
		}
	}
	if found == nil {
		if version != "" {
			return nil, fmt.Errorf("%w: %s version %s is not loaded here", oip.ErrModelNotFound, name, version)
		}
		return nil, fmt.Errorf("%w: %s is not served here", oip.ErrModelNotFound, name)
	}
	slices.Sort(versions)
	return &versionModel{v: found, versions: slices.Compact(versions), logger: r.logger}, nil
}

// versionModel serves one loaded version over the protocol.
type versionModel struct {
	v        *servedVersion
	versions []string
	logger   *slog.Logger
}

// The native runner's outputs.
const (
	outputLabel         = "label"
	outputProbabilities = "probabilities"
	outputPrediction    = "prediction"
)

func (m *versionModel) Metadata() oip.ModelMetadata {
	md := oip.ModelMetadata{Name: m.v.model, Versions: m.versions, Platform: m.v.format, Inputs: []oip.TensorMetadata{}, Outputs: []oip.TensorMetadata{}}
	if m.v.schema != nil {
		md = m.v.schema.Metadata(m.v.model, m.v.format, m.versions)
	}
	if m.v.plugin != nil {
		md.Outputs = []oip.TensorMetadata{}
		for _, o := range m.v.outputs {
			md.Outputs = append(md.Outputs, oip.TensorMetadata{Name: o.GetName(), Datatype: oip.Datatype(o.GetDatatype()), Shape: o.GetShape()})
		}
	}
	if n := m.v.native; n != nil {
		if n.Task == native.Classification {
			md.Outputs = []oip.TensorMetadata{
				{Name: outputLabel, Datatype: oip.Bytes, Shape: []int64{-1}},
				{Name: outputProbabilities, Datatype: oip.FP64, Shape: []int64{-1, int64(len(n.Classes))}},
			}
		} else {
			md.Outputs = []oip.TensorMetadata{{Name: outputPrediction, Datatype: oip.FP64, Shape: []int64{-1}}}
		}
	}
	return md
}

func (m *versionModel) Ready() bool {
	return m.v.native != nil || m.v.plugin != nil && m.v.plugin.alive()
}

func (m *versionModel) Infer(ctx context.Context, r *oip.InferRequest) (*oip.InferResponse, error) {
	if m.v.plugin != nil {
		return m.inferPlugin(ctx, r)
	}
	n := m.v.native
	if n == nil {
		return nil, fmt.Errorf("%w: no runner serves format %q on this agent yet", oip.ErrModelNotReady, m.v.format)
	}
	rows, err := m.v.schema.Check(r)
	if err != nil {
		return nil, err
	}
	cols := make([]native.Column, len(n.Encoder.Features))
	for i, f := range n.Encoder.Features {
		cols[i] = column(f, r.Input(f.Name), rows)
	}
	out, err := n.Predict(cols)
	if err != nil {
		return nil, err
	}
	resp := &oip.InferResponse{ModelName: m.v.model, ModelVersion: strconv.FormatUint(m.v.version, 10)}
	if n.Task == native.Regression {
		resp.Outputs = []*oip.Tensor{{Name: outputPrediction, Datatype: oip.FP64, Shape: []int64{int64(rows)}, Numbers: out}}
		return resp, nil
	}
	k := len(n.Classes)
	labels := make([]string, rows)
	for i := range rows {
		p := out[i*k : (i+1)*k]
		labels[i] = n.Classes[slices.Index(p, slices.Max(p))]
	}
	resp.Outputs = []*oip.Tensor{
		{Name: outputLabel, Datatype: oip.Bytes, Shape: []int64{int64(rows)}, Strings: labels},
		{Name: outputProbabilities, Datatype: oip.FP64, Shape: []int64{int64(rows), int64(k)}, Numbers: out},
	}
	return resp, nil
}

// column turns an input tensor (checked against the schema) into the
// native runner's column. A nullable feature left out is the training
// mean (numeric) or no category.
func column(f native.EncodedFeature, t *oip.Tensor, rows int) native.Column {
	c := native.Column{Name: f.Name, Categorical: f.Categorical}
	switch {
	case t == nil && f.Categorical:
		c.Strings = make([]string, rows)
	case t == nil:
		c.Numbers = slices.Repeat([]float64{f.Mean}, rows)
	case f.Categorical && t.Datatype == oip.Bytes:
		c.Strings = t.Strings
	case f.Categorical:
		c.Strings = make([]string, len(t.Numbers))
		for i, v := range t.Numbers {
			c.Strings[i] = strconv.FormatFloat(v, 'g', -1, 64)
		}
	default:
		c.Numbers = t.Numbers
	}
	return c
}

// inferPlugin sends the request's rows to the runner plugin as one batch.
func (m *versionModel) inferPlugin(ctx context.Context, r *oip.InferRequest) (*oip.InferResponse, error) {
	rows := 0
	if m.v.schema != nil {
		var err error
		if rows, err = m.v.schema.Check(r); err != nil {
			return nil, err
		}
	} else if len(r.Inputs[0].Shape) > 0 {
		rows = int(r.Inputs[0].Shape[0])
	}
	req := &runnerv1.PredictRequest{Id: m.v.pluginID, Rows: int64(rows)}
	for _, t := range r.Inputs {
		req.Inputs = append(req.Inputs, &runnerv1.Tensor{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape, Numbers: t.Numbers, Strings: t.Strings})
	}
	resp, err := m.v.plugin.predict(ctx, m.logger, req)
	if err != nil {
		return nil, err
	}
	out := &oip.InferResponse{ModelName: m.v.model, ModelVersion: strconv.FormatUint(m.v.version, 10)}
	for _, t := range resp.GetOutputs() {
		ot := &oip.Tensor{Name: t.GetName(), Datatype: oip.Datatype(t.GetDatatype()), Shape: t.GetShape(), Numbers: t.GetNumbers(), Strings: t.GetStrings()}
		if err := ot.Validate(); err != nil {
			return nil, fmt.Errorf("runner plugin %s: output %s: %w", m.v.plugin.p.File, t.GetName(), err)
		}
		out.Outputs = append(out.Outputs, ot)
	}
	return out, nil
}
