package cri

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portforwardd/portforwardd/nsenter"
)

// Token cache limits, as in the kubelet's streaming library
// (k8s.io/cri-streaming request_cache.go).
const (
	TokenTTL       = time.Minute
	MaxTokens      = 1000
	tokenRandBytes = 6 // 8 characters of base64url
)

// Grant is what a token stands for: one port-forward into a sandbox.
type Grant struct {
	SandboxID string
	Target    nsenter.Target
	Ports     []uint16 // from the PortForwardRequest; used by WebSocket v4 clients
}

// Tokens is a cache of single-use tokens. The zero value is not usable;
// call NewTokens.
type Tokens struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[string]tokenEntry
}

type tokenEntry struct {
	grant   Grant
	expires time.Time
}

// NewTokens returns an empty cache whose tokens live ttl (TokenTTL if
// zero), with at most MaxTokens outstanding.
func NewTokens(ttl time.Duration) *Tokens {
	if ttl <= 0 {
		ttl = TokenTTL
	}
	return &Tokens{ttl: ttl, max: MaxTokens, now: time.Now, entries: map[string]tokenEntry{}}
}

// Insert stores g and returns its token. With MaxTokens unexpired tokens
// outstanding it fails with codes.ResourceExhausted, which the kubelet
// answers with 429 and Retry-After.
func (t *Tokens) Insert(g Grant) (string, error) {
	var b [tokenRandBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", status.Errorf(codes.Internal, "generate port-forward token: %v", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b[:])
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.entries) >= t.max {
		for k, e := range t.entries {
			if !now.Before(e.expires) {
				delete(t.entries, k)
			}
		}
		if len(t.entries) >= t.max {
			return "", status.Errorf(codes.ResourceExhausted, "maximum number of in-flight port-forward requests exceeded (%d)", t.max)
		}
	}
	if _, dup := t.entries[token]; dup {
		return "", status.Error(codes.Internal, "port-forward token collision, retry")
	}
	t.entries[token] = tokenEntry{grant: g, expires: now.Add(t.ttl)}
	return token, nil
}

// Redeem returns the grant of token and forgets it. An unknown, used or
// expired token gives false.
func (t *Tokens) Redeem(token string) (Grant, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[token]
	if !ok {
		return Grant{}, false
	}
	delete(t.entries, token)
	if !t.now().Before(e.expires) {
		return Grant{}, false
	}
	return e.grant, true
}

// Outstanding counts tokens issued and neither redeemed nor expired; the
// expired ones are forgotten here.
func (t *Tokens) Outstanding() int {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, e := range t.entries {
		if !now.Before(e.expires) {
			delete(t.entries, k)
		}
	}
	return len(t.entries)
}
