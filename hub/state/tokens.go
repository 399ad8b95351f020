package state

import (
	"crypto/sha256"
	"fmt"

	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func tokenResource(id string) string { return "token/" + id }

// ValidateRole checks that a role is one a token may have.
func ValidateRole(r droverv1.Role) error {
	switch r {
	case droverv1.Role_ROLE_ADMIN, droverv1.Role_ROLE_OPERATOR, droverv1.Role_ROLE_VIEWER, droverv1.Role_ROLE_AGENT:
		return nil
	}
	return Invalidf("role %v is not one of admin, operator, viewer, agent", r)
}

func validateTokenRecord(rec *fsmv1.TokenRecord) error {
	tok := rec.GetToken()
	if tok.GetId() == "" || len(tok.GetId()) > MaxKeyLen {
		return Invalidf("token id %q is empty or too long", tok.GetId())
	}
	if err := ValidateText("token name", tok.GetName(), MaxKeyLen); err != nil {
		return err
	}
	if err := ValidateRole(tok.GetRole()); err != nil {
		return err
	}
	if len(rec.GetSecretHash()) != sha256.Size {
		return Invalidf("token secret hash is %d bytes, want %d", len(rec.GetSecretHash()), sha256.Size)
	}
	return nil
}

func insertToken(t *txn, rec *fsmv1.TokenRecord) error {
	if err := validateTokenRecord(rec); err != nil {
		return err
	}
	if raw, _ := t.First(tableTokens, "id", rec.GetToken().GetId()); raw != nil {
		return AlreadyExistsf("token %s already exists", rec.GetToken().GetId())
	}
	if raw, _ := t.First(tableTokens, "hash", string(rec.GetSecretHash())); raw != nil {
		return AlreadyExistsf("a token with this secret already exists")
	}
	return t.Insert(tableTokens, rec)
}

// CreateToken stores a new token.
func (s *Store) CreateToken(c Change, rec *fsmv1.TokenRecord) (*droverv1.Token, error) {
	err := s.write(c, func(t *txn) error {
		if err := insertToken(t, rec); err != nil {
			return err
		}
		tok := rec.GetToken()
		return t.audit("token.create", tokenResource(tok.GetId()), fmt.Sprintf("%s token %q", roleName(tok.GetRole()), tok.GetName()))
	})
	if err != nil {
		return nil, err
	}
	return rec.GetToken(), nil
}

// RevokeToken deletes a token.
func (s *Store) RevokeToken(c Change, id string) error {
	return s.write(c, func(t *txn) error {
		raw, err := t.First(tableTokens, "id", id)
		if err != nil {
			return err
		}
		if raw == nil {
			return NotFoundf("token %q does not exist", id)
		}
		if err := t.Delete(tableTokens, raw); err != nil {
			return err
		}
		tok := raw.(*fsmv1.TokenRecord).GetToken()
		return t.audit("token.revoke", tokenResource(id), fmt.Sprintf("%s token %q", roleName(tok.GetRole()), tok.GetName()))
	})
}

// roleName returns a role's short name: "admin", "operator", "viewer", "agent".
func roleName(r droverv1.Role) string {
	switch r {
	case droverv1.Role_ROLE_ADMIN:
		return "admin"
	case droverv1.Role_ROLE_OPERATOR:
		return "operator"
	case droverv1.Role_ROLE_VIEWER:
		return "viewer"
	case droverv1.Role_ROLE_AGENT:
		return "agent"
	}
	return "unknown"
}

// Tokens returns every token record by id.
func (v *Snapshot) Tokens() []*fsmv1.TokenRecord {
	return collect[*fsmv1.TokenRecord](v.all(tableTokens, "id"))
}

// TokenByHash finds a token by the SHA-256 of its secret, or returns nil.
func (v *Snapshot) TokenByHash(hash []byte) *fsmv1.TokenRecord {
	raw, err := v.txn.First(tableTokens, "hash", string(hash))
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*fsmv1.TokenRecord)
}

// TokenByID finds a token by id, or returns nil.
func (v *Snapshot) TokenByID(id string) *fsmv1.TokenRecord {
	raw := v.first(tableTokens, id)
	if raw == nil {
		return nil
	}
	return raw.(*fsmv1.TokenRecord)
}
