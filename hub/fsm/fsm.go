package fsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/hub/state"
)

// Result is what Apply returns for each command: the command's result
// message, or why the state refused it.
type Result struct {
	Value proto.Message
	Err   error
}

// FSM implements raft.FSM over a state.Store.
type FSM struct {
	logger  *slog.Logger
	store   atomic.Pointer[state.Store]
	applied atomic.Uint64

	mu       sync.Mutex
	changeCh chan struct{} // closed and replaced after every apply or restore

	// Observe, if set, is called after each command with its type, how long
	// it took and whether the state refused it. It must not block.
	Observe func(typ MessageType, took time.Duration, refused bool)
}

// New returns a state machine over an empty state.
func New(logger *slog.Logger) *FSM {
	f := &FSM{logger: logger, changeCh: make(chan struct{})}
	f.store.Store(state.New())
	return f
}

// State returns the current state. A restore replaces it; hold on to the
// returned store only as long as a single read.
func (f *FSM) State() *state.Store { return f.store.Load() }

// AppliedIndex returns the index of the last command applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Changed returns a channel that is closed after the next apply or restore.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changeCh
}

func (f *FSM) notify(index uint64) {
	f.applied.Store(index)
	f.mu.Lock()
	close(f.changeCh)
	f.changeCh = make(chan struct{})
	f.mu.Unlock()
}

// WaitForIndex blocks until a command at index or later has been applied.
func (f *FSM) WaitForIndex(ctx context.Context, index uint64) error {
	for {
		ch := f.Changed()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d (applied %d): %w", index, f.applied.Load(), ctx.Err())
		}
	}
}

// Apply applies one committed log entry.
func (f *FSM) Apply(l *raft.Log) any {
	defer f.notify(l.Index)
	if l.Type != raft.LogCommand {
		return nil
	}
	start := time.Now()
	typ, body, err := Decode(l.Data)
	var unknown ErrUnknownType
	switch {
	case errors.As(err, &unknown) && typ&IgnoreUnknownTypeFlag != 0:
		f.logger.Warn("skipping a command type this version does not know", "type", uint8(typ), "index", l.Index)
		f.State().SetApplied(l.Index)
		return nil
	case err != nil:
		// Applying anything else would let this node diverge from its
		// peers. Stop, and let an operator upgrade or repair it.
		panic(fmt.Sprintf("fsm: cannot apply log entry %d: %v", l.Index, err))
	}
	h := body.GetHeader()
	change := state.Change{
		Index:  l.Index,
		Time:   h.GetTime().AsTime(),
		Actor:  h.GetActor(),
		Reason: h.GetReason(),
	}
	value, err := commands[typ&^IgnoreUnknownTypeFlag].apply(f.State(), change, body)
	refused := err != nil
	if err != nil && state.KindOf(err) == 0 {
		f.logger.Error("command failed in the state machine", "type", TypeName(typ), "index", l.Index, "err", err)
	}
	if f.Observe != nil {
		f.Observe(typ, time.Since(start), refused)
	}
	if err != nil {
		return &Result{Err: err}
	}
	return &Result{Value: value}
}
