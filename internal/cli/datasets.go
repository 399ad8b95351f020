package cli

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/progress"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func (a *app) datasetsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "datasets",
		Aliases: []string{"dataset"},
		Short:   "Manage versioned, content-addressed data sets",
	}
	cmd.AddCommand(a.datasetsPush(), a.datasetsList(), a.datasetsShow())
	cmd.AddCommand(a.datasetsValidate())
	return cmd
}

type datasetVersionView struct {
	Dataset     string            `json:"dataset"`
	Version     uint64            `json:"version"`
	Digest      string            `json:"digest"`
	SizeBytes   int64             `json:"size_bytes"`
	Format      string            `json:"format"`
	Rows        int64             `json:"rows,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Description string            `json:"description,omitempty"`
	CreatedBy   actorView         `json:"created_by"`
	CreateTime  *time.Time        `json:"create_time"`
}

func datasetVersionOf(v *droverv1.DatasetVersion) datasetVersionView {
	return datasetVersionView{
		Dataset: v.GetDataset(), Version: v.GetVersion(), Digest: v.GetContent().GetDigest(),
		SizeBytes: v.GetContent().GetSizeBytes(), Format: v.GetFormat(), Rows: v.GetRows(), Labels: v.GetLabels(),
		Description: v.GetDescription(), CreatedBy: actor(v.GetCreatedBy()), CreateTime: ts(v.GetCreateTime()),
	}
}

type datasetView struct {
	Name          string               `json:"name"`
	LatestVersion uint64               `json:"latest_version"`
	CreatedBy     actorView            `json:"created_by"`
	CreateTime    *time.Time           `json:"create_time"`
	UpdateTime    *time.Time           `json:"update_time"`
	Versions      []datasetVersionView `json:"versions,omitempty"`
}

func datasetOf(d *droverv1.Dataset, versions []*droverv1.DatasetVersion) datasetView {
	v := datasetView{Name: d.GetName(), LatestVersion: d.GetLatestVersion(), CreatedBy: actor(d.GetCreatedBy()),
		CreateTime: ts(d.GetCreateTime()), UpdateTime: ts(d.GetUpdateTime())}
	for _, dv := range versions {
		v.Versions = append(v.Versions, datasetVersionOf(dv))
	}
	return v
}

func (a *app) datasetsPush() *cobra.Command {
	var (
		file, format, description string
		rows                      int64
		labels                    []string
	)
	cmd := &cobra.Command{
		Use:   "push <name> --file <data>",
		Short: "Upload a data set file and register it as the data set's next version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("--file is required")
			}
			if format == "" {
				format = strings.TrimPrefix(strings.ToLower(filepath.Ext(file)), ".")
			}
			lbl, err := parseKV("label", labels)
			if err != nil {
				return err
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			up, err := a.upload(cmd, c, file)
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Datasets.CreateDatasetVersion(ctx, &droverv1.CreateDatasetVersionRequest{
				Dataset: args[0], Content: up.BlobRef(), Format: format, Rows: rows, Labels: lbl, Description: description,
			})
			if err != nil {
				return err
			}
			v := datasetVersionOf(resp.GetVersion())
			return a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "Pushed data set %s:%d %s (%s, %s)\n", v.Dataset, v.Version, v.Digest, progress.Bytes(v.SizeBytes), v.Format)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "the data file to upload (required)")
	f.StringVar(&format, "format", "", "csv, parquet or jsonl (default: from the file's extension)")
	f.Int64Var(&rows, "rows", 0, "the number of rows, if known")
	f.StringVar(&description, "description", "", "what this version holds")
	f.StringArrayVar(&labels, "label", nil, "a label, key=value (repeatable)")
	return cmd
}

func (a *app) datasetsList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List data sets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Datasets.ListDatasets(ctx, &droverv1.ListDatasetsRequest{Read: a.read()})
			if err != nil {
				return err
			}
			views := []datasetView{}
			for _, d := range resp.GetDatasets() {
				views = append(views, datasetOf(d, nil))
			}
			return a.emit(map[string]any{"datasets": views}, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintln(t, "NAME\tLATEST\tUPDATED")
				for _, v := range views {
					fmt.Fprintf(t, "%s\t%d\t%s\n", v.Name, v.LatestVersion, fmtTimeP(v.UpdateTime))
				}
				t.Flush()
			})
		},
	}
}

func (a *app) datasetsShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show <name>",
		Short: "Show a data set and its versions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Datasets.GetDataset(ctx, &droverv1.GetDatasetRequest{Name: args[0], Read: a.read()})
			if err != nil {
				return err
			}
			v := datasetOf(resp.GetDataset(), resp.GetVersions())
			return a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "Data set %s (created %s by %s)\n\n", v.Name, fmtTimeP(v.CreateTime), v.CreatedBy)
				t := newTable(w)
				fmt.Fprintln(t, "VERSION\tDIGEST\tSIZE\tFORMAT\tROWS\tCREATED\tBY")
				for _, dv := range v.Versions {
					fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", dv.Version, shortDigest(dv.Digest), progress.Bytes(dv.SizeBytes), dv.Format, dv.Rows, fmtTimeP(dv.CreateTime), dv.CreatedBy.Name)
				}
				t.Flush()
			})
		},
	}
}
