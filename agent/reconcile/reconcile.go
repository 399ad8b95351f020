// Package reconcile converges an agent on its desired state,
// level-triggered: it compares the assignments the hub wants with what runs,
// and for each difference starts one job — fetch the artifact, verify it,
// load it, then let go of the version it replaces — or unloads what is no
// longer wanted. A failed job is retried with exponential back-off. A pass
// runs whenever the desired state changes, a job finishes, a retry falls
// due, and every ten seconds; it is idempotent, so the agent can stop at any
// line and converge again from where the disk says it is.
package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Key identifies an assignment slot: one version of a model per role.
type Key struct {
	Model string
	Role  droverv1.AssignmentRole
}

func (k Key) String() string { return fmt.Sprintf("%s/%s", k.Model, roleName(k.Role)) }

func roleName(r droverv1.AssignmentRole) string {
	switch r {
	case droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY:
		return "primary"
	case droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY:
		return "canary"
	case droverv1.AssignmentRole_ASSIGNMENT_ROLE_SHADOW:
		return "shadow"
	}
	return "unspecified"
}

// Artifacts gets artifacts onto local disk and checks them.
type Artifacts interface {
	// Has reports whether an artifact is already local.
	Has(ref *droverv1.BlobRef) bool
	// Fetch makes an artifact local (downloading if need be) and returns
	// its path.
	Fetch(ctx context.Context, ref *droverv1.BlobRef) (string, error)
	// Verify checks a local artifact against its digest once more.
	Verify(ref *droverv1.BlobRef) error
}

// Runtime runs verified artifacts. The runner plugins implement it.
type Runtime interface {
	// Load makes a version ready to serve from the artifact at path.
	Load(ctx context.Context, a *droverv1.DesiredAssignment, path string) error
	// Unload stops serving a version and frees what it held.
	Unload(ctx context.Context, k Key, version uint64) error
}

// A Retuner is a Runtime that can apply in place what may change of a
// loaded version without loading it again (its traffic weight). The
// Reconciler calls Retune whenever the desired assignment of a slot
// running the wanted version changes.
type Retuner interface {
	Retune(k Key, a *droverv1.DesiredAssignment)
}

// Status is where a slot stands; it is reported on every change.
type Status struct {
	Key     Key
	Version uint64
	// Serving is the version the runtime serves in the slot as the status
	// is made: Version once it is ready, the one it replaces before; 0
	// for none.
	Serving  uint64
	Phase    droverv1.AssignmentPhase
	Message  string
	Attempts int
	Time     time.Time
}

// Options tune a Reconciler.
type Options struct {
	// MinBackoff and MaxBackoff bound the wait before retrying a failed job
	// (default 1 s and 5 min); it doubles with each failure.
	MinBackoff, MaxBackoff time.Duration
	// Resync is how often a pass runs with nothing else to prompt it
	// (default 10 s).
	Resync time.Duration
	// MaxFetches bounds concurrent downloads (default 2).
	MaxFetches int
}

// Reconciler converges on a desired state. Create it with New and run it
// with Run; feed it with SetDesired.
type Reconciler struct {
	arts   Artifacts
	rt     Runtime
	report func(Status)
	logger *slog.Logger
	opts   Options
	fetchs chan struct{}

	mu      sync.Mutex
	desired map[Key]*droverv1.DesiredAssignment
	slots   map[Key]*slot
	kick    chan struct{}
	wg      sync.WaitGroup
}

// slot is what the reconciler knows of one key.
type slot struct {
	// loaded is the version the runtime has loaded for the key (0: none).
	loaded uint64
	status Status
	// job is set while a job for the key runs.
	job *job
	// failedVersion and nextTry hold a failed job off until its back-off.
	failedVersion uint64
	nextTry       time.Time
}

type job struct {
	version uint64
	cancel  context.CancelFunc
}

