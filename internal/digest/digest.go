// Package digest names content by its SHA-256: "sha256:" followed by 64
// lowercase hex digits, the form used for model artifacts, data sets and
// every other blob Drover stores or moves.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// Prefix is the algorithm prefix of every digest.
const Prefix = "sha256:"

// Digest is a parsed, valid content digest. The zero value is invalid.
type Digest struct {
	hex string
}

// ErrInvalid is returned (wrapped) for a string that is not a digest.
var ErrInvalid = errors.New("invalid digest")

// Parse checks that s is "sha256:<64 lowercase hex digits>".
func Parse(s string) (Digest, error) {
	h, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Digest{}, fmt.Errorf("%w %q: want %s<64 hex digits>", ErrInvalid, s, Prefix)
	}
	if len(h) != sha256.Size*2 {
		return Digest{}, fmt.Errorf("%w %q: want 64 hex digits, have %d", ErrInvalid, s, len(h))
	}
	for _, c := range h {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return Digest{}, fmt.Errorf("%w %q: want lowercase hex digits", ErrInvalid, s)
		}
	}
	return Digest{hex: h}, nil
}

// MustParse is Parse for constants in tests; it panics on error.
func MustParse(s string) Digest {
	d, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return d
}

// FromBytes returns the digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest{hex: hex.EncodeToString(sum[:])}
}

// FromReader reads r to the end and returns its digest and length.
func FromReader(r io.Reader) (Digest, int64, error) {
	v := NewVerifier()
	n, err := io.Copy(v, r)
	if err != nil {
		return Digest{}, n, err
	}
	return v.Digest(), n, nil
}

// String returns the digest in its canonical form.
func (d Digest) String() string {
	if d.hex == "" {
		return ""
	}
	return Prefix + d.hex
}

// Hex returns the 64 hex digits without the prefix.
func (d Digest) Hex() string { return d.hex }

// IsZero reports whether d is the zero (invalid) digest.
func (d Digest) IsZero() bool { return d.hex == "" }

// Verifier is an io.Writer that hashes what is written to it.
type Verifier struct {
	h hash.Hash
	n int64
}

// NewVerifier returns a Verifier with nothing written.
func NewVerifier() *Verifier { return &Verifier{h: sha256.New()} }

// Write hashes p. It never fails.
func (v *Verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	return v.h.Write(p)
}

// Size returns how many bytes have been written.
func (v *Verifier) Size() int64 { return v.n }

// Digest returns the digest of what has been written so far.
func (v *Verifier) Digest() Digest {
	return Digest{hex: hex.EncodeToString(v.h.Sum(nil))}
}
