// Package auth holds the rules of the hub's API tokens: how a secret is
// made, how it is stored (only its SHA-256), and what each role may do.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// SecretPrefix starts every token secret, so that a leaked one is easy to
// recognise (and to grep for in logs and repositories).
const SecretPrefix = "drv_"

// NewSecret returns a fresh token id and secret. The secret is
// "drv_<id>_<32 random bytes, base64url>": the id inside it lets an
// operator tell which token a secret belongs to.
func NewSecret() (id, secret string) {
	var idb [6]byte
	var key [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	_, _ = rand.Read(key[:])
	id = hex.EncodeToString(idb[:])
	return id, SecretPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(key[:])
}

// Hash returns what the hub stores of a secret.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// IDFromSecret returns the token id embedded in a secret, if it has one.
func IDFromSecret(secret string) (string, bool) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "_")
	return id, ok
}

// RandomString returns n random bytes as hex, for cluster ids and secrets.
func RandomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Permission is a class of operation.
type Permission uint8

// The permissions, from least to most powerful.
const (
	// Read: see models, data sets, aliases, the audit trail and the cluster.
	Read Permission = iota + 1
	// Download: fetch blobs.
	Download
	// Write: change models, versions, aliases and data sets.
	Write
	// Agent: the calls an agent makes about itself.
	Agent
	// Admin: manage tokens and cluster membership.
	Admin
	// Peer: the calls hub nodes make to each other.
	Peer
)

func (p Permission) String() string {
	switch p {
	case Read:
		return "read"
	case Download:
		return "download"
	case Write:
		return "write"
	case Agent:
		return "agent"
	case Admin:
		return "admin"
	case Peer:
		return "peer"
	}
	return fmt.Sprintf("permission(%d)", p)
}

// Principal is who a request comes from: a token's holder, or a peer node.
type Principal struct {
	// Token is the caller's token; nil for a peer node.
	Token *droverv1.Token
	// IsPeer is true for another hub node presenting the peer secret.
	IsPeer bool
}

// Actor returns how a change made by p is recorded.
func (p Principal) Actor() *droverv1.Actor {
	if p.IsPeer || p.Token == nil {
		return &droverv1.Actor{TokenId: "system", Name: "hub"}
	}
	return &droverv1.Actor{TokenId: p.Token.GetId(), Name: p.Token.GetName(), Role: p.Token.GetRole()}
}

// Allowed reports whether p may do something that needs perm.
func (p Principal) Allowed(perm Permission) bool {
	if p.IsPeer {
		return perm == Peer || perm == Read || perm == Download
	}
	switch p.Token.GetRole() {
	case droverv1.Role_ROLE_ADMIN:
		return perm != Peer
	case droverv1.Role_ROLE_OPERATOR:
		return perm == Read || perm == Download || perm == Write
	case droverv1.Role_ROLE_VIEWER:
		return perm == Read || perm == Download
	case droverv1.Role_ROLE_AGENT:
		return perm == Agent || perm == Download
	}
	return false
}

// RoleName returns a role's short name: admin, operator, viewer or agent.
func RoleName(r droverv1.Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

// ParseRole reads a role's short name.
func ParseRole(s string) (droverv1.Role, error) {
	r, ok := droverv1.Role_value["ROLE_"+strings.ToUpper(s)]
	if !ok || r == 0 {
		return 0, fmt.Errorf("unknown role %q: want admin, operator, viewer or agent", s)
	}
	return droverv1.Role(r), nil
}
