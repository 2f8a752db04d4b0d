package cri

import (
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestTokensSingleUseAndFormat(t *testing.T) {
	tok := NewTokens(0)
	seen := map[string]bool{}
	for range 100 {
		token, err := tok.Insert(Grant{SandboxID: "sb"})
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{8}$`).MatchString(token) {
			t.Fatalf("token %q: want 8 url-safe characters", token)
		}
		if seen[token] {
			t.Fatalf("token %q issued twice", token)
		}
		seen[token] = true
	}
	for token := range seen {
		if g, ok := tok.Redeem(token); !ok || g.SandboxID != "sb" {
			t.Fatalf("first redeem of %q: %v %v", token, g, ok)
		}
		if _, ok := tok.Redeem(token); ok {
			t.Fatalf("second redeem of %q succeeded", token)
		}
	}
	if _, ok := tok.Redeem("unknown1"); ok {
		t.Error("an unknown token redeemed")
	}
}

func TestTokensExpireAndAreBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	tok := NewTokens(0)
	tok.now = func() time.Time { return now }
	old, err := tok.Insert(Grant{SandboxID: "old"})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(TokenTTL)
	if _, ok := tok.Redeem(old); ok {
		t.Error("a token redeemed at its TTL")
	}

	// Fill the cache: the next insert is ResourceExhausted, until the
	// outstanding ones expire and are swept.
	for range MaxTokens {
		if _, err := tok.Insert(Grant{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tok.Insert(Grant{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("insert %d: %v, want ResourceExhausted", MaxTokens+1, err)
	}
	now = now.Add(TokenTTL)
	if _, err := tok.Insert(Grant{}); err != nil {
		t.Fatalf("insert after the others expired: %v", err)
	}
	if n := tok.Outstanding(); n != 1 {
		t.Errorf("outstanding after the sweep: %d, want 1", n)
	}
}
