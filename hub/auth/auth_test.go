package auth

import (
	"bytes"
	"strings"
	"testing"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func TestSecrets(t *testing.T) {
	id, secret := NewSecret()
	id2, secret2 := NewSecret()
	if id == id2 || secret == secret2 {
		t.Fatal("two secrets alike")
	}
	if !strings.HasPrefix(secret, SecretPrefix+id+"_") || len(secret) < 50 {
		t.Fatalf("secret %q does not embed id %q", secret, id)
	}
	if got, ok := IDFromSecret(secret); !ok || got != id {
		t.Fatalf("IDFromSecret = %q, %v", got, ok)
	}
	if _, ok := IDFromSecret("not-a-token"); ok {
		t.Fatal("IDFromSecret accepted a non-token")
	}
	if bytes.Equal(Hash(secret), Hash(secret2)) || len(Hash(secret)) != 32 {
		t.Fatal("hashes collide or have the wrong size")
	}
}

func TestPermissions(t *testing.T) {
	tok := func(r droverv1.Role) Principal { return Principal{Token: &droverv1.Token{Role: r}} }
	all := []Permission{Read, Download, Write, Agent, Admin, Peer}
	want := map[string][]Permission{
		"admin":    {Read, Download, Write, Agent, Admin},
		"operator": {Read, Download, Write},
		"viewer":   {Read, Download},
		"agent":    {Download, Agent},
		"peer":     {Read, Download, Peer},
		"none":     {},
	}
	for name, p := range map[string]Principal{
		"admin": tok(droverv1.Role_ROLE_ADMIN), "operator": tok(droverv1.Role_ROLE_OPERATOR),
		"viewer": tok(droverv1.Role_ROLE_VIEWER), "agent": tok(droverv1.Role_ROLE_AGENT),
		"peer": {IsPeer: true}, "none": tok(droverv1.Role_ROLE_UNSPECIFIED),
	} {
		for _, perm := range all {
			allowed := false
			for _, w := range want[name] {
				allowed = allowed || w == perm
			}
			if got := p.Allowed(perm); got != allowed {
				t.Errorf("%s may %s: %v, want %v", name, perm, got, allowed)
			}
		}
	}
}

func TestRoles(t *testing.T) {
	for _, name := range []string{"admin", "operator", "viewer", "agent"} {
		r, err := ParseRole(name)
		if err != nil || RoleName(r) != name {
			t.Errorf("ParseRole(%q) = %v, %v", name, r, err)
		}
	}
	for _, bad := range []string{"", "root", "unspecified"} {
		if _, err := ParseRole(bad); err == nil {
			t.Errorf("ParseRole(%q) succeeded", bad)
		}
	}
	if a := (Principal{IsPeer: true}).Actor(); a.GetTokenId() != "system" {
		t.Errorf("a peer acts as %v", a)
	}
}
