package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/droverhq/drover/internal/progress"
	"github.com/droverhq/drover/internal/training"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func (a *app) modelsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "models",
		Aliases: []string{"model"},
		Short:   "Manage the model registry: models, versions and aliases",
	}
	cmd.AddCommand(a.modelsCreate(), a.modelsPush(), a.modelsList(), a.modelsShow(), a.modelsAlias(), a.modelsArchive(), a.modelsSetState())
	return cmd
}

// versionRef is "name", "name:3", "name:champion" or "name:latest".
type versionRef struct {
	model   string
	version uint64
	alias   string
}

func parseRef(s string) versionRef {
	name, sel, ok := strings.Cut(s, ":")
	if !ok {
		return versionRef{model: name}
	}
	if n, err := strconv.ParseUint(sel, 10, 64); err == nil {
		return versionRef{model: name, version: n}
	}
	return versionRef{model: name, alias: sel}
}

func (r versionRef) selected() bool { return r.version != 0 || r.alias != "" }

func (a *app) modelsCreate() *cobra.Command {
	var description string
	var labels []string
	cmd := &cobra.Command{
		Use:   "create <name>",
		Short: "Create a model with no versions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lbl, err := parseKV("label", labels)
			if err != nil {
				return err
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: args[0], Description: description, Labels: lbl})
			if err != nil {
				return err
			}
			v := modelOf(resp.GetModel(), nil)
			return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "Created model %s\n", v.Name) })
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "what the model is for")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "a label, key=value (repeatable)")
	return cmd
}

