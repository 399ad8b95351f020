// Package fsm is the hub's Raft state machine: the typed commands of the
// Raft log, the function that applies each of them to the state (hub/state),
// and the snapshots that compact the log.
//
// A log entry is one type byte followed by a protobuf body (see
// proto/drover/fsm/v1). Types are append-only. A type with the high bit set
// (IgnoreUnknownTypeFlag) may be skipped by a node too old to know it, which
// lets a rolling upgrade introduce commands that old nodes can safely
// ignore; an unknown type without the flag stops the node rather than let
// it diverge from its peers.
//
// Applying is deterministic: a command carries its own time, actor and
// reason (fsmv1.Header), and the state machine reads no clock, draws no
// random number and does no I/O.
package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// MessageType is the first byte of a log entry.
type MessageType uint8

// IgnoreUnknownTypeFlag marks a type that nodes which do not know it may skip.
const IgnoreUnknownTypeFlag MessageType = 128

// The command types. Never reuse or renumber one.
const (
	ClusterInitType          MessageType = 1
	NodeUpsertType           MessageType = 2
	NodeRemoveType           MessageType = 3
	ModelCreateType          MessageType = 4
	VersionCreateType        MessageType = 5
	VersionStateSetType      MessageType = 6
	ModelArchiveType         MessageType = 7
	AliasSetType             MessageType = 8
	AliasDeleteType          MessageType = 9
	DatasetVersionCreateType MessageType = 10
	TokenCreateType          MessageType = 11
	TokenRevokeType          MessageType = 12
	AgentEnrollType          MessageType = 13
	AgentLabelsSetType       MessageType = 14
	AgentDrainType           MessageType = 15
	AssignmentSetType        MessageType = 16
	AssignmentDeleteType     MessageType = 17
	AgentReportsType         MessageType = 18
	AgentStatusSetType       MessageType = 19
	DriftSettingsSetType     MessageType = 20
	RolloutCreateType        MessageType = 21
	RolloutStepReadyType     MessageType = 22
	RolloutJudgeType         MessageType = 23
	RolloutAdvanceType       MessageType = 24
	RolloutFailType          MessageType = 25
	RolloutActType           MessageType = 26
	RunCreateType            MessageType = 27
	RunLogType               MessageType = 28
	RetrainPolicyPutType     MessageType = 29
	RetrainPolicyDeleteType  MessageType = 30
	RetrainJobCreateType     MessageType = 31
	RetrainJobCollectType    MessageType = 32
	RetrainJobDatasetType    MessageType = 33
	RetrainJobPlaceType      MessageType = 34
	RetrainJobRequeueType    MessageType = 35
	RetrainJobFailType       MessageType = 36
	RetrainJobFinishType     MessageType = 37
	AgentRemoveType          MessageType = 38
)

// Command is the body of any command: every one starts with a Header.
type Command interface {
	proto.Message
	GetHeader() *fsmv1.Header
}

// command describes one type: how to make its body and its result, and how
// to apply it.
type command struct {
	typ    MessageType
	name   string
	body   func() Command
	result func() proto.Message
	apply  func(s *state.Store, c state.Change, body Command) (proto.Message, error)
}

var commands = map[MessageType]*command{}
var commandsByName = map[protoreflect.FullName]*command{}

// register adds a command type. B is the body's message type and R the
// result's; apply gets the body already typed.
func register[B Command, R proto.Message](typ MessageType, apply func(*state.Store, state.Change, B) (R, error)) {
	var zeroB B
	var zeroR R
	c := &command{
		typ:    typ,
		name:   string(zeroB.ProtoReflect().Descriptor().Name()),
		body:   func() Command { return zeroB.ProtoReflect().New().Interface().(Command) },
		result: func() proto.Message { return zeroR.ProtoReflect().New().Interface() },
		apply: func(s *state.Store, c state.Change, body Command) (proto.Message, error) {
			return apply(s, c, body.(B))
		},
	}
	if _, dup := commands[typ]; dup {
		panic(fmt.Sprintf("fsm: command type %d registered twice", typ))
	}
	commands[typ] = c
	commandsByName[zeroB.ProtoReflect().Descriptor().FullName()] = c
}

