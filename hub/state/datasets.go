package state

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// DatasetFormats are the content formats a data set version may declare.
var DatasetFormats = []string{"csv", "parquet", "jsonl"}

// ValidateDatasetVersion checks a new data set version as a caller gives it.
func ValidateDatasetVersion(v *droverv1.DatasetVersion) error {
	if err := ValidateName("data set name", v.GetDataset()); err != nil {
		return err
	}
	if err := ValidateBlobRef("content", v.GetContent()); err != nil {
		return err
	}
	if !slices.Contains(DatasetFormats, v.GetFormat()) {
		return Invalidf("data set format %q is not one of %v", v.GetFormat(), DatasetFormats)
	}
	if v.GetRows() < 0 {
		return Invalidf("rows %d is negative", v.GetRows())
	}
	if err := ValidateText("description", v.GetDescription(), MaxDescriptionLen); err != nil {
		return err
	}
	return ValidateStringMap("labels", v.GetLabels())
}

// CreateDatasetVersion adds the next version of a data set, creating the
// data set with its first version.
func (s *Store) CreateDatasetVersion(c Change, in *droverv1.DatasetVersion) (*droverv1.DatasetVersion, error) {
	var out *droverv1.DatasetVersion
	err := s.write(c, func(t *txn) error {
		v, err := createDatasetVersion(t, in)
		if err != nil {
			return err
		}
		out = v
		return t.audit("dataset.version.create", fmt.Sprintf("dataset/%s/version/%d", v.GetDataset(), v.GetVersion()),
			fmt.Sprintf("%s:%d %s (%d bytes, %s)", v.GetDataset(), v.GetVersion(), v.GetContent().GetDigest(), v.GetContent().GetSizeBytes(), v.GetFormat()))
	})
	return out, err
}

// createDatasetVersion adds the next version of a data set within a write.
func createDatasetVersion(t *txn, in *droverv1.DatasetVersion) (*droverv1.DatasetVersion, error) {
	c := t.c
	if err := ValidateDatasetVersion(in); err != nil {
		return nil, err
	}
	var ds *droverv1.Dataset
	if raw, _ := t.First(tableDatasets, "id", in.GetDataset()); raw != nil {
		ds = proto.CloneOf(raw.(*droverv1.Dataset))
	} else {
		ds = &droverv1.Dataset{
			Name:        in.GetDataset(),
			CreatedBy:   c.Actor,
			CreateTime:  c.timestamp(),
			CreateIndex: c.Index,
		}
	}
	v := proto.CloneOf(in)
	v.Version = ds.GetLatestVersion() + 1
	v.CreatedBy = c.Actor
	v.CreateTime = c.timestamp()
	v.CreateIndex = c.Index
	ds.LatestVersion = v.GetVersion()
	ds.UpdateTime = c.timestamp()
	ds.ModifyIndex = c.Index
	if err := t.Insert(tableDatasetVersions, v); err != nil {
		return nil, err
	}
	if err := t.Insert(tableDatasets, ds); err != nil {
		return nil, err
	}
	return v, nil
}

// Datasets returns every data set by name.
func (v *Snapshot) Datasets() []*droverv1.Dataset {
	return collect[*droverv1.Dataset](v.all(tableDatasets, "id"))
}

// Dataset returns one data set, or nil.
func (v *Snapshot) Dataset(name string) *droverv1.Dataset {
	raw := v.first(tableDatasets, name)
	if raw == nil {
		return nil
	}
	return raw.(*droverv1.Dataset)
}

// DatasetVersions returns every version of a data set, oldest first.
func (v *Snapshot) DatasetVersions(name string) []*droverv1.DatasetVersion {
	return collect[*droverv1.DatasetVersion](v.all(tableDatasetVersions, "id_prefix", name))
}

// ReferencedBlobs returns every digest a model or data set version refers
// to, with its size.
func (v *Snapshot) ReferencedBlobs() map[string]int64 {
	out := make(map[string]int64)
	for _, mv := range collect[*droverv1.ModelVersion](v.all(tableVersions, "id")) {
		out[mv.GetArtifact().GetDigest()] = mv.GetArtifact().GetSizeBytes()
	}
	for _, dv := range collect[*droverv1.DatasetVersion](v.all(tableDatasetVersions, "id")) {
		out[dv.GetContent().GetDigest()] = dv.GetContent().GetSizeBytes()
	}
	for _, b := range v.jobBlobs() {
		out[b.GetDigest()] = b.GetSizeBytes()
	}
	return out
}

// BlobReferenced reports whether any version refers to a digest.
func (v *Snapshot) BlobReferenced(d string) bool {
	for _, table := range []string{tableVersions, tableDatasetVersions} {
		if raw, _ := v.txn.First(table, "digest", d); raw != nil {
			return true
		}
	}
	return slices.ContainsFunc(v.jobBlobs(), func(b *droverv1.BlobRef) bool { return b.GetDigest() == d })
}
