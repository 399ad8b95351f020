package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/auth"
	"github.com/droverhq/drover/internal/progress"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// The views below are the JSON the CLI prints: flat, snake_case, stable
// for scripts. They are built from the API's messages.

type actorView struct {
	TokenID string `json:"token_id"`
	Name    string `json:"name"`
	Role    string `json:"role,omitempty"`
}

func actor(a *droverv1.Actor) actorView {
	v := actorView{TokenID: a.GetTokenId(), Name: a.GetName()}
	if a.GetRole() != droverv1.Role_ROLE_UNSPECIFIED {
		v.Role = auth.RoleName(a.GetRole())
	}
	return v
}

func (a actorView) String() string {
	if a.Name == "" {
		return a.TokenID
	}
	return a.Name + " (" + a.TokenID + ")"
}

func ts(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime().UTC()
	return &v
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format("2006-01-02 15:04:05")
}

type modelView struct {
	Name          string            `json:"name"`
	Description   string            `json:"description,omitempty"`
	State         string            `json:"state"`
	LatestVersion uint64            `json:"latest_version"`
	Aliases       map[string]uint64 `json:"aliases"`
	Labels        map[string]string `json:"labels,omitempty"`
	CreatedBy     actorView         `json:"created_by"`
	CreateTime    *time.Time        `json:"create_time"`
	UpdateTime    *time.Time        `json:"update_time"`
	Versions      []versionView     `json:"versions,omitempty"`
}

func modelOf(m *droverv1.Model, versions []*droverv1.ModelVersion) modelView {
	v := modelView{
		Name:          m.GetName(),
		Description:   m.GetDescription(),
		State:         enumName(m.GetState().String(), "MODEL_STATE_"),
		LatestVersion: m.GetLatestVersion(),
		Aliases:       m.GetAliases(),
		Labels:        m.GetLabels(),
		CreatedBy:     actor(m.GetCreatedBy()),
		CreateTime:    ts(m.GetCreateTime()),
		UpdateTime:    ts(m.GetUpdateTime()),
	}
	if v.Aliases == nil {
		v.Aliases = map[string]uint64{}
	}
	for _, mv := range versions {
		v.Versions = append(v.Versions, versionOf(mv))
	}
	return v
}

type lineageView struct {
	ParentVersion  uint64 `json:"parent_version,omitempty"`
	Dataset        string `json:"dataset,omitempty"`
	DatasetVersion uint64 `json:"dataset_version,omitempty"`
	DatasetDigest  string `json:"dataset_digest,omitempty"`
	RunID          string `json:"run_id,omitempty"`
}

type versionView struct {
	Model                string             `json:"model"`
	Version              uint64             `json:"version"`
	Digest               string             `json:"digest"`
	SizeBytes            int64              `json:"size_bytes"`
	Format               string             `json:"format,omitempty"`
	Runner               string             `json:"runner,omitempty"`
	State                string             `json:"state"`
	StateReason          string             `json:"state_reason,omitempty"`
	Aliases              []string           `json:"aliases"`
	Params               map[string]string  `json:"params,omitempty"`
	Metrics              map[string]float64 `json:"metrics,omitempty"`
	Lineage              *lineageView       `json:"lineage,omitempty"`
	Schema               json.RawMessage    `json:"schema,omitempty"`
	ReferenceProfileSize int64              `json:"reference_profile_size,omitempty"`
	Description          string             `json:"description,omitempty"`
	CreatedBy            actorView          `json:"created_by"`
	CreateTime           *time.Time         `json:"create_time"`
}

func versionOf(mv *droverv1.ModelVersion) versionView {
	v := versionView{
		Model:                mv.GetModel(),
		Version:              mv.GetVersion(),
		Digest:               mv.GetArtifact().GetDigest(),
		SizeBytes:            mv.GetArtifact().GetSizeBytes(),
		Format:               mv.GetFormat(),
		Runner:               mv.GetRunner(),
		State:                enumName(mv.GetState().String(), "VERSION_STATE_"),
		StateReason:          mv.GetStateReason(),
		Aliases:              mv.GetAliases(),
		Params:               mv.GetParams(),
		Metrics:              mv.GetMetrics(),
		ReferenceProfileSize: mv.GetReferenceProfileSize(),
		Description:          mv.GetDescription(),
		CreatedBy:            actor(mv.GetCreatedBy()),
		CreateTime:           ts(mv.GetCreateTime()),
	}
	if v.Aliases == nil {
		v.Aliases = []string{}
	}
	if l := mv.GetLineage(); l != nil {
		v.Lineage = &lineageView{
			ParentVersion: l.GetParentVersion(), Dataset: l.GetDataset(), DatasetVersion: l.GetDatasetVersion(),
			DatasetDigest: l.GetDatasetDigest(), RunID: l.GetRunId(),
		}
	}
	if s := mv.GetSchema(); s != nil {
		v.Schema, _ = protojson.MarshalOptions{UseProtoNames: true}.Marshal(s)
	}
	return v
}

func enumName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func kvString[V any](m map[string]V) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func printVersionDetail(w io.Writer, v versionView) {
	t := newTable(w)
	fmt.Fprintf(t, "Model:\t%s\n", v.Model)
	fmt.Fprintf(t, "Version:\t%d\n", v.Version)
	fmt.Fprintf(t, "State:\t%s\n", withReason(v.State, v.StateReason))
	fmt.Fprintf(t, "Aliases:\t%s\n", dash(strings.Join(v.Aliases, ", ")))
	fmt.Fprintf(t, "Artifact:\t%s (%s)\n", v.Digest, progress.Bytes(v.SizeBytes))
	fmt.Fprintf(t, "Format:\t%s\n", dash(v.Format))
	fmt.Fprintf(t, "Runner:\t%s\n", dash(v.Runner))
	fmt.Fprintf(t, "Params:\t%s\n", dash(kvString(v.Params)))
	fmt.Fprintf(t, "Metrics:\t%s\n", dash(kvString(v.Metrics)))
	if l := v.Lineage; l != nil {
		fmt.Fprintf(t, "Lineage:\tparent=%d dataset=%s:%d digest=%s run=%s\n", l.ParentVersion, dash(l.Dataset), l.DatasetVersion, dash(l.DatasetDigest), dash(l.RunID))
	}
	if len(v.Schema) > 0 {
		fmt.Fprintf(t, "Schema:\t%s\n", v.Schema)
	}
	if v.ReferenceProfileSize > 0 {
		fmt.Fprintf(t, "Profile:\t%s\n", progress.Bytes(v.ReferenceProfileSize))
	}
	if v.Description != "" {
		fmt.Fprintf(t, "Description:\t%s\n", v.Description)
	}
	fmt.Fprintf(t, "Created:\t%s by %s\n", fmtTimeP(v.CreateTime), v.CreatedBy)
	t.Flush()
}

func withReason(state, reason string) string {
	if reason == "" {
		return state
	}
	return state + " (" + reason + ")"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTimeP(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