// New returns a reconciler. report is called, from the reconciler's
// goroutines, on every status change; it should be quick (append to the
// outbox).
func New(arts Artifacts, rt Runtime, report func(Status), logger *slog.Logger, opts Options) *Reconciler {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	if opts.Resync <= 0 {
		opts.Resync = 10 * time.Second
	}
	if opts.MaxFetches <= 0 {
		opts.MaxFetches = 2
	}
	return &Reconciler{
		arts: arts, rt: rt, report: report, logger: logger, opts: opts,
		fetchs:  make(chan struct{}, opts.MaxFetches),
		desired: map[Key]*droverv1.DesiredAssignment{},
		slots:   map[Key]*slot{},
		kick:    make(chan struct{}, 1),
	}
}

// SetDesired replaces the desired state and prompts a pass.
func (r *Reconciler) SetDesired(d *droverv1.DesiredState) {
	want := map[Key]*droverv1.DesiredAssignment{}
	for _, a := range d.GetAssignments() {
		want[Key{a.GetModel(), a.GetRole()}] = a
	}
	r.mu.Lock()
	r.desired = want
	r.mu.Unlock()
	r.prompt()
}

func (r *Reconciler) prompt() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Statuses returns every slot's status.
func (r *Reconciler) Statuses() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.slots))
	for _, s := range r.slots {
		out = append(out, s.status)
	}
	return out
}

// Converged reports whether every desired assignment is loaded and ready,
// and nothing else is.
func (r *Reconciler) Converged() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, want := range r.desired {
		s := r.slots[k]
		if s == nil || s.loaded != want.GetVersion() || s.status.Phase != droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY {
			return false
		}
	}
	for k, s := range r.slots {
		if _, ok := r.desired[k]; !ok && (s.loaded != 0 || s.job != nil) {
			return false
		}
	}
	return true
}

// Run reconciles until ctx ends, then waits for running jobs to stop.
func (r *Reconciler) Run(ctx context.Context) {
	defer r.wg.Wait()
	for {
		wait := r.pass(ctx)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-r.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// pass starts whatever jobs the difference between desired and actual
// calls for, and returns how long until the next pass is due.
func (r *Reconciler) pass(ctx context.Context) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	next := r.opts.Resync
	for k, want := range r.desired {
		s := r.slot(k)
		switch {
		case s.job != nil:
			if s.job.version != want.GetVersion() {
				s.job.cancel() // superseded; the next pass starts the new one
			}
		case s.loaded == want.GetVersion() && s.status.Phase == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY:
			if rt, ok := r.rt.(Retuner); ok {
				rt.Retune(k, want)
			}
		case s.failedVersion == want.GetVersion() && now.Before(s.nextTry):
			next = min(next, s.nextTry.Sub(now))
		default:
			r.start(ctx, k, s, want)
		}
	}
	for k, s := range r.slots {
		if _, wanted := r.desired[k]; wanted {
			continue
		}
		switch {
		case s.job != nil:
			if s.job.version != 0 {
				s.job.cancel()
			}
		case s.loaded != 0 && s.failedVersion == s.loaded && now.Before(s.nextTry):
			// An unload that failed waits out its back-off too.
			next = min(next, s.nextTry.Sub(now))
		case s.loaded != 0 || s.status.Phase != droverv1.AssignmentPhase_ASSIGNMENT_PHASE_REMOVED:
			r.start(ctx, k, s, nil)
		default:
			delete(r.slots, k)
		}
	}
	return next
}

func (r *Reconciler) slot(k Key) *slot {
	s, ok := r.slots[k]
	if !ok {
		s = &slot{status: Status{Key: k}}
		r.slots[k] = s
	}
	return s
}

// start runs one job for a slot: bring up want, or (want nil) tear down.
// Called with r.mu held.
func (r *Reconciler) start(ctx context.Context, k Key, s *slot, want *droverv1.DesiredAssignment) {
	jctx, cancel := context.WithCancel(ctx)
	j := &job{version: want.GetVersion(), cancel: cancel}
	s.job = j
	r.wg.Go(func() {
		defer cancel()
		var err error
		if want == nil {
			err = r.teardown(jctx, k)
		} else {
			err = r.bringUp(jctx, k, want)
		}
		r.mu.Lock()
		s.job = nil
		r.mu.Unlock()
		if err != nil && jctx.Err() == nil {
			r.logger.Warn("assignment failed", "slot", k, "version", want.GetVersion(), "err", err)
		}
		r.prompt()
	})
}

// setStatus records and reports a status change.
func (r *Reconciler) setStatus(k Key, version uint64, phase droverv1.AssignmentPhase, msg string) {
	r.mu.Lock()
	s := r.slot(k)
	attempts := s.status.Attempts
	if s.status.Version != version {
		attempts = 0
	}
	if phase == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED {
		attempts++
		backoff := r.opts.MinBackoff << min(attempts-1, 20)
		s.failedVersion, s.nextTry = version, time.Now().Add(min(backoff, r.opts.MaxBackoff))
	} else if phase == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY {
		attempts, s.failedVersion = 0, 0
	}
	if s.status.Phase == phase && s.status.Version == version && s.status.Message == msg && s.status.Serving == s.loaded {
		r.mu.Unlock()
		return
	}
	s.status = Status{Key: k, Version: version, Serving: s.loaded, Phase: phase, Message: msg, Attempts: attempts, Time: time.Now()}
	st := s.status
	r.mu.Unlock()
	r.report(st)
}

func (r *Reconciler) setLoaded(k Key, version uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slot(k).loaded = version
}

func (r *Reconciler) loadedVersion(k Key) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.slot(k).loaded
}

