package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/portforwardd/portforwardd/nsenter"
)

// onceTokens grants each of its tokens once, as the CRI proxy's tokens do.
type onceTokens struct {
	mu sync.Mutex
	m  map[string]bool
}

func (o *onceTokens) Redeem(token string) (TokenGrant, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.m[token] {
		return TokenGrant{}, false
	}
	delete(o.m, token)
	return TokenGrant{SandboxID: "sb", Target: nsenter.Target{Path: "/proc/self/ns/net"}}, true
}

// TestRefusedTokenRequestKeepsTokenOutOfLog: a request to a live token
// with a method other than GET or POST is refused before the token is
// redeemed, as the kubelet's routes refuse it, so the token stays valid:
// the refusal's log line must not carry it. The 405 offers only the
// token route's methods.
func TestRefusedTokenRequestKeepsTokenOutOfLog(t *testing.T) {
	var logs bytes.Buffer
	tok := &onceTokens{m: map[string]bool{"AbCdEfGh": true}}
	s := New(Config{Resolver: fuzzResolver{}, Dialer: refusingDialer{}, Tokens: tok,
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	for _, method := range []string{http.MethodPut, http.MethodOptions, http.MethodDelete} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(method, "/portforward/AbCdEfGh", nil))
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, POST" {
			t.Errorf("%s: %d, Allow %q; want 405, \"GET, POST\"", method, w.Code, w.Header().Get("Allow"))
		}
	}
	if strings.Contains(logs.String(), "AbCdEfGh") {
		t.Errorf("the token, still valid, is in the log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "path=/portforward/<token>") {
		t.Errorf("the refusal is not logged with the redacted path:\n%s", logs.String())
	}
}
