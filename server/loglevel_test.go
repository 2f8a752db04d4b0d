package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRefusalLogLevel: a refusal a client brings on itself is logged at
// debug, as the README's --log-level says (a bad path, method or header),
// also the 403 of a SPDY upgrade that offers no supported protocol; only
// a 403 that refuses a user (authorization) and a 502 are info lines.
func TestRefusalLogLevel(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		reason string
		want   slog.Level
	}{
		{"bad protocol header", http.StatusForbidden, "protocol", slog.LevelDebug},
		{"user not allowed", http.StatusForbidden, "auth_forbidden", slog.LevelInfo},
		{"user outside the allow-lists", http.StatusForbidden, "auth_not_allowed", slog.LevelInfo},
		{"dial refused", http.StatusBadGateway, "dial", slog.LevelInfo},
		{"sessions limit", http.StatusServiceUnavailable, "limit_sessions", slog.LevelDebug},
		{"resolve", http.StatusInternalServerError, "resolve", slog.LevelWarn},
	} {
		e := &requestError{status: tt.status, reason: tt.reason}
		if got := e.level(); got != tt.want {
			t.Errorf("%s (%d, %s): level %v, want %v", tt.name, tt.status, tt.reason, got, tt.want)
		}
	}

	// The whole request: no supported X-Stream-Protocol-Version.
	var logs bytes.Buffer
	s := New(Config{Resolver: fuzzResolver{}, Dialer: refusingDialer{},
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	r := httptest.NewRequest(http.MethodPost, "/portForward/ns/pod", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "SPDY/3.1")
	r.Header.Set("X-Stream-Protocol-Version", "portforward.example.com")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Fatalf("status %d, want 403", w.Code)
	}
	if strings.Contains(logs.String(), "request refused") {
		t.Errorf("a request offering no supported protocol is logged at info:\n%s", logs.String())
	}
}
