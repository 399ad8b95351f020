package state

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func modelResource(name string) string { return "model/" + name }

func versionResource(model string, v uint64) string {
	return fmt.Sprintf("model/%s/version/%d", model, v)
}

func aliasResource(model, alias string) string { return "model/" + model + "/alias/" + alias }

// ValidateModel checks the fields of a new model.
func ValidateModel(name, description string, labels map[string]string) error {
	if err := ValidateName("model name", name); err != nil {
		return err
	}
	if err := ValidateText("description", description, MaxDescriptionLen); err != nil {
		return err
	}
	return ValidateStringMap("labels", labels)
}

// ValidateVersion checks the fields of a new version as a caller gives them.
func ValidateVersion(v *droverv1.ModelVersion) error {
	if err := ValidateName("model name", v.GetModel()); err != nil {
		return err
	}
	if err := ValidateBlobRef("artifact", v.GetArtifact()); err != nil {
		return err
	}
	for _, f := range [...]struct{ what, s string }{{"format", v.GetFormat()}, {"runner", v.GetRunner()}} {
		if f.s != "" {
			if err := ValidateName(f.what, f.s); err != nil {
				return err
			}
		}
	}
	if err := ValidateText("description", v.GetDescription(), MaxDescriptionLen); err != nil {
		return err
	}
	if err := ValidateStringMap("params", v.GetParams()); err != nil {
		return err
	}
	if err := ValidateMetrics(v.GetMetrics()); err != nil {
		return err
	}
	if err := ValidateSchema(v.GetSchema()); err != nil {
		return err
	}
	if n := proto.Size(v.GetSchema()); n > MaxSchemaBytes {
		return Invalidf("schema is %d bytes; the limit is %d", n, MaxSchemaBytes)
	}
	if n := len(v.GetReferenceProfile()); n > MaxProfileBytes {
		return Invalidf("reference profile is %d bytes; the limit is %d", n, MaxProfileBytes)
	}
	if l := v.GetLineage(); l != nil {
		if d := l.GetDatasetDigest(); d != "" {
			if err := ValidateBlobRef("lineage.dataset_digest", &droverv1.BlobRef{Digest: d}); err != nil {
				return err
			}
		}
		if err := ValidateText("lineage.run_id", l.GetRunId(), MaxKeyLen); err != nil {
			return err
		}
		if l.GetDataset() != "" {
			if err := ValidateName("lineage.dataset", l.GetDataset()); err != nil {
				return err
			}
		}
	}
	return nil
}

// CreateModel adds a model with no versions.
func (s *Store) CreateModel(c Change, name, description string, labels map[string]string) (*droverv1.Model, error) {
	var out *droverv1.Model
	err := s.write(c, func(t *txn) error {
		m, err := createModel(t, name, description, labels)
		if err != nil {
			return err
		}
		out = m
		return t.audit("model.create", modelResource(name), "model created")
	})
	return out, err
}

func createModel(t *txn, name, description string, labels map[string]string) (*droverv1.Model, error) {
	if err := ValidateModel(name, description, labels); err != nil {
		return nil, err
	}
	if raw, _ := t.First(tableModels, "id", name); raw != nil {
		return nil, AlreadyExistsf("model %q already exists", name)
	}
	m := &droverv1.Model{
		Name:        name,
		Description: description,
		Labels:      labels,
		State:       droverv1.ModelState_MODEL_STATE_ACTIVE,
		CreatedBy:   t.c.Actor,
		CreateTime:  t.c.timestamp(),
		UpdateTime:  t.c.timestamp(),
		CreateIndex: t.c.Index,
		ModifyIndex: t.c.Index,
	}
	return m, t.Insert(tableModels, m)
}

func getModel(t *txn, name string) (*droverv1.Model, error) {
	raw, err := t.First(tableModels, "id", name)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, NotFoundf("model %q does not exist", name)
	}
	return raw.(*droverv1.Model), nil
}

// touchModel stores a changed copy of m.
func touchModel(t *txn, m *droverv1.Model, change func(*droverv1.Model)) (*droverv1.Model, error) {
	m = proto.CloneOf(m)
	change(m)
	m.UpdateTime = t.c.timestamp()
	m.ModifyIndex = t.c.Index
	return m, t.Insert(tableModels, m)
}

// CreateVersion adds the next version of a model. The version's number,
// state, times and indexes are assigned here; the rest is taken as given.
func (s *Store) CreateVersion(c Change, in *droverv1.ModelVersion, createIfMissing bool) (*droverv1.ModelVersion, error) {
	var out *droverv1.ModelVersion
	err := s.write(c, func(t *txn) error {
		v, err := createVersion(t, in, createIfMissing)
		if err != nil {
			return err
		}
		out = v
		return t.audit("version.create", versionResource(v.GetModel(), v.GetVersion()),
			fmt.Sprintf("%s:%d %s (%d bytes)", v.GetModel(), v.GetVersion(), v.GetArtifact().GetDigest(), v.GetArtifact().GetSizeBytes()))
	})
	return out, err
}