func (a *app) modelsPush() *cobra.Command {
	var (
		file, format, runner, schemaFile, profileFile, description, runID, datasetDigest string
		dataset, target                                                                  string
		params, metrics, ignore                                                          []string
		parent                                                                           uint64
		create                                                                           bool
	)
	cmd := &cobra.Command{
		Use:   "push <name> --file <artifact>",
		Short: "Upload an artifact and register it as the model's next version",
		Long: `push hashes the artifact, streams it to the hub (which verifies the digest as it
arrives and keeps it only once it is whole on a quorum of nodes), then registers
the new version and prints its number. On a terminal it shows progress.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("--file is required")
			}
			p, err := parseKV("param", params)
			if err != nil {
				return err
			}
			m, err := parseMetrics(metrics)
			if err != nil {
				return err
			}
			req := &droverv1.CreateVersionRequest{
				Model: args[0], Format: format, Runner: runner, Params: p, Metrics: m,
				Description: description, CreateModel: create,
			}
			if schemaFile != "" {
				if req.Schema, err = readSchema(schemaFile); err != nil {
					return err
				}
			}
			switch {
			case profileFile != "" && dataset != "":
				return usagef("--profile and --dataset both give the reference profile: use one")
			case profileFile != "":
				if req.ReferenceProfile, err = os.ReadFile(profileFile); err != nil {
					return err
				}
			case dataset != "":
				if req.ReferenceProfile, _, err = training.Profile(dataset, target, ignore, req.Schema, format, file); err != nil {
					return err
				}
			}
			if parent != 0 || runID != "" || datasetDigest != "" {
				req.Lineage = &droverv1.Lineage{ParentVersion: parent, RunId: runID, DatasetDigest: datasetDigest}
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			up, err := a.upload(cmd, c, file)
			if err != nil {
				return err
			}
			req.Artifact = up.BlobRef()
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Models.CreateVersion(ctx, req)
			if err != nil {
				return err
			}
			v := versionOf(resp.GetVersion())
			return a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "Pushed %s:%d %s (%s)\n", v.Model, v.Version, v.Digest, progress.Bytes(v.SizeBytes))
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "the artifact to upload (required)")
	f.StringVar(&format, "format", "", "the artifact's format, e.g. drover-native, onnx, sklearn")
	f.StringVar(&runner, "runner", "", "the runner that serves it, e.g. native")
	f.StringArrayVar(&params, "param", nil, "a training parameter, key=value (repeatable)")
	f.StringArrayVar(&metrics, "metric", nil, "an evaluation metric, key=number (repeatable)")
	f.StringVar(&schemaFile, "schema", "", "the feature schema, a JSON or YAML file (see docs/cli.md)")
	f.StringVar(&profileFile, "profile", "", "the reference profile of the training data, a file (a serialised drover.v1.ReferenceProfile)")
	f.StringVar(&dataset, "dataset", "", "the training data, CSV or Parquet: build the reference profile from it (for drift)")
	f.StringVar(&target, "target", "", "with --dataset: the label column, left out of the features")
	f.StringSliceVar(&ignore, "ignore", nil, "with --dataset: columns to leave out, e.g. an id")
	f.StringVar(&description, "description", "", "what changed in this version")
	f.Uint64Var(&parent, "parent", 0, "the version this one was trained from")
	f.StringVar(&runID, "run-id", "", "the training run that produced it")
	f.StringVar(&datasetDigest, "dataset-digest", "", "the digest of the training data set")
	f.BoolVar(&create, "create", false, "create the model if it does not exist")
	return cmd
}

func parseMetrics(pairs []string) (map[string]float64, error) {
	kv, err := parseKV("metric", pairs)
	if err != nil || kv == nil {
		return nil, err
	}
	out := make(map[string]float64, len(kv))
	for k, v := range kv {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, usagef("--metric %s=%s: not a number", k, v)
		}
		out[k] = f
	}
	return out, nil
}

// readSchema reads a FeatureSchema from JSON or YAML (the protobuf JSON
// mapping: {"inputs": [{"name": "tenure", "datatype": "FP64", ...}]}).
func readSchema(path string) (*droverv1.FeatureSchema, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", path, err)
	}
	s := new(droverv1.FeatureSchema)
	if err := protojson.Unmarshal(js, s); err != nil {
		return nil, fmt.Errorf("schema %s: %w", path, err)
	}
	return s, nil
}

func (a *app) modelsList() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List models",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Models.ListModels(ctx, &droverv1.ListModelsRequest{Read: a.read(), IncludeArchived: all})
			if err != nil {
				return err
			}
			views := []modelView{}
			for _, m := range resp.GetModels() {
				views = append(views, modelOf(m, nil))
			}
			return a.emit(map[string]any{"models": views}, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintln(t, "NAME\tSTATE\tLATEST\tALIASES\tUPDATED")
				for _, v := range views {
					fmt.Fprintf(t, "%s\t%s\t%d\t%s\t%s\n", v.Name, v.State, v.LatestVersion, dash(kvString(v.Aliases)), fmtTimeP(v.UpdateTime))
				}
				t.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include archived models")
	return cmd
}

func (a *app) modelsShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show <name>[:<version>|:<alias>]",
		Short: "Show a model and its versions, or one version in detail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := parseRef(args[0])
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if ref.selected() {
				req := &droverv1.GetVersionRequest{Model: ref.model, Read: a.read()}
				if ref.version != 0 {
					req.Selector = &droverv1.GetVersionRequest_Version{Version: ref.version}
				} else {
					req.Selector = &droverv1.GetVersionRequest_Alias{Alias: ref.alias}
				}
				resp, err := c.Models.GetVersion(ctx, req)
				if err != nil {
					return err
				}
				v := versionOf(resp.GetVersion())
				return a.emit(v, func(w io.Writer) { printVersionDetail(w, v) })
			}
			resp, err := c.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: ref.model, Read: a.read()})
			if err != nil {
				return err
			}
			v := modelOf(resp.GetModel(), resp.GetVersions())
			return a.emit(v, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintf(t, "Model:\t%s\n", v.Name)
				if v.Description != "" {
					fmt.Fprintf(t, "Description:\t%s\n", v.Description)
				}
				fmt.Fprintf(t, "State:\t%s\n", v.State)
				fmt.Fprintf(t, "Labels:\t%s\n", dash(kvString(v.Labels)))
				fmt.Fprintf(t, "Created:\t%s by %s\n", fmtTimeP(v.CreateTime), v.CreatedBy)
				t.Flush()
				fmt.Fprintln(w)
				t = newTable(w)
				fmt.Fprintln(t, "VERSION\tSTATE\tALIASES\tDIGEST\tSIZE\tFORMAT\tCREATED\tBY")
				for _, mv := range v.Versions {
					fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mv.Version, mv.State, dash(strings.Join(mv.Aliases, ",")),
						shortDigest(mv.Digest), progress.Bytes(mv.SizeBytes), dash(mv.Format), fmtTimeP(mv.CreateTime), mv.CreatedBy.Name)
				}
				t.Flush()
				for _, al := range resp.GetAliases() {
					fmt.Fprintf(w, "\nalias %s -> %d, moved %s by %s: %s", al.GetName(), al.GetVersion(), fmtTime(al.GetUpdateTime()),
						actor(al.GetUpdatedBy()), dash(al.GetReason()))
				}
				if len(resp.GetAliases()) > 0 {
					fmt.Fprintln(w)
				}
			})
		},
	}
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func (a *app) modelsAlias() *cobra.Command {
	var (
		reason string
		expect int64
		force  bool
		del    bool
	)
	cmd := &cobra.Command{
		Use:   "alias <name> <alias> [<version>]",
		Short: "Point an alias (champion, candidate, ...) at a version, or delete it",
		Long: `alias moves an alias atomically and records who moved it and why. With
--expect N it moves only if the alias now points at version N (0: only if it is
new), so two operators cannot overwrite each other's move.`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if del {
				if len(args) != 2 {
					return usagef("--delete takes a model and an alias, no version")
				}
				if _, err := c.Models.DeleteAlias(ctx, &droverv1.DeleteAliasRequest{Model: args[0], Alias: args[1], Reason: reason}); err != nil {
					return err
				}
				return a.emit(map[string]any{"model": args[0], "alias": args[1], "deleted": true}, func(w io.Writer) {
					fmt.Fprintf(w, "Deleted alias %s of %s\n", args[1], args[0])
				})
			}
			if len(args) != 3 {
				return usagef("give the version the alias should point at")
			}
			version, err := strconv.ParseUint(args[2], 10, 64)
			if err != nil || version == 0 {
				return usagef("version %q is not a version number", args[2])
			}
			req := &droverv1.SetAliasRequest{Model: args[0], Alias: args[1], Version: version, Reason: reason, Force: force}
			if expect >= 0 {
				e := uint64(expect)
				req.ExpectedVersion = &e
			}
			resp, err := c.Models.SetAlias(ctx, req)
			if err != nil {
				return err
			}
			out := map[string]any{"model": args[0], "alias": args[1], "version": version, "previous_version": resp.GetPreviousVersion()}
			return a.emit(out, func(w io.Writer) {
				if p := resp.GetPreviousVersion(); p != 0 && p != version {
					fmt.Fprintf(w, "Moved %s of %s from %d to %d\n", args[1], args[0], p, version)
				} else {
					fmt.Fprintf(w, "%s of %s points at %d\n", args[1], args[0], version)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	f.Int64Var(&expect, "expect", -1, "move only if the alias now points at this version (0: only if new)")
	f.BoolVar(&force, "force", false, "allow pointing at a rejected version")
	f.BoolVar(&del, "delete", false, "delete the alias")
	return cmd
}

func (a *app) modelsArchive() *cobra.Command {
	var (
		reason string
		undo   bool
	)
	cmd := &cobra.Command{
		Use:   "archive <name>[:<version>]",
		Short: "Archive a model (no new versions, hidden from lists) or one version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := parseRef(args[0])
			if ref.alias != "" {
				return usagef("archive a version by number, not by alias")
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if ref.version != 0 {
				st := droverv1.VersionState_VERSION_STATE_ARCHIVED
				if undo {
					st = droverv1.VersionState_VERSION_STATE_READY
				}
				resp, err := c.Models.SetVersionState(ctx, &droverv1.SetVersionStateRequest{Model: ref.model, Version: ref.version, State: st, Reason: reason})
				if err != nil {
					return err
				}
				v := versionOf(resp.GetVersion())
				return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "%s:%d is %s\n", v.Model, v.Version, v.State) })
			}
			resp, err := c.Models.ArchiveModel(ctx, &droverv1.ArchiveModelRequest{Name: ref.model, Reason: reason, Undo: undo})
			if err != nil {
				return err
			}
			v := modelOf(resp.GetModel(), nil)
			return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "Model %s is %s\n", v.Name, v.State) })
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	cmd.Flags().BoolVar(&undo, "undo", false, "restore instead of archiving")
	return cmd
}

func (a *app) modelsSetState() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "set-state <name>:<version> <ready|rejected|archived>",
		Short: "Set a version's state, e.g. reject a bad version by hand",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := parseRef(args[0])
			if ref.version == 0 {
				return usagef("give the version as <name>:<number>")
			}
			st, ok := droverv1.VersionState_value["VERSION_STATE_"+strings.ToUpper(args[1])]
			if !ok || st == 0 {
				return usagef("state %q: want ready, rejected or archived", args[1])
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Models.SetVersionState(ctx, &droverv1.SetVersionStateRequest{Model: ref.model, Version: ref.version, State: droverv1.VersionState(st), Reason: reason})
			if err != nil {
				return err
			}
			v := versionOf(resp.GetVersion())
			return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "%s:%d is %s\n", v.Model, v.Version, v.State) })
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept with the version and in the audit trail)")
	return cmd
}
