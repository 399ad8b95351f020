package state

import (
	"encoding/binary"
	"fmt"

	"github.com/hashicorp/go-memdb"

	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Table names.
const (
	tableMeta            = "meta"
	tableNodes           = "nodes"
	tableModels          = "models"
	tableVersions        = "versions"
	tableAliases         = "aliases"
	tableDatasets        = "datasets"
	tableDatasetVersions = "dataset_versions"
	tableTokens          = "tokens"
	tableAudit           = "audit"
	tableAgents          = "agents"
	tableAgentEvents     = "agent_events"
	tableDriftWindows    = "drift_windows"
	tableDriftVerdicts   = "drift_verdicts"
	tableDriftEvents     = "drift_events"
	tableDriftSettings   = "drift_settings"
	tableRollouts        = "rollouts"
	tableRuns            = "runs"
	tableRetrainPolicies = "retrain_policies"
	tableRetrainJobs     = "retrain_jobs"
	// tableRetrainDispatch holds one row, the index of the last change to
	// what agents are asked to do for retraining jobs, which desired-state
	// watches watch. It is a table of its own because a watch on a row
	// that does not exist yet fires on any change near it: in the meta
	// table, on every command. It is derived state, not in snapshots.
	tableRetrainDispatch = "retrain_dispatch"
)

// metaRow is a singleton value in the meta table.
type metaRow struct {
	Key   string
	Value any
}

// Keys of the meta table.
const (
	metaCluster = "cluster"    // *fsmv1.ClusterMeta
	metaApplied = "applied"    // uint64: the index of the last applied command
	metaAudit   = "auditcount" // uint64: the number of audit events kept
)

func schema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableMeta: table(tableMeta, byString(func(o any) string { return o.(*metaRow).Key })),
		tableNodes: table(tableNodes, byString(func(o any) string {
			return o.(*fsmv1.Node).GetName()
		})),
		tableModels: table(tableModels, byString(func(o any) string {
			return o.(*droverv1.Model).GetName()
		})),
		tableVersions: table(tableVersions, byStringUint(func(o any) (string, uint64) {
			v := o.(*droverv1.ModelVersion)
			return v.GetModel(), v.GetVersion()
		}), index("digest", false, byString(func(o any) string {
			return o.(*droverv1.ModelVersion).GetArtifact().GetDigest()
		}))),
		tableAliases: table(tableAliases, byStringString(func(o any) (string, string) {
			a := o.(*droverv1.Alias)
			return a.GetModel(), a.GetName()
		})),
		tableDatasets: table(tableDatasets, byString(func(o any) string {
			return o.(*droverv1.Dataset).GetName()
		})),
		tableDatasetVersions: table(tableDatasetVersions, byStringUint(func(o any) (string, uint64) {
			v := o.(*droverv1.DatasetVersion)
			return v.GetDataset(), v.GetVersion()
		}), index("digest", false, byString(func(o any) string {
			return o.(*droverv1.DatasetVersion).GetContent().GetDigest()
		}))),
		tableTokens: table(tableTokens, byString(func(o any) string {
			return o.(*fsmv1.TokenRecord).GetToken().GetId()
		}), index("hash", true, byString(func(o any) string {
			return string(o.(*fsmv1.TokenRecord).GetSecretHash())
		})), index("agent", false, byString(func(o any) string {
			return o.(*fsmv1.TokenRecord).GetToken().GetAgentId()
		}))),
		tableAgents: table(tableAgents, byString(func(o any) string {
			return o.(*droverv1.Agent).GetId()
		}), index("name", true, byString(func(o any) string {
			return o.(*droverv1.Agent).GetName()
		}))),
		tableAgentEvents: table(tableAgentEvents, byStringUint(func(o any) (string, uint64) {
			e := o.(*droverv1.AgentEvent)
			return e.GetAgentId(), e.GetSeq()
		})),
		tableDriftWindows:  table(tableDriftWindows, byParts(driftWindowParts)),
		tableDriftVerdicts: table(tableDriftVerdicts, byParts(driftVerdictParts)),
		tableDriftEvents: table(tableDriftEvents, byParts(func(o any) []any {
			// One command (an agent's batch of reports) may record
			// events for several versions and windows.
			e := o.(*droverv1.DriftVerdictRecord)
			return []any{e.GetModel(), e.GetSeq(), e.GetVersion(), e.GetAgentId(), uint64(e.GetTime().AsTime().UnixNano())}
		})),
		tableDriftSettings: table(tableDriftSettings, byString(func(o any) string {
			return o.(*droverv1.ModelDriftSettings).GetModel()
		})),
		tableRuns: table(tableRuns, byString(func(o any) string {
			return o.(*droverv1.Run).GetId()
		}), index("model", false, byString(func(o any) string {
			return o.(*droverv1.Run).GetModel()
		}))),
		tableRollouts: table(tableRollouts, byString(func(o any) string {
			return o.(*droverv1.Rollout).GetId()
		}), index("model", false, byString(func(o any) string {
			return o.(*droverv1.Rollout).GetModel()
		}))),
		tableRetrainDispatch: table(tableRetrainDispatch, byString(func(o any) string { return o.(*metaRow).Key })),
		tableRetrainPolicies: table(tableRetrainPolicies, byString(func(o any) string {
			return o.(*droverv1.RetrainPolicy).GetName()
		})),
		tableRetrainJobs: table(tableRetrainJobs, byString(func(o any) string {
			return o.(*droverv1.RetrainJob).GetId()
		}), index("policy", false, byString(func(o any) string {
			return o.(*droverv1.RetrainJob).GetPolicy()
		})), index("active", false, byString(func(o any) string {
			if JobActive(o.(*droverv1.RetrainJob)) {
				return "yes"
			}
			return "no"
		}))),
		tableAudit: table(tableAudit, byUint(func(o any) uint64 {
			return o.(*droverv1.AuditEvent).GetIndex()
		})),
	}}
}