// createVersion adds the next version of a model within a write.
func createVersion(t *txn, in *droverv1.ModelVersion, createIfMissing bool) (*droverv1.ModelVersion, error) {
	c := t.c
	if err := ValidateVersion(in); err != nil {
		return nil, err
	}
	m, err := getModel(t, in.GetModel())
	if KindOf(err) == KindNotFound && createIfMissing {
		m, err = createModel(t, in.GetModel(), "", nil)
	} else if KindOf(err) == KindNotFound {
		return nil, NotFoundf("model %q does not exist; create it first (drover models create %s)", in.GetModel(), in.GetModel())
	}
	if err != nil {
		return nil, err
	}
	if m.GetState() == droverv1.ModelState_MODEL_STATE_ARCHIVED {
		return nil, Preconditionf("model %q is archived; restore it before adding versions", m.GetName())
	}
	if p := in.GetLineage().GetParentVersion(); p != 0 {
		if raw, _ := t.First(tableVersions, "id", m.GetName(), p); raw == nil {
			return nil, NotFoundf("parent version %d of model %q does not exist", p, m.GetName())
		}
	}
	v := proto.CloneOf(in)
	v.Version = m.GetLatestVersion() + 1
	v.State = droverv1.VersionState_VERSION_STATE_READY
	v.StateReason = ""
	v.Aliases = nil
	v.ReferenceProfileSize = int64(len(v.GetReferenceProfile()))
	v.CreatedBy = c.Actor
	v.CreateTime = c.timestamp()
	v.UpdateTime = c.timestamp()
	v.CreateIndex = c.Index
	v.ModifyIndex = c.Index
	if err := t.Insert(tableVersions, v); err != nil {
		return nil, err
	}
	if _, err := touchModel(t, m, func(m *droverv1.Model) { m.LatestVersion = v.GetVersion() }); err != nil {
		return nil, err
	}
	return v, nil
}

// SetVersionState moves a version to ready, rejected or archived. Setting
// the state it already has changes nothing.
func (s *Store) SetVersionState(c Change, model string, version uint64, state droverv1.VersionState) (*droverv1.ModelVersion, error) {
	var out *droverv1.ModelVersion
	err := s.write(c, func(t *txn) error {
		var verb string
		switch state {
		case droverv1.VersionState_VERSION_STATE_READY:
			verb = "version.ready"
		case droverv1.VersionState_VERSION_STATE_REJECTED:
			verb = "version.reject"
		case droverv1.VersionState_VERSION_STATE_ARCHIVED:
			verb = "version.archive"
		default:
			return Invalidf("state %v is not one a version can be set to", state)
		}
		if err := ValidateText("reason", c.Reason, MaxReasonLen); err != nil {
			return err
		}
		m, err := getModel(t, model)
		if err != nil {
			return err
		}
		raw, err := t.First(tableVersions, "id", model, version)
		if err != nil {
			return err
		}
		if raw == nil {
			return NotFoundf("model %q has no version %d", model, version)
		}
		v := raw.(*droverv1.ModelVersion)
		if v.GetState() == state {
			out = v
			return nil
		}
		if state != droverv1.VersionState_VERSION_STATE_READY {
			// An active rollout would go on rolling it out, and its
			// rollback would overwrite the state.
			if r, err := activeRolloutOf(t, model, version); err != nil {
				return err
			} else if r != nil {
				return Preconditionf("rollout %s of %s:%d is %s; abort it first", r.GetId(), model, version, rolloutStateName(r.GetState()))
			}
		}
		if state == droverv1.VersionState_VERSION_STATE_ARCHIVED {
			if aliases := aliasesOf(t.Txn, model, version); len(aliases) > 0 {
				return Preconditionf("version %d of %q is the target of alias %s; move the alias first", version, model, strings.Join(aliases, ", "))
			}
		}
		v = proto.CloneOf(v)
		v.State = state
		v.StateReason = c.Reason
		v.UpdateTime = c.timestamp()
		v.ModifyIndex = c.Index
		if err := t.Insert(tableVersions, v); err != nil {
			return err
		}
		if _, err := touchModel(t, m, func(*droverv1.Model) {}); err != nil {
			return err
		}
		out = v
		return t.audit(verb, versionResource(model, version), fmt.Sprintf("%s:%d is now %s", model, version, stateName(state)))
	})
	return out, err
}

func stateName(s droverv1.VersionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "VERSION_STATE_"))
}