func empty() *fsmv1.Empty { return &fsmv1.Empty{} }

func init() {
	register(ClusterInitType, func(s *state.Store, c state.Change, b *fsmv1.ClusterInit) (*fsmv1.Empty, error) {
		return empty(), s.InitCluster(c, b.GetMeta(), b.GetAdminToken())
	})
	register(NodeUpsertType, func(s *state.Store, c state.Change, b *fsmv1.NodeUpsert) (*fsmv1.Empty, error) {
		return empty(), s.UpsertNode(c, b.GetNode())
	})
	register(NodeRemoveType, func(s *state.Store, c state.Change, b *fsmv1.NodeRemove) (*fsmv1.Empty, error) {
		return empty(), s.RemoveNode(c, b.GetName())
	})
	register(ModelCreateType, func(s *state.Store, c state.Change, b *fsmv1.ModelCreate) (*droverv1.Model, error) {
		return s.CreateModel(c, b.GetName(), b.GetDescription(), b.GetLabels())
	})
	register(VersionCreateType, func(s *state.Store, c state.Change, b *fsmv1.VersionCreate) (*droverv1.ModelVersion, error) {
		return s.CreateVersion(c, b.GetVersion(), b.GetCreateModel())
	})
	register(VersionStateSetType, func(s *state.Store, c state.Change, b *fsmv1.VersionStateSet) (*droverv1.ModelVersion, error) {
		return s.SetVersionState(c, b.GetModel(), b.GetVersion(), b.GetState())
	})
	register(ModelArchiveType, func(s *state.Store, c state.Change, b *fsmv1.ModelArchive) (*droverv1.Model, error) {
		return s.ArchiveModel(c, b.GetName(), b.GetUndo())
	})
	register(AliasSetType, func(s *state.Store, c state.Change, b *fsmv1.AliasSet) (*fsmv1.AliasSetResult, error) {
		a, prev, err := s.SetAlias(c, b.GetModel(), b.GetAlias(), b.GetVersion(), b.ExpectedVersion, b.GetForce())
		return &fsmv1.AliasSetResult{Alias: a, PreviousVersion: prev}, err
	})
	register(AliasDeleteType, func(s *state.Store, c state.Change, b *fsmv1.AliasDelete) (*fsmv1.Empty, error) {
		return empty(), s.DeleteAlias(c, b.GetModel(), b.GetAlias())
	})
	register(DatasetVersionCreateType, func(s *state.Store, c state.Change, b *fsmv1.DatasetVersionCreate) (*droverv1.DatasetVersion, error) {
		return s.CreateDatasetVersion(c, b.GetVersion())
	})
	register(TokenCreateType, func(s *state.Store, c state.Change, b *fsmv1.TokenCreate) (*droverv1.Token, error) {
		return s.CreateToken(c, b.GetToken())
	})
	register(TokenRevokeType, func(s *state.Store, c state.Change, b *fsmv1.TokenRevoke) (*fsmv1.Empty, error) {
		return empty(), s.RevokeToken(c, b.GetId())
	})
	register(AgentEnrollType, func(s *state.Store, c state.Change, b *fsmv1.AgentEnroll) (*droverv1.Agent, error) {
		return s.EnrollAgent(c, b.GetAgent(), b.GetToken())
	})
	register(AgentLabelsSetType, func(s *state.Store, c state.Change, b *fsmv1.AgentLabelsSet) (*droverv1.Agent, error) {
		return s.SetAgentLabels(c, b.GetAgentId(), b.GetSet(), b.GetRemove())
	})
	register(AgentDrainType, func(s *state.Store, c state.Change, b *fsmv1.AgentDrain) (*droverv1.Agent, error) {
		return s.DrainAgent(c, b.GetAgentId(), b.GetUndo())
	})
	register(AgentRemoveType, func(s *state.Store, c state.Change, b *fsmv1.AgentRemove) (*droverv1.Agent, error) {
		return s.RemoveAgent(c, b.GetAgentId(), b.GetForce())
	})
	register(AssignmentSetType, func(s *state.Store, c state.Change, b *fsmv1.AssignmentSet) (*droverv1.Agent, error) {
		return s.SetAssignment(c, b.GetAgentId(), b.GetAssignment())
	})
	register(AssignmentDeleteType, func(s *state.Store, c state.Change, b *fsmv1.AssignmentDelete) (*droverv1.Agent, error) {
		return s.DeleteAssignment(c, b.GetAgentId(), b.GetModel(), b.GetRole())
	})
	register(AgentReportsType, func(s *state.Store, c state.Change, b *fsmv1.AgentReports) (*fsmv1.AgentReportsResult, error) {
		acked, err := s.ApplyAgentReports(c, b.GetAgentId(), b.GetReports())
		return &fsmv1.AgentReportsResult{AckedSeq: acked}, err
	})
	register(AgentStatusSetType, func(s *state.Store, c state.Change, b *fsmv1.AgentStatusSet) (*fsmv1.Empty, error) {
		return empty(), s.SetAgentStatus(c, b.GetStatus(), b.GetAgentIds())
	})
	register(DriftSettingsSetType, func(s *state.Store, c state.Change, b *fsmv1.DriftSettingsSet) (*droverv1.ModelDriftSettings, error) {
		return b.GetSettings(), s.SetDriftSettings(c, b.GetSettings())
	})
	register(RolloutCreateType, func(s *state.Store, c state.Change, b *fsmv1.RolloutCreate) (*droverv1.Rollout, error) {
		return s.CreateRollout(c, b.GetRollout())
	})
	register(RolloutStepReadyType, func(s *state.Store, c state.Change, b *fsmv1.RolloutStepReady) (*droverv1.Rollout, error) {
		return s.RolloutStepReady(c, b.GetId(), b.GetStep(), b.GetRevision())
	})
	register(RolloutJudgeType, func(s *state.Store, c state.Change, b *fsmv1.RolloutJudge) (*droverv1.Rollout, error) {
		return s.RolloutJudge(c, b.GetId(), b.GetStep(), b.GetRevision(), b.GetJudgements())
	})
	register(RolloutAdvanceType, func(s *state.Store, c state.Change, b *fsmv1.RolloutAdvance) (*droverv1.Rollout, error) {
		return s.RolloutAdvance(c, b.GetId(), b.GetStep(), b.GetRevision())
	})
	register(RolloutFailType, func(s *state.Store, c state.Change, b *fsmv1.RolloutFail) (*droverv1.Rollout, error) {
		if b.GetPause() {
			return s.RolloutPause(c, b.GetId(), b.GetStep(), b.GetRevision(), b.GetReason())
		}
		return s.RolloutFail(c, b.GetId(), b.GetStep(), b.GetRevision(), b.GetReason())
	})
	register(RolloutActType, func(s *state.Store, c state.Change, b *fsmv1.RolloutAct) (*droverv1.Rollout, error) {
		return s.ActOnRollout(c, b.GetId(), b.GetAction())
	})
	register(RunCreateType, func(s *state.Store, c state.Change, b *fsmv1.RunCreate) (*droverv1.Run, error) {
		return s.CreateRun(c, b.GetRun())
	})
	register(RunLogType, func(s *state.Store, c state.Change, b *fsmv1.RunLog) (*droverv1.Run, error) {
		return s.LogRun(c, b.GetLog())
	})
	register(RetrainPolicyPutType, func(s *state.Store, c state.Change, b *fsmv1.RetrainPolicyPut) (*droverv1.RetrainPolicy, error) {
		return s.PutRetrainPolicy(c, b.GetPolicy())
	})
	register(RetrainPolicyDeleteType, func(s *state.Store, c state.Change, b *fsmv1.RetrainPolicyDelete) (*fsmv1.Empty, error) {
		return empty(), s.DeleteRetrainPolicy(c, b.GetName())
	})
	register(RetrainJobCreateType, func(s *state.Store, c state.Change, b *fsmv1.RetrainJobCreate) (*droverv1.RetrainJob, error) {
		return s.CreateRetrainJob(c, b.GetJob(), b.GetForce(), b.GetScheduleTime())
	})
	register(RetrainJobCollectType, func(s *state.Store, c state.Change, b *fsmv1.RetrainJobCollect) (*droverv1.RetrainJob, error) {
		return s.RetrainJobCollect(c, b.GetId(), b.GetAgentIds())
	})
	register(RetrainJobDatasetType, func(s *state.Store, c state.Change, b *fsmv1.RetrainJobDataset) (*droverv1.RetrainJob, error) {
		return s.RetrainJobDataset(c, b.GetId(), b.GetDataset(), b.GetValidation())
	})
	register(RetrainJobPlaceType, func(s *state.Store, c state.Change, b *fsmv1.RetrainJobPlace) (*droverv1.RetrainJob, error) {
		return s.PlaceRetrainJob(c, b.GetId(), b.GetAttempt(), b.GetAgentId())
	})
	register(RetrainJobRequeueType, func(s *state.Store, c state.Change, b *fsmv1.RetrainJobRequeue) (*droverv1.RetrainJob, error) {
		return s.RequeueRetrainJob(c, b.GetId(), b.GetAttempt(), b.GetReason())
	})
	register(RetrainJobFailType, func(s *state.Store, c state.Change, b *fsmv1.RetrainJobFail) (*droverv1.RetrainJob, error) {
		return s.FailRetrainJob(c, b.GetId(), b.GetAttempt(), b.GetReason(), b.GetCancel())
	})
	register(RetrainJobFinishType, func(s *state.Store, c state.Change, b *fsmv1.RetrainJobFinish) (*droverv1.RetrainJob, error) {
		return s.FinishRetrainJob(c, b.GetId(), b.GetRolloutId())
	})
}

