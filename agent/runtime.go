package agent

import (
	"context"
	"sync"

	"github.com/droverhq/drover/agent/reconcile"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// trackingRuntime is the runtime the agent uses until runners are plugged
// in: it holds, for each slot, the verified artifact it would serve. The
// reconciler has already checked the artifact's digest when Load is called.
type trackingRuntime struct {
	mu     sync.Mutex
	loaded map[reconcile.Key]loadedVersion
}

type loadedVersion struct {
	version uint64
	path    string
	format  string
}

func newTrackingRuntime() *trackingRuntime {
	return &trackingRuntime{loaded: map[reconcile.Key]loadedVersion{}}
}

func (r *trackingRuntime) Load(_ context.Context, a *droverv1.DesiredAssignment, path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loaded[reconcile.Key{Model: a.GetModel(), Role: a.GetRole()}] = loadedVersion{version: a.GetVersion(), path: path, format: a.GetFormat()}
	return nil
}

func (r *trackingRuntime) Unload(_ context.Context, k reconcile.Key, version uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.loaded[k].version == version {
		delete(r.loaded, k)
	}
	return nil
}