// ArchiveModel archives a model, or restores it when undo is set.
func (s *Store) ArchiveModel(c Change, name string, undo bool) (*droverv1.Model, error) {
	var out *droverv1.Model
	err := s.write(c, func(t *txn) error {
		if err := ValidateText("reason", c.Reason, MaxReasonLen); err != nil {
			return err
		}
		m, err := getModel(t, name)
		if err != nil {
			return err
		}
		want, verb := droverv1.ModelState_MODEL_STATE_ARCHIVED, "model.archive"
		if undo {
			want, verb = droverv1.ModelState_MODEL_STATE_ACTIVE, "model.restore"
		}
		if m.GetState() == want {
			out = m
			return nil
		}
		if out, err = touchModel(t, m, func(m *droverv1.Model) { m.State = want }); err != nil {
			return err
		}
		return t.audit(verb, modelResource(name), strings.TrimPrefix(verb, "model.")+"d")
	})
	return out, err
}

// SetAlias points an alias at a version. With expected set, it moves only if
// the alias now points at *expected (zero: does not exist). It returns the
// alias and the version it pointed at before (zero if new).
func (s *Store) SetAlias(c Change, model, alias string, version uint64, expected *uint64, force bool) (*droverv1.Alias, uint64, error) {
	var (
		out  *droverv1.Alias
		prev uint64
	)
	err := s.write(c, func(t *txn) error {
		if err := ValidateAlias(alias); err != nil {
			return err
		}
		if err := ValidateText("reason", c.Reason, MaxReasonLen); err != nil {
			return err
		}
		m, err := getModel(t, model)
		if err != nil {
			return err
		}
		if m.GetState() == droverv1.ModelState_MODEL_STATE_ARCHIVED {
			return Preconditionf("model %q is archived", model)
		}
		raw, err := t.First(tableVersions, "id", model, version)
		if err != nil {
			return err
		}
		if raw == nil {
			return NotFoundf("model %q has no version %d", model, version)
		}
		v := raw.(*droverv1.ModelVersion)
		switch v.GetState() {
		case droverv1.VersionState_VERSION_STATE_ARCHIVED:
			return Preconditionf("version %d of %q is archived and cannot be aliased", version, model)
		case droverv1.VersionState_VERSION_STATE_REJECTED:
			if !force {
				return Preconditionf("version %d of %q was rejected (%s); force the alias to point at it anyway", version, model, v.GetStateReason())
			}
		}
		if old, _ := t.First(tableAliases, "id", model, alias); old != nil {
			out, prev = old.(*droverv1.Alias), old.(*droverv1.Alias).GetVersion()
		}
		if expected != nil && *expected != prev {
			if prev == 0 {
				return Preconditionf("alias %q of %q does not exist, not at version %d as expected", alias, model, *expected)
			}
			return Preconditionf("alias %q of %q points at version %d, not %d as expected", alias, model, prev, *expected)
		}
		if prev == version {
			return nil // already there: nothing to move, nothing to audit
		}
		out = &droverv1.Alias{
			Model:       model,
			Name:        alias,
			Version:     version,
			Reason:      c.Reason,
			UpdatedBy:   c.Actor,
			UpdateTime:  c.timestamp(),
			ModifyIndex: c.Index,
		}
		if err := t.Insert(tableAliases, out); err != nil {
			return err
		}
		if _, err := touchModel(t, m, func(*droverv1.Model) {}); err != nil {
			return err
		}
		summary := fmt.Sprintf("%s: new -> %d", alias, version)
		if prev != 0 {
			summary = fmt.Sprintf("%s: %d -> %d", alias, prev, version)
		}
		return t.audit("alias.set", aliasResource(model, alias), summary)
	})
	return out, prev, err
}

// DeleteAlias removes an alias.
func (s *Store) DeleteAlias(c Change, model, alias string) error {
	return s.write(c, func(t *txn) error {
		m, err := getModel(t, model)
		if err != nil {
			return err
		}
		old, err := t.First(tableAliases, "id", model, alias)
		if err != nil {
			return err
		}
		if old == nil {
			return NotFoundf("model %q has no alias %q", model, alias)
		}
		if err := t.Delete(tableAliases, old); err != nil {
			return err
		}
		if _, err := touchModel(t, m, func(*droverv1.Model) {}); err != nil {
			return err
		}
		return t.audit("alias.delete", aliasResource(model, alias), fmt.Sprintf("%s: %d -> deleted", alias, old.(*droverv1.Alias).GetVersion()))
	})
}

// aliasesOf returns the names of the aliases that point at a version.
func aliasesOf(t *memdb.Txn, model string, version uint64) []string {
	it, err := t.Get(tableAliases, "id_prefix", model)
	if err != nil {
		panic(fmt.Sprintf("state: iterate aliases: %v", err))
	}
	var names []string
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if a := raw.(*droverv1.Alias); a.GetVersion() == version {
			names = append(names, a.GetName())
		}
	}
	return names
}