// Encode returns the log entry for a command body.
func Encode(body Command) ([]byte, error) {
	c, ok := commandsByName[body.ProtoReflect().Descriptor().FullName()]
	if !ok {
		return nil, fmt.Errorf("fsm: %s is not a command", body.ProtoReflect().Descriptor().FullName())
	}
	if body.GetHeader().GetTime() == nil {
		return nil, fmt.Errorf("fsm: %s has no time in its header", c.name)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode %s: %w", c.name, err)
	}
	return append([]byte{byte(c.typ)}, b...), nil
}

// ErrUnknownType is returned by Decode for a type this version does not know.
type ErrUnknownType struct{ Type MessageType }

func (e ErrUnknownType) Error() string {
	return fmt.Sprintf("fsm: unknown command type %d", e.Type)
}

// Decode parses a log entry.
func Decode(data []byte) (MessageType, Command, error) {
	if len(data) == 0 {
		return 0, nil, fmt.Errorf("fsm: empty command")
	}
	typ := MessageType(data[0])
	c, ok := commands[typ&^IgnoreUnknownTypeFlag]
	if !ok {
		return typ, nil, ErrUnknownType{typ}
	}
	body := c.body()
	if err := proto.Unmarshal(data[1:], body); err != nil {
		return typ, nil, fmt.Errorf("fsm: decode %s: %w", c.name, err)
	}
	return typ, body, nil
}

// NewResult returns an empty result message for a command type, for
// decoding the result of an apply forwarded to the leader.
func NewResult(typ MessageType) (proto.Message, error) {
	c, ok := commands[typ&^IgnoreUnknownTypeFlag]
	if !ok {
		return nil, ErrUnknownType{typ}
	}
	return c.result(), nil
}

// TypeName returns a command type's name, for logs and metrics.
func TypeName(typ MessageType) string {
	if c, ok := commands[typ&^IgnoreUnknownTypeFlag]; ok {
		return c.name
	}
	return fmt.Sprintf("Unknown%d", typ)
}