func table(name string, id memdb.Indexer, more ...*memdb.IndexSchema) *memdb.TableSchema {
	t := &memdb.TableSchema{Name: name, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: id},
	}}
	for _, ix := range more {
		t.Indexes[ix.Name] = ix
	}
	return t
}

func index(name string, unique bool, ix memdb.Indexer) *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: name, Unique: unique, Indexer: ix}
}

// The indexers below build keys that sort as the values do: strings end with
// a zero byte (so "a" is not a prefix match of "ab"), and numbers are
// big-endian, so that an iteration over versions or audit events runs in
// numeric order.

func strKey(s string) []byte { return append([]byte(s), 0) }

func uintKey(b []byte, n uint64) []byte { return binary.BigEndian.AppendUint64(b, n) }

type funcIndexer struct {
	object func(o any) []byte
	args   func(args ...any) ([]byte, error)
	prefix func(args ...any) ([]byte, error)
}

func (f *funcIndexer) FromObject(o any) (bool, []byte, error) {
	return true, f.object(o), nil
}

func (f *funcIndexer) FromArgs(args ...any) ([]byte, error) { return f.args(args...) }

func (f *funcIndexer) PrefixFromArgs(args ...any) ([]byte, error) {
	if f.prefix == nil {
		return f.args(args...)
	}
	return f.prefix(args...)
}

func argString(args []any, i int) (string, error) {
	if i >= len(args) {
		return "", fmt.Errorf("missing argument %d", i)
	}
	s, ok := args[i].(string)
	if !ok {
		return "", fmt.Errorf("argument %d is %T, want string", i, args[i])
	}
	return s, nil
}

func argUint(args []any, i int) (uint64, error) {
	if i >= len(args) {
		return 0, fmt.Errorf("missing argument %d", i)
	}
	n, ok := args[i].(uint64)
	if !ok {
		return 0, fmt.Errorf("argument %d is %T, want uint64", i, args[i])
	}
	return n, nil
}

func byString(f func(any) string) *funcIndexer {
	return &funcIndexer{
		object: func(o any) []byte { return strKey(f(o)) },
		args: func(args ...any) ([]byte, error) {
			s, err := argString(args, 0)
			return strKey(s), err
		},
	}
}

func byUint(f func(any) uint64) *funcIndexer {
	return &funcIndexer{
		object: func(o any) []byte { return uintKey(nil, f(o)) },
		args: func(args ...any) ([]byte, error) {
			n, err := argUint(args, 0)
			return uintKey(nil, n), err
		},
	}
}

// byStringUint keys (string, uint64); a prefix lookup takes the string alone.
func byStringUint(f func(any) (string, uint64)) *funcIndexer {
	return &funcIndexer{
		object: func(o any) []byte { s, n := f(o); return uintKey(strKey(s), n) },
		args: func(args ...any) ([]byte, error) {
			s, err := argString(args, 0)
			if err != nil {
				return nil, err
			}
			n, err := argUint(args, 1)
			return uintKey(strKey(s), n), err
		},
		prefix: func(args ...any) ([]byte, error) {
			s, err := argString(args, 0)
			return strKey(s), err
		},
	}
}

// byStringString keys (string, string); a prefix lookup takes the first alone.
func byStringString(f func(any) (string, string)) *funcIndexer {
	return &funcIndexer{
		object: func(o any) []byte { a, b := f(o); return append(strKey(a), strKey(b)...) },
		args: func(args ...any) ([]byte, error) {
			a, err := argString(args, 0)
			if err != nil {
				return nil, err
			}
			b, err := argString(args, 1)
			return append(strKey(a), strKey(b)...), err
		},
		prefix: func(args ...any) ([]byte, error) {
			s, err := argString(args, 0)
			return strKey(s), err
		},
	}
}