// Model returns a model with its aliases filled in, or nil.
func (v *Snapshot) Model(name string) *droverv1.Model {
	raw := v.first(tableModels, name)
	if raw == nil {
		return nil
	}
	m := proto.CloneOf(raw.(*droverv1.Model))
	for _, a := range v.Aliases(name) {
		if m.Aliases == nil {
			m.Aliases = make(map[string]uint64)
		}
		m.Aliases[a.GetName()] = a.GetVersion()
	}
	return m
}

// Models returns every model by name, archived ones only if asked.
func (v *Snapshot) Models(includeArchived bool) []*droverv1.Model {
	var out []*droverv1.Model
	for _, m := range collect[*droverv1.Model](v.all(tableModels, "id")) {
		if includeArchived || m.GetState() != droverv1.ModelState_MODEL_STATE_ARCHIVED {
			out = append(out, v.Model(m.GetName()))
		}
	}
	return out
}

// Versions returns every version of a model, oldest first, with their
// aliases filled in and without the two fields that can be large, the
// reference profile and the schema (Version has them).
func (v *Snapshot) Versions(model string) []*droverv1.ModelVersion {
	byVersion := v.aliasesByVersion(model)
	var out []*droverv1.ModelVersion
	for _, mv := range collect[*droverv1.ModelVersion](v.all(tableVersions, "id_prefix", model)) {
		out = append(out, decorate(versionSummary(mv), byVersion))
	}
	return out
}

// versionSummary copies a version without its reference profile and
// schema, and without copying them on the way: together they may be 5 MiB.
func versionSummary(mv *droverv1.ModelVersion) *droverv1.ModelVersion {
	src := mv.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		switch fd.Name() {
		case "reference_profile", "schema":
		default:
			dst.Set(fd, val) // shared for a moment: cloned below
		}
		return true
	})
	return proto.CloneOf(dst.Interface().(*droverv1.ModelVersion))
}

// Version returns one version with its aliases and profile, or nil.
func (v *Snapshot) Version(model string, version uint64) *droverv1.ModelVersion {
	raw := v.first(tableVersions, model, version)
	if raw == nil {
		return nil
	}
	return decorate(proto.CloneOf(raw.(*droverv1.ModelVersion)), v.aliasesByVersion(model))
}

// VersionExists reports whether a model has the version, without copying
// it as Version does.
func (v *Snapshot) VersionExists(model string, version uint64) bool {
	return v.first(tableVersions, model, version) != nil
}

// decorate fills in a copied version's aliases.
func decorate(mv *droverv1.ModelVersion, aliases map[uint64][]string) *droverv1.ModelVersion {
	mv.Aliases = aliases[mv.GetVersion()]
	return mv
}

func (v *Snapshot) aliasesByVersion(model string) map[uint64][]string {
	out := make(map[uint64][]string)
	for _, a := range v.Aliases(model) {
		out[a.GetVersion()] = append(out[a.GetVersion()], a.GetName())
	}
	return out
}

// ResolveVersion finds a version by number, by alias, or (with neither) the
// latest. Unknown models, versions and aliases are not-found errors.
func (v *Snapshot) ResolveVersion(model string, version uint64, alias string) (*droverv1.ModelVersion, error) {
	m := v.Model(model)
	if m == nil {
		return nil, NotFoundf("model %q does not exist", model)
	}
	switch {
	case alias != "" && alias != "latest":
		n, ok := m.GetAliases()[alias]
		if !ok {
			names := slices.Sorted(maps.Keys(m.GetAliases()))
			if len(names) == 0 {
				return nil, NotFoundf("model %q has no alias %q (it has no aliases)", model, alias)
			}
			return nil, NotFoundf("model %q has no alias %q (it has %s)", model, alias, strings.Join(names, ", "))
		}
		version = n
	case version == 0:
		if m.GetLatestVersion() == 0 {
			return nil, NotFoundf("model %q has no versions yet", model)
		}
		version = m.GetLatestVersion()
	}
	mv := v.Version(model, version)
	if mv == nil {
		return nil, NotFoundf("model %q has no version %d (the latest is %d)", model, version, m.GetLatestVersion())
	}
	return mv, nil
}

// Aliases returns the aliases of a model, by name.
func (v *Snapshot) Aliases(model string) []*droverv1.Alias {
	return collect[*droverv1.Alias](v.all(tableAliases, "id_prefix", model))
}

// Alias returns one alias, or nil.
func (v *Snapshot) Alias(model, alias string) *droverv1.Alias {
	raw := v.first(tableAliases, model, alias)
	if raw == nil {
		return nil
	}
	return raw.(*droverv1.Alias)
}
