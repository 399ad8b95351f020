package state

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// RecordKind says what a snapshot record holds. The numbers are part of the
// snapshot format: never reuse or renumber them.
type RecordKind uint8

// The kinds of record, one per table.
const (
	RecordClusterMeta    RecordKind = 1
	RecordNode           RecordKind = 2
	RecordModel          RecordKind = 3
	RecordVersion        RecordKind = 4
	RecordAlias          RecordKind = 5
	RecordDataset        RecordKind = 6
	RecordDatasetVersion RecordKind = 7
	RecordToken          RecordKind = 8
	RecordAudit          RecordKind = 9
	RecordAgent          RecordKind = 10
	RecordAgentEvent     RecordKind = 11
	RecordDriftWindow    RecordKind = 12
	RecordDriftVerdict   RecordKind = 13
	RecordDriftEvent     RecordKind = 14
	RecordDriftSettings  RecordKind = 15
	RecordRollout        RecordKind = 16
	RecordRun            RecordKind = 17
	RecordRetrainPolicy  RecordKind = 18
	RecordRetrainJob     RecordKind = 19
)

// records lists every table with its kind, in the order they are written.
var records = []struct {
	kind  RecordKind
	table string
	new   func() proto.Message
}{
	{RecordNode, tableNodes, func() proto.Message { return new(fsmv1.Node) }},
	{RecordModel, tableModels, func() proto.Message { return new(droverv1.Model) }},
	{RecordVersion, tableVersions, func() proto.Message { return new(droverv1.ModelVersion) }},
	{RecordAlias, tableAliases, func() proto.Message { return new(droverv1.Alias) }},
	{RecordDataset, tableDatasets, func() proto.Message { return new(droverv1.Dataset) }},
	{RecordDatasetVersion, tableDatasetVersions, func() proto.Message { return new(droverv1.DatasetVersion) }},
	{RecordToken, tableTokens, func() proto.Message { return new(fsmv1.TokenRecord) }},
	{RecordAudit, tableAudit, func() proto.Message { return new(droverv1.AuditEvent) }},
	{RecordAgent, tableAgents, func() proto.Message { return new(droverv1.Agent) }},
	{RecordAgentEvent, tableAgentEvents, func() proto.Message { return new(droverv1.AgentEvent) }},
	{RecordDriftWindow, tableDriftWindows, func() proto.Message { return new(droverv1.AgentDriftWindow) }},
	{RecordDriftVerdict, tableDriftVerdicts, func() proto.Message { return new(droverv1.DriftVerdictRecord) }},
	{RecordDriftEvent, tableDriftEvents, func() proto.Message { return new(droverv1.DriftVerdictRecord) }},
	{RecordDriftSettings, tableDriftSettings, func() proto.Message { return new(droverv1.ModelDriftSettings) }},
	{RecordRollout, tableRollouts, func() proto.Message { return new(droverv1.Rollout) }},
	{RecordRun, tableRuns, func() proto.Message { return new(droverv1.Run) }},
	{RecordRetrainPolicy, tableRetrainPolicies, func() proto.Message { return new(droverv1.RetrainPolicy) }},
	{RecordRetrainJob, tableRetrainJobs, func() proto.Message { return new(droverv1.RetrainJob) }},
}

// NewRecord returns an empty message for a record kind, or an error for a
// kind this version does not know.
func NewRecord(k RecordKind) (proto.Message, error) {
	if k == RecordClusterMeta {
		return new(fsmv1.ClusterMeta), nil
	}
	for _, r := range records {
		if r.kind == k {
			return r.new(), nil
		}
	}
	return nil, fmt.Errorf("unknown snapshot record kind %d", k)
}

// Records calls fn for every record of the view, table by table, as stored
// (aliases are not folded into models). It stops at the first error.
func (v *Snapshot) Records(fn func(RecordKind, proto.Message) error) error {
	if meta := v.ClusterMeta(); meta != nil {
		if err := fn(RecordClusterMeta, meta); err != nil {
			return err
		}
	}
	for _, r := range records {
		it := v.all(r.table, "id")
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if err := fn(r.kind, raw.(proto.Message)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Restorer fills a new, empty store from snapshot records.
type Restorer struct {
	s      *Store
	t      *txn
	audits uint64
}

// Restorer starts a restore into s, which must be new and empty. Nothing is
// visible until Commit.
func (s *Store) Restorer() *Restorer {
	return &Restorer{s: s, t: &txn{Txn: s.db.Txn(true)}}
}

// Add inserts one record.
func (r *Restorer) Add(k RecordKind, msg proto.Message) error {
	if k == RecordClusterMeta {
		return r.t.Insert(tableMeta, &metaRow{Key: metaCluster, Value: msg})
	}
	for _, rec := range records {
		if rec.kind == k {
			if k == RecordAudit {
				r.audits++
			}
			return r.t.Insert(rec.table, msg)
		}
	}
	return fmt.Errorf("unknown snapshot record kind %d", k)
}

// Commit makes the restored state visible, as of the given Raft index.
func (r *Restorer) Commit(index uint64) error {
	if err := r.t.Insert(tableMeta, &metaRow{Key: metaAudit, Value: r.audits}); err != nil {
		return err
	}
	if err := r.t.Insert(tableMeta, &metaRow{Key: metaApplied, Value: index}); err != nil {
		return err
	}
	r.t.Commit()
	return nil
}

// Abort drops a restore.
func (r *Restorer) Abort() { r.t.Abort() }
