package state

import (
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Limits on what one change may carry. They keep Raft entries and snapshots
// small; a request over a limit is refused whole with a message naming the
// field and the limit.
const (
	MaxNameLen        = 63
	MaxDescriptionLen = 4096
	MaxReasonLen      = 1024
	MaxMapEntries     = 64
	MaxKeyLen         = 128
	MaxValueLen       = 1024
	MaxMetrics        = 256
	MaxFeatures       = 4096
	MaxCategories     = 10000
	MaxSchemaBytes    = 1 << 20 // 1 MiB
	MaxProfileBytes   = 4 << 20 // 4 MiB
)

// Limits on what agents report. A report over one is not refused (the
// agent would resend it for ever, holding up every report behind it): its
// text is cut to the limit, or the part that cannot be kept is dropped with
// an event saying so.
const (
	// MaxReportText bounds an event's or an assignment status's message
	// and a training log line.
	MaxReportText = 4096
	// MaxReportKind bounds an event's kind and a training stage.
	MaxReportKind = 64
	// MaxInventoryBytes bounds an agent's serialised inventory: a machine
	// with 16 GPUs, each with its MIG instances, needs a few KiB.
	MaxInventoryBytes = 256 << 10
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)

// ValidateName checks a model, data set, alias, node or token name: 1 to 63
// characters of lowercase letters, digits, '.', '_' and '-', starting and
// ending with a letter or digit. what names the field in the message.
func ValidateName(what, name string) error {
	switch {
	case name == "":
		return Invalidf("%s is empty", what)
	case len(name) > MaxNameLen:
		return Invalidf("%s %q is %d characters long; the limit is %d", what, truncate(name), len(name), MaxNameLen)
	case !nameRE.MatchString(name):
		return Invalidf("%s %q is not a valid name: use lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit", what, truncate(name))
	}
	return nil
}

// ValidateAlias checks an alias name. Aliases follow ValidateName, except
// that "latest" is reserved, and a name of digits only would be mistaken for
// a version number.
func ValidateAlias(alias string) error {
	if err := ValidateName("alias", alias); err != nil {
		return err
	}
	if alias == "latest" {
		return Invalidf(`alias "latest" is reserved: it always means the newest version`)
	}
	if strings.Trim(alias, "0123456789") == "" {
		return Invalidf("alias %q is all digits and would read as a version number", alias)
	}
	return nil
}

// ValidateText checks free text against a length limit.
func ValidateText(what, s string, limit int) error {
	if len(s) > limit {
		return Invalidf("%s is %d bytes long; the limit is %d", what, len(s), limit)
	}
	return nil
}

// ValidateStringMap checks labels or params. Like every check here it
// visits keys in order, so that the first problem it names is the same on
// every replica: a refusal's message can end up in the state.
func ValidateStringMap(what string, m map[string]string) error {
	if len(m) > MaxMapEntries {
		return Invalidf("%s has %d entries; the limit is %d", what, len(m), MaxMapEntries)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if err := validateKey(what, k); err != nil {
			return err
		}
		if len(v) > MaxValueLen {
			return Invalidf("%s[%q] is %d bytes long; the limit is %d", what, truncate(k), len(v), MaxValueLen)
		}
	}
	return nil
}

// ValidateMetrics checks a version's metrics: finite numbers under keys.
func ValidateMetrics(m map[string]float64) error {
	if len(m) > MaxMetrics {
		return Invalidf("metrics has %d entries; the limit is %d", len(m), MaxMetrics)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if err := validateKey("metrics", k); err != nil {
			return err
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Invalidf("metrics[%q] is %v; metrics must be finite", k, v)
		}
	}
	return nil
}

func validateKey(what, k string) error {
	switch {
	case k == "":
		return Invalidf("%s has an empty key", what)
	case len(k) > MaxKeyLen:
		return Invalidf("%s key %q is %d bytes long; the limit is %d", what, truncate(k), len(k), MaxKeyLen)
	case strings.ContainsAny(k, "\x00\n\r\t ="):
		return Invalidf("%s key %q contains whitespace, '=' or a control character", what, truncate(k))
	}
	return nil
}

// ValidateBlobRef checks a digest and a size.
func ValidateBlobRef(what string, b *droverv1.BlobRef) error {
	if b == nil {
		return Invalidf("%s is missing", what)
	}
	if _, err := digest.Parse(b.GetDigest()); err != nil {
		return Invalidf("%s: %v", what, err)
	}
	if b.GetSizeBytes() < 0 {
		return Invalidf("%s size %d is negative", what, b.GetSizeBytes())
	}
	return nil
}

// Datatypes are the Open Inference Protocol tensor datatypes a feature may have.
var Datatypes = []string{
	"BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
	"INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES",
}

// ValidateSchema checks a feature schema's shape: unique non-empty names,
// known datatypes, sensible bounds.
func ValidateSchema(s *droverv1.FeatureSchema) error {
	if s == nil {
		return nil
	}
	if n := len(s.GetInputs()) + len(s.GetOutputs()); n > MaxFeatures {
		return Invalidf("schema has %d features; the limit is %d", n, MaxFeatures)
	}
	for _, part := range []struct {
		what     string
		features []*droverv1.Feature
	}{{"schema.inputs", s.GetInputs()}, {"schema.outputs", s.GetOutputs()}} {
		seen := make(map[string]bool, len(part.features))
		for i, f := range part.features {
			if f.GetName() == "" {
				return Invalidf("%s[%d] has no name", part.what, i)
			}
			if err := validateKey(part.what+" name", f.GetName()); err != nil {
				return err
			}
			if seen[f.GetName()] {
				return Invalidf("%s has feature %q twice", part.what, f.GetName())
			}
			seen[f.GetName()] = true
			if !slices.Contains(Datatypes, f.GetDatatype()) {
				return Invalidf("%s feature %q has datatype %q; want one of %s", part.what, f.GetName(), f.GetDatatype(), strings.Join(Datatypes, ", "))
			}
			if f.Min != nil && f.Max != nil && f.GetMin() > f.GetMax() {
				return Invalidf("%s feature %q has min %v above max %v", part.what, f.GetName(), f.GetMin(), f.GetMax())
			}
			if len(f.GetCategories()) > MaxCategories {
				return Invalidf("%s feature %q has %d categories; the limit is %d", part.what, f.GetName(), len(f.GetCategories()), MaxCategories)
			}
			for _, d := range f.GetShape() {
				if d < -1 || d == 0 {
					return Invalidf("%s feature %q has shape %v; dimensions are positive or -1", part.what, f.GetName(), f.GetShape())
				}
			}
		}
	}
	return nil
}

// Clip returns s cut to at most n bytes, at a character boundary, ending
// in "…" when cut: for text the hub composes around a caller's, which
// must not fail a limit the caller's text met.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	if n < len(ellipsis) {
		return ""
	}
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

func truncate(s string) string {
	const n = 40
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