// serving reports whether the runtime serves version v in slot k already:
// it is loaded, and no failed unload since has left it in doubt.
func (r *Reconciler) serving(k Key, v uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.slot(k)
	failed := s.status.Version == v && s.status.Phase == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED
	return s.loaded == v && !failed
}

func (r *Reconciler) bringUp(ctx context.Context, k Key, want *droverv1.DesiredAssignment) error {
	v := want.GetVersion()
	fail := func(err error) error {
		if ctx.Err() == nil {
			r.setStatus(k, v, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED, err.Error())
		}
		return err
	}
	if r.serving(k, v) {
		// Wanted again before the version that was to replace it got
		// there (v1, v2, v1 while v2 downloaded): it never stopped
		// serving, so only its status is behind. Loading it again would
		// have the runtime replace it with itself.
		r.setStatus(k, v, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY, "")
		return nil
	}
	r.setStatus(k, v, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_PENDING, "")
	if !r.arts.Has(want.GetArtifact()) {
		select {
		case r.fetchs <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.setStatus(k, v, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_DOWNLOADING, fmt.Sprintf("%d bytes", want.GetArtifact().GetSizeBytes()))
		_, err := r.arts.Fetch(ctx, want.GetArtifact())
		<-r.fetchs
		if err != nil {
			return fail(err)
		}
	}
	path, err := r.arts.Fetch(ctx, want.GetArtifact())
	if err != nil {
		return fail(err)
	}
	r.setStatus(k, v, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_LOADING, "")
	// Verified once more just before use: a file damaged on disk is
	// caught here, removed, and fetched again on the retry.
	if err := r.arts.Verify(want.GetArtifact()); err != nil {
		return fail(err)
	}
	if err := r.rt.Load(ctx, want, path); err != nil {
		return fail(fmt.Errorf("load: %w", err))
	}
	old := r.loadedVersion(k)
	r.setLoaded(k, v)
	if old != 0 && old != v {
		// The new version serves now; the old one can go.
		if err := r.rt.Unload(context.WithoutCancel(ctx), k, old); err != nil {
			r.logger.Warn("unloading the replaced version failed", "slot", k, "version", old, "err", err)
		}
	}
	r.setStatus(k, v, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY, "")
	return nil
}

func (r *Reconciler) teardown(ctx context.Context, k Key) error {
	old := r.loadedVersion(k)
	if old != 0 {
		if err := r.rt.Unload(ctx, k, old); err != nil {
			r.setStatus(k, old, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED, "unload: "+err.Error())
			return err
		}
		r.setLoaded(k, 0)
	}
	r.setStatus(k, old, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_REMOVED, "")
	return nil
}
